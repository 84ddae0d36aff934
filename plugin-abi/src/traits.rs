//! The safe async traits a plugin implements: one for the driver itself, one per interface.
//!
//! Declaring an interface in `export_plugin!` requires the matching trait impl, so a
//! metadata table cannot list an interface the plugin does not implement.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{
    Appended, CasResult, ConfigKey, DeadLetterPage, GroupFeed, Health, KeyTtl, ListEnd, NewRecord,
    ObjectInfo, ObjectRead, PartitionOffsets, PluginResult, QueueMessage, RecordFeed, ScanPage, Subscription,
    TransactionId, Versioned,
};

/// The driver: built from the slot's `config` table, asked for health, shut down.
pub trait Driver: Sized + Send + Sync + 'static {
    /// The slot's `config` table, deserialized. Use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + Send + 'static;

    /// Worker threads of the instance's own tokio runtime. They run the plugin's spawned
    /// tasks (connection drivers, pumps, sweepers); the host's threads poll the calls.
    const RUNTIME_WORKERS: usize = 1;

    /// Checks a deserialized config beyond its types (URLs, ranges, names) without
    /// connecting anywhere. `prism validate` calls it; so does the host before `create`.
    fn check(config: &Self::Config) -> PluginResult<()> {
        let _ = config;
        Ok(())
    }

    fn create(config: Self::Config) -> impl Future<Output = PluginResult<Self>> + Send;

    /// The config keys `prism plugins` and `prism generate config` show (ABI 1.1).
    /// Derive them from the config type so they cannot drift:
    /// `plugin_abi::config_keys_of::<Self::Config>()` with `#[derive(JsonSchema)]` on it.
    fn config_keys() -> Vec<ConfigKey> {
        Vec::new()
    }

    fn health(&self) -> impl Future<Output = Health> + Send {
        async { Health::serving() }
    }

    /// Called once before the instance is dropped; in-flight calls have finished.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// `keyvalue_basic`: set/get/delete/exists. Set replaces the value and removes any TTL.
