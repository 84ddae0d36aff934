//! The driver that stands in for a plugin running in its own process: every interface
//! method is one call over the process's connection. The gateway wraps it in a plain
//! `Instance` (`Instance::from_driver`), so nothing above this module can tell the two
//! modes apart.

use std::sync::Arc;
use std::time::Duration;

use plugin_abi::{
    Appended, CasResult, DeadLetterPage, Driver, GroupEvent, GroupFeed, Health, KeyTtl, ListEnd, Message,
    NewRecord, ObjectInfo, ObjectRead, PartitionOffsets, PluginError, PluginResult, QueueMessage, RecordFeed,
    ScanPage, StreamRecord, Subscription, TransactionId, Versioned,
};
use serde::de::DeserializeOwned;

use super::connection::Connection;
use super::supervisor::Supervisor;
use super::wire::Call;

pub struct RemoteDriver {
    pub(super) process: Arc<Supervisor>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RemoteDriver {
    async fn call<T: DeserializeOwned>(&self, call: Call) -> PluginResult<T> {
        self.process.connection()?.call(&call).await
    }

    async fn feed<T: DeserializeOwned + Send + 'static>(
        &self,
        call: Call,
    ) -> PluginResult<plugin_abi::Feed<T>> {
        let (_, feed) = self.process.connection()?.open_feed::<(), T>(&call, |_| true).await?;
        feed.ok_or_else(|| PluginError::internal("the plugin process opened no feed"))
    }
}

impl Driver for RemoteDriver {
    type Config = ();

    async fn create(_: ()) -> PluginResult<Self> {
        Err(PluginError::internal("a plugin process is started by its supervisor, not created from a config"))
    }

    async fn health(&self) -> Health {
        match self.process.connection() {
            Ok(connection) => match connection.call::<Health>(&Call::Health).await {
                Ok(health) => health,
                Err(error) => Health::unhealthy(error.message()),
            },
            Err(error) => Health::unhealthy(error.message()),
        }
    }

    async fn shutdown(&self) {
        self.process.shutdown().await;
    }
}

impl plugin_abi::KeyValueBasic for RemoteDriver {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>> {
        self.call(Call::Get { key: key.into() }).await
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.call(Call::Set { key: key.into(), value }).await
    }
    async fn delete(&self, key: &str) -> PluginResult<bool> {
        self.call(Call::Delete { key: key.into() }).await
    }
    async fn exists(&self, key: &str) -> PluginResult<bool> {
        self.call(Call::Exists { key: key.into() }).await
    }
}

impl plugin_abi::KeyValueTtl for RemoteDriver {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()> {
        self.call(Call::SetWithTtl { key: key.into(), value, ttl_ms: millis(ttl) }).await
    }
    async fn expire(&self, key: &str, ttl: Duration) -> PluginResult<bool> {
        self.call(Call::Expire { key: key.into(), ttl_ms: millis(ttl) }).await
    }
    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl> {
        self.call(Call::GetTtl { key: key.into() }).await
    }
    async fn persist(&self, key: &str) -> PluginResult<bool> {
        self.call(Call::Persist { key: key.into() }).await
    }
}

impl plugin_abi::KeyValueScan for RemoteDriver {
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        self.call(Call::Scan { prefix: prefix.into(), cursor: cursor.map(str::to_owned), limit }).await
    }
    async fn count(&self, prefix: &str) -> PluginResult<u64> {
        self.call(Call::Count { prefix: prefix.into() }).await
    }
}

impl plugin_abi::KeyValueBatch for RemoteDriver {
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>> {
        self.call(Call::BatchGet { keys }).await
    }
    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        self.call(Call::BatchSet { entries }).await
    }
    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>> {
        self.call(Call::BatchDelete { keys }).await
    }
}