pub trait KeyValueBasic: Driver {
    fn get(&self, key: &str) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send;
    fn set(&self, key: &str, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send;
    /// Returns whether a key was deleted.
    fn delete(&self, key: &str) -> impl Future<Output = PluginResult<bool>> + Send;
    fn exists(&self, key: &str) -> impl Future<Output = PluginResult<bool>> + Send;
}

/// `keyvalue_ttl`: keys that expire. An expired key is never returned, counted or scanned.
pub trait KeyValueTtl: Driver {
    fn set_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send;
    /// Returns false when the key does not exist.
    fn expire(&self, key: &str, ttl: Duration) -> impl Future<Output = PluginResult<bool>> + Send;
    fn get_ttl(&self, key: &str) -> impl Future<Output = PluginResult<KeyTtl>> + Send;
    /// Returns true when a TTL was removed.
    fn persist(&self, key: &str) -> impl Future<Output = PluginResult<bool>> + Send;
}

/// `keyvalue_scan`: prefix scan with an opaque cursor, and count.
pub trait KeyValueScan: Driver {
    /// A key present for the whole scan is returned exactly once across pages.
    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = PluginResult<ScanPage>> + Send;
    fn count(&self, prefix: &str) -> impl Future<Output = PluginResult<u64>> + Send;
}

/// `keyvalue_batch`: per-item results, not atomic.
pub trait KeyValueBatch: Driver {
    /// One entry per requested key, in request order.
    fn batch_get(&self, keys: Vec<String>)
        -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send;
    fn batch_set(
        &self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = PluginResult<Vec<PluginResult<()>>>> + Send;
    /// Whether each key was deleted, in request order.
    fn batch_delete(&self, keys: Vec<String>) -> impl Future<Output = PluginResult<Vec<bool>>> + Send;
}

/// `keyvalue_cas`: per-key versions starting at 1 and growing on every write.
pub trait KeyValueCas: Driver {
    fn get_versioned(&self, key: &str) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send;
    /// `expected_version` 0 means "create only if absent". `ttl` None means no expiry.
    fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = PluginResult<CasResult>> + Send;
    fn delete_if_version(
        &self,
        key: &str,
        expected_version: u64,
    ) -> impl Future<Output = PluginResult<CasResult>> + Send;
}

/// `list_basic`: push and pop at either end, length.
pub trait ListBasic: Driver {
    /// Returns the list's length after the push.
    fn push(
        &self,
        key: &str,
        end: ListEnd,
        values: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<u64>> + Send;
    /// Pops up to `count` values; an absent list pops nothing.
    fn pop(
        &self,
        key: &str,
        end: ListEnd,
        count: u32,
    ) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send;
    fn length(&self, key: &str) -> impl Future<Output = PluginResult<u64>> + Send;
}

/// `list_range`: indexed range and trim, Redis-style inclusive indexes (negative from the end).
pub trait ListRange: Driver {
    fn range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send;
    fn trim(&self, key: &str, start: i64, stop: i64) -> impl Future<Output = PluginResult<()>> + Send;
}

/// `keyvalue_transactional`: operations inside a transaction apply in order, all or none.
/// A transaction not committed within its timeout is rolled back by the plugin.
pub trait KeyValueTransactional: Driver {
    fn begin(&self, timeout: Duration) -> impl Future<Output = PluginResult<TransactionId>> + Send;
    fn tx_get(
        &self,
        tx: TransactionId,
        key: &str,
    ) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send;
    fn tx_set(
        &self,
        tx: TransactionId,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send;
    /// Returns whether a key was deleted.
    fn tx_delete(&self, tx: TransactionId, key: &str) -> impl Future<Output = PluginResult<bool>> + Send;
    /// An unknown, finished or timed-out transaction is `NotFound`.
    fn commit(&self, tx: TransactionId) -> impl Future<Output = PluginResult<()>> + Send;
    fn rollback(&self, tx: TransactionId) -> impl Future<Output = PluginResult<()>> + Send;
}

/// `queue_basic`: enqueue, dequeue (invisible until acked or the plugin's default
/// visibility timeout lapses), ack, nack. Queues are named within a namespace.
pub trait QueueBasic: Driver {
    /// Returns the new message's id.
    fn enqueue(&self, queue: &str, payload: Vec<u8>) -> impl Future<Output = PluginResult<String>> + Send;
    /// Up to `max` visible messages, oldest first; empty when none is ready.
    fn dequeue(&self, queue: &str, max: u32) -> impl Future<Output = PluginResult<Vec<QueueMessage>>> + Send;
    /// Deletes the message; false when the receipt is stale (redelivered, acked or dead).
    fn ack(&self, queue: &str, receipt: &str) -> impl Future<Output = PluginResult<bool>> + Send;
    /// Makes the message visible again after `delay`; counts as a failed delivery.
    fn nack(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send;
}

/// `queue_visibility`: choose the visibility timeout per dequeue, and extend it.
pub trait QueueVisibility: Driver {
    fn dequeue_with_visibility(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> impl Future<Output = PluginResult<Vec<QueueMessage>>> + Send;
    /// Makes the message invisible for `visibility` from now; false when the receipt is stale.
    fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send;
}

/// `queue_dead_letter`: a message delivered `max_deliveries` times without an ack moves
/// to the queue's dead-letter list, which can be read and replayed.
pub trait QueueDeadLetter: Driver {
    fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = PluginResult<DeadLetterPage>> + Send;
    /// Moves dead letters back onto the queue (all of them when `ids` is empty), with
    /// their delivery counts reset; returns how many moved.
    fn replay_dead_letters(
        &self,
        queue: &str,
        ids: Vec<String>,
    ) -> impl Future<Output = PluginResult<u64>> + Send;
}

/// `queue_delayed`: messages that become visible at a given time.
pub trait QueueDelayed: Driver {
    fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> impl Future<Output = PluginResult<String>> + Send;
}

/// `pubsub_basic`: at-most-once fan-out to every current subscriber of a topic, keeping
/// each publisher's order on a topic. Topics are `.`-separated tokens.
pub trait PubSubBasic: Driver {
    /// Returns the message id.
    fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> impl Future<Output = PluginResult<String>> + Send;
    /// Messages published to exactly `topic` from now on, until the subscription is dropped.
    fn subscribe(&self, topic: &str) -> impl Future<Output = PluginResult<Subscription>> + Send;
}

/// `pubsub_wildcards`: subscribe to a pattern where `*` matches one token and a final
/// `>` one or more (see [`crate::topics::matches`]).
pub trait PubSubWildcards: Driver {
    fn subscribe_pattern(&self, pattern: &str) -> impl Future<Output = PluginResult<Subscription>> + Send;
}

/// `pubsub_persistent`: durable named subscriptions, at least once. Messages published
/// to the topic after the subscription was first created are kept for it while nobody
/// listens; each delivered message must be acked, or it is redelivered after `ack_wait`.
pub trait PubSubPersistent: Driver {
    /// Opens (creating on first use) the durable subscription `name` on `topic`, which
    /// may be a pattern. Messages carry `ack_id` and `delivery_count`.
    fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> impl Future<Output = PluginResult<Subscription>> + Send;
    fn ack(&self, name: &str, ack_id: &str) -> impl Future<Output = PluginResult<()>> + Send;
}

/// `stream_basic`: append-only logs, named within a namespace. A stream has one or more
/// partitions; each partition's offsets start at 0 and grow by one per record, and a
/// partition is read in offset order. Appending to a new stream creates it.
pub trait StreamBasic: Driver {
    /// Appends one record; a keyed record goes to its key's partition.
    fn append(&self, stream: &str, record: NewRecord) -> impl Future<Output = PluginResult<Appended>> + Send;
    /// The records of `partition` from `from_offset` on. With `follow` the feed waits for
    /// new records until dropped; without it, it ends at the partition's end as of the call.
    /// An unknown stream is `NotFound`; a partition it does not have is `InvalidArgument`.
    fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> impl Future<Output = PluginResult<RecordFeed>> + Send;
    /// Every partition's offsets, in partition order. An unknown stream is `NotFound`.
    fn offsets(&self, stream: &str) -> impl Future<Output = PluginResult<Vec<PartitionOffsets>>> + Send;
}

/// `stream_partitioning`: a stream's partitions are visible and addressable, and the
/// same key always maps to the same partition.
pub trait StreamPartitioning: Driver {
    fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> impl Future<Output = PluginResult<Appended>> + Send;
}

/// `stream_replay`: find where to replay from by time.
pub trait StreamReplay: Driver {
    /// The first offset in `partition` whose record's timestamp is at or after
    /// `timestamp_unix_ms`; the partition's end when there is none.
    fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> impl Future<Output = PluginResult<u64>> + Send;
}

/// `stream_consumer_groups`: the members of a group share a stream's partitions, each
/// partition owned by one member at a time. A new group starts at the earliest records.
/// Delivery is at least once: a record not committed when its partition changes owner
/// (or its owner leaves) is delivered again to the new owner.
pub trait StreamConsumerGroups: Driver {
    /// Joins `group`. The feed starts with an `Assigned` event, then records of the
    /// assigned partitions after the group's committed offsets; every rebalance sends a
    /// new `Assigned`. Dropping the feed leaves the group.
    fn join(&self, stream: &str, group: &str) -> impl Future<Output = PluginResult<GroupFeed>> + Send;
    /// Marks the record `ack_id` names, and every earlier record of its partition, as
    /// done for the group. A record whose partition has moved on to another member is
    /// `FailedPrecondition` (the new owner will receive it).
    fn commit(
        &self,
        stream: &str,
        group: &str,
        ack_id: &str,
    ) -> impl Future<Output = PluginResult<()>> + Send;
    /// The group's committed position per partition: the next offset it will consume
    /// (`None` where it has committed nothing).
    fn committed(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = PluginResult<Vec<(u32, Option<u64>)>>> + Send;
}

/// `state_transfer`: hand an instance's state to its successor when the host reloads the
/// plugin (a new build of the library) or recreates an unhealthy instance. The format is
/// the plugin's own; it must read what the previous build of the plugin wrote, or refuse
/// it with `InvalidArgument`.
pub trait StateTransfer: Driver {
    /// Everything the instance holds, as one snapshot.
    fn export_state(&self) -> impl Future<Output = PluginResult<Vec<u8>>> + Send;
    /// Replaces everything the instance holds with an exported snapshot.
    fn import_state(&self, state: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send;
}

/// `object_store_basic` (ABI 1.2): named objects of any size, written and read in chunks
/// so that no object is ever held whole in memory or in one buffer across the ABI.
pub trait ObjectStoreBasic: Driver {
    /// An object being written.
    type Upload: ObjectUpload;

    /// Starts writing `key`. Nothing is visible under `key` until the upload finishes;
    /// then the object replaces any older one at once, whole.
    fn put(&self, key: &str) -> impl Future<Output = PluginResult<Self::Upload>> + Send;
    /// The object's info and its bytes in order, or `None` when there is no such object.
    fn get(&self, key: &str) -> impl Future<Output = PluginResult<Option<ObjectRead>>> + Send;
    fn head(&self, key: &str) -> impl Future<Output = PluginResult<Option<ObjectInfo>>> + Send;
    /// Returns whether an object was deleted.
    fn delete(&self, key: &str) -> impl Future<Output = PluginResult<bool>> + Send;
}

/// One object being written by [`ObjectStoreBasic::put`]: chunks in order, then
/// `finish`. The host calls `abort` when it gives up (client gone, a limit passed), and
/// an aborted upload must leave nothing visible behind.
pub trait ObjectUpload: Send + 'static {
    fn write(&mut self, chunk: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send;
    fn finish(self) -> impl Future<Output = PluginResult<ObjectInfo>> + Send;
    fn abort(self) -> impl Future<Output = ()> + Send;
}