impl plugin_abi::KeyValueCas for RemoteDriver {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>> {
        self.call(Call::GetVersioned { key: key.into() }).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult> {
        let ttl_ms = ttl.map(millis);
        self.call(Call::CompareAndSwap { key: key.into(), expected_version, value, ttl_ms }).await
    }
    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult> {
        self.call(Call::DeleteIfVersion { key: key.into(), expected_version }).await
    }
}

impl plugin_abi::KeyValueTransactional for RemoteDriver {
    async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        self.call(Call::Begin { timeout_ms: millis(timeout) }).await
    }
    async fn tx_get(&self, tx: TransactionId, key: &str) -> PluginResult<Option<Vec<u8>>> {
        self.call(Call::TxGet { tx: tx.0, key: key.into() }).await
    }
    async fn tx_set(&self, tx: TransactionId, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.call(Call::TxSet { tx: tx.0, key: key.into(), value }).await
    }
    async fn tx_delete(&self, tx: TransactionId, key: &str) -> PluginResult<bool> {
        self.call(Call::TxDelete { tx: tx.0, key: key.into() }).await
    }
    async fn commit(&self, tx: TransactionId) -> PluginResult<()> {
        self.call(Call::Commit { tx: tx.0 }).await
    }
    async fn rollback(&self, tx: TransactionId) -> PluginResult<()> {
        self.call(Call::Rollback { tx: tx.0 }).await
    }
}

impl plugin_abi::ListBasic for RemoteDriver {
    async fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> PluginResult<u64> {
        self.call(Call::Push { key: key.into(), end, values }).await
    }
    async fn pop(&self, key: &str, end: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>> {
        self.call(Call::Pop { key: key.into(), end, count }).await
    }
    async fn length(&self, key: &str) -> PluginResult<u64> {
        self.call(Call::Length { key: key.into() }).await
    }
}

impl plugin_abi::ListRange for RemoteDriver {
    async fn range(&self, key: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>> {
        self.call(Call::Range { key: key.into(), start, stop }).await
    }
    async fn trim(&self, key: &str, start: i64, stop: i64) -> PluginResult<()> {
        self.call(Call::Trim { key: key.into(), start, stop }).await
    }
}

impl plugin_abi::QueueBasic for RemoteDriver {
    async fn enqueue(&self, queue: &str, payload: Vec<u8>) -> PluginResult<String> {
        self.call(Call::Enqueue { queue: queue.into(), payload }).await
    }
    async fn dequeue(&self, queue: &str, max: u32) -> PluginResult<Vec<QueueMessage>> {
        self.call(Call::Dequeue { queue: queue.into(), max }).await
    }
    async fn ack(&self, queue: &str, receipt: &str) -> PluginResult<bool> {
        self.call(Call::Ack { queue: queue.into(), receipt: receipt.into() }).await
    }
    async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> PluginResult<bool> {
        self.call(Call::Nack { queue: queue.into(), receipt: receipt.into(), delay_ms: millis(delay) }).await
    }
}

impl plugin_abi::QueueVisibility for RemoteDriver {
    async fn dequeue_with_visibility(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> PluginResult<Vec<QueueMessage>> {
        let visibility_ms = millis(visibility);
        self.call(Call::DequeueWithVisibility { queue: queue.into(), max, visibility_ms }).await
    }
    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> PluginResult<bool> {
        let visibility_ms = millis(visibility);
        self.call(Call::ExtendVisibility { queue: queue.into(), receipt: receipt.into(), visibility_ms })
            .await
    }
}

impl plugin_abi::QueueDeadLetter for RemoteDriver {
    async fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> PluginResult<DeadLetterPage> {
        self.call(Call::DeadLetters { queue: queue.into(), cursor: cursor.map(str::to_owned), limit }).await
    }
    async fn replay_dead_letters(&self, queue: &str, ids: Vec<String>) -> PluginResult<u64> {
        self.call(Call::ReplayDeadLetters { queue: queue.into(), ids }).await
    }
}

impl plugin_abi::QueueDelayed for RemoteDriver {
    async fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> PluginResult<String> {
        self.call(Call::EnqueueAt { queue: queue.into(), payload, deliver_at_unix_ms }).await
    }
}

impl plugin_abi::PubSubBasic for RemoteDriver {
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String> {
        self.call(Call::Publish { topic: topic.into(), payload, metadata }).await
    }
    async fn subscribe(&self, topic: &str) -> PluginResult<Subscription> {
        self.feed::<Message>(Call::Subscribe { topic: topic.into() }).await
    }
}

impl plugin_abi::PubSubWildcards for RemoteDriver {
    async fn subscribe_pattern(&self, pattern: &str) -> PluginResult<Subscription> {
        self.feed::<Message>(Call::SubscribePattern { pattern: pattern.into() }).await
    }
}

impl plugin_abi::PubSubPersistent for RemoteDriver {
    async fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> PluginResult<Subscription> {
        let call =
            Call::SubscribeDurable { name: name.into(), topic: topic.into(), ack_wait_ms: millis(ack_wait) };
        self.feed::<Message>(call).await
    }
    async fn ack(&self, name: &str, ack_id: &str) -> PluginResult<()> {
        self.call(Call::AckDurable { name: name.into(), ack_id: ack_id.into() }).await
    }
}

impl plugin_abi::StreamBasic for RemoteDriver {
    async fn append(&self, stream: &str, record: NewRecord) -> PluginResult<Appended> {
        self.call(Call::Append { stream: stream.into(), record }).await
    }
    async fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> PluginResult<RecordFeed> {
        self.feed::<StreamRecord>(Call::Read { stream: stream.into(), partition, from_offset, follow }).await
    }
    async fn offsets(&self, stream: &str) -> PluginResult<Vec<PartitionOffsets>> {
        self.call(Call::Offsets { stream: stream.into() }).await
    }
}

impl plugin_abi::StreamPartitioning for RemoteDriver {
    async fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended> {
        self.call(Call::AppendToPartition { stream: stream.into(), partition, record }).await
    }
}

impl plugin_abi::StreamReplay for RemoteDriver {
    async fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> PluginResult<u64> {
        self.call(Call::OffsetForTimestamp { stream: stream.into(), partition, timestamp_unix_ms }).await
    }
}

impl plugin_abi::StreamConsumerGroups for RemoteDriver {
    async fn join(&self, stream: &str, group: &str) -> PluginResult<GroupFeed> {
        self.feed::<GroupEvent>(Call::Join { stream: stream.into(), group: group.into() }).await
    }
    async fn commit(&self, stream: &str, group: &str, ack_id: &str) -> PluginResult<()> {
        self.call(Call::CommitGroup { stream: stream.into(), group: group.into(), ack_id: ack_id.into() })
            .await
    }
    async fn committed(&self, stream: &str, group: &str) -> PluginResult<Vec<(u32, Option<u64>)>> {
        self.call(Call::Committed { stream: stream.into(), group: group.into() }).await
    }
}

impl plugin_abi::StateTransfer for RemoteDriver {
    async fn export_state(&self) -> PluginResult<Vec<u8>> {
        self.call(Call::ExportState).await
    }
    async fn import_state(&self, state: Vec<u8>) -> PluginResult<()> {
        self.call(Call::ImportState { state }).await
    }
}

impl plugin_abi::ObjectStoreBasic for RemoteDriver {
    type Upload = RemoteUpload;

    async fn put(&self, key: &str) -> PluginResult<RemoteUpload> {
        let connection = self.process.connection()?;
        let (id, ()) = connection.call_with_id(&Call::ObjectPut { key: key.into() }).await?;
        Ok(RemoteUpload { connection, id, open: true })
    }
    async fn get(&self, key: &str) -> PluginResult<Option<ObjectRead>> {
        let connection = self.process.connection()?;
        let call = Call::ObjectGet { key: key.into() };
        let (info, chunks) =
            connection.open_feed::<Option<ObjectInfo>, Vec<u8>>(&call, Option::is_some).await?;
        Ok(info.zip(chunks).map(|(info, chunks)| ObjectRead { info, chunks }))
    }
    async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>> {
        self.call(Call::ObjectHead { key: key.into() }).await
    }
    async fn delete(&self, key: &str) -> PluginResult<bool> {
        self.call(Call::ObjectDelete { key: key.into() }).await
    }
}

/// An upload held open in the plugin's process, named by the id of the call that began
/// it. It belongs to that process: if it dies, the upload fails with it.
pub struct RemoteUpload {
    connection: Arc<Connection>,
    id: u64,
    open: bool,
}

impl plugin_abi::ObjectUpload for RemoteUpload {
    async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        self.connection.call(&Call::ObjectWrite { upload: self.id, chunk }).await
    }
    async fn finish(mut self) -> PluginResult<ObjectInfo> {
        self.open = false;
        self.connection.call(&Call::ObjectFinish { upload: self.id }).await
    }
    async fn abort(mut self) {
        self.open = false;
        let _ = self.connection.call::<()>(&Call::ObjectAbort { upload: self.id }).await;
    }
}

impl Drop for RemoteUpload {
    fn drop(&mut self) {
        if self.open {
            self.connection.notify(&Call::ObjectAbort { upload: self.id });
        }
    }
}
