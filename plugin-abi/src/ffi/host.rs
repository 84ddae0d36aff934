//! The host's safe view of a plugin: load a library, read its metadata, create
//! instances and call their interfaces with plain Rust types.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};

use crate::ffi::{self, FfiEntry, PluginModuleRef};
use crate::{
    Appended, CasResult, ConfigKey, DeadLetterPage, ErrorCode, GroupEvent, Health, Interface, KeyTtl,
    ListEnd, Message, Metadata, NewRecord, ObjectInfo, PartitionOffsets, PluginError, PluginResult,
    QueueMessage, ScanPage, TransactionId, Versioned,
};

/// Why a library could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "cannot open {path}: a library this plugin links is missing or too old: {symbol} (see `ldd {path}`)"
    )]
    MissingDependency { symbol: String, path: PathBuf },
    #[error("{path} is not a Prism plugin (it exports no plugin root module)")]
    NotAPlugin { path: PathBuf },
    #[error("{path} was built against an incompatible plugin ABI: {summary}")]
    IncompatibleAbi {
        path: PathBuf,
        summary: String,
        /// abi_stable's full layout report, for debug logs.
        detail: String,
    },
}

/// A loaded plugin library. Libraries are never unloaded (abi_stable's rule), so this
/// is cheap to keep and the code stays mapped for as long as any instance runs.
#[derive(Clone)]
pub struct Plugin {
    module: PluginModuleRef,
    metadata: Metadata,
    path: PathBuf,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("metadata", &self.metadata).finish()
    }
}

impl Plugin {
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        let path = path.as_ref().to_path_buf();
        let (module, abi_version) = ffi::load::load_module(&path)?;
        let metadata = metadata_from_ffi(module.metadata(), abi_version);
        Ok(Plugin { module, metadata, path })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the plugin to parse a slot's `config` (TOML text) without connecting anywhere.
    pub fn check_config(&self, config_toml: &str) -> PluginResult<()> {
        (self.module.check_config())(RStr::from_str(config_toml)).into_result()
    }

    /// Creates an instance and checks that it provides exactly the declared interfaces.
    pub async fn create(&self, config_toml: &str) -> PluginResult<Instance> {
        self.create_in(config_toml, "").await
    }

    /// Like [`Plugin::create`], for `namespace`: the instance's `tracing` events reach
    /// this process's log with `plugin` and `namespace` fields, at its current level
    /// (plugins built against ABI 1.0 cannot forward theirs).
    pub async fn create_in(&self, config_toml: &str, namespace: &str) -> PluginResult<Instance> {
        let config = RString::from(config_toml);
        let created = match self.module.create_in() {
            Some(create_in) => {
                let context = ffi::FfiCreateContext {
                    namespace: RStr::from_str(namespace),
                    log: ffi::log::host_sink(),
                };
                create_in(config, context)
            }
            None => (self.module.create())(config),
        };
        let object = created.await.into_result()?;
        let interfaces = Interfaces::of(&object);
        let instance = Instance { object, interfaces, metadata: self.metadata.clone(), observer: None };
        for &interface in Interface::ALL {
            let declared = self.metadata.implements(interface);
            if declared != instance.provides(interface) {
                return Err(PluginError::internal(format!(
                    "plugin '{}' {} interface {interface} in its metadata but its instance {} it",
                    self.metadata.name,
                    if declared { "declares" } else { "does not declare" },
                    if declared { "does not provide" } else { "provides" },
                )));
            }
        }
        Ok(instance)
    }
}

fn metadata_from_ffi(table: ffi::FfiMetadataRef, abi_version: String) -> Metadata {
    let mut interfaces = Vec::new();
    let mut unknown_interfaces = Vec::new();
    for name in table.interfaces().iter() {
        match Interface::from_name(name.as_str()) {
            Some(interface) => interfaces.push(interface),
            None => unknown_interfaces.push(name.as_str().to_owned()),
        }
    }
    Metadata {
        name: table.name().as_str().to_owned(),
        version: table.version().as_str().to_owned(),
        description: table.description().as_str().to_owned(),
        connection_format: table.connection_format().as_str().to_owned(),
        abi_version,
        interfaces,
        unknown_interfaces,
        config_keys: table.config_keys().map(|keys| {
            keys.iter()
                .map(|key| ConfigKey {
                    name: key.name.as_str().to_owned(),
                    type_name: key.type_name.as_str().to_owned(),
                    default: Some(key.default.as_str().to_owned()).filter(|text| !text.is_empty()),
                    required: key.required,
                    doc: key.doc.as_str().to_owned(),
                })
                .collect()
        }),
        exclusive: table.exclusive().unwrap_or(false),
    }
}

/// The interface objects an instance handed over at creation. An accessor the plugin's
/// (older) vtable lacks answers `RNone` by default, so such interfaces read as absent.
macro_rules! interfaces {
    ($($interface:ident $slot:ident $object:ident, $to:ident, $handle:ident;)*) => {
        struct Interfaces {
            $($slot: Option<ffi::$object>,)*
        }

        impl Interfaces {
            fn of(instance: &ffi::InstanceBox) -> Interfaces {
                Interfaces { $($slot: instance.$slot().into_option(),)* }
            }

            fn provides(&self, interface: Interface) -> bool {
                match interface {
                    $(Interface::$interface => self.$slot.is_some(),)*
                }
            }
        }

        impl Instance {
            $(
                /// The interface's handle, when the plugin provides it.
                pub fn $slot(&self) -> Option<$handle<'_>> {
                    let calls = Calls { observer: self.observer.as_deref(), interface: Interface::$interface };
                    self.interfaces.$slot.as_ref().map(|object| $handle(object, calls))
                }
            )*
        }

        $(
            impl InterfaceHandle for $handle<'_> {
                const INTERFACE: Interface = Interface::$interface;
            }
        )*
    };
}

/// A handle knows the interface it calls, so callers never spell its name.
pub trait InterfaceHandle {
    const INTERFACE: Interface;
}

crate::for_each_interface!(interfaces);

/// A created plugin instance. Everything it hands out keeps the plugin's runtime alive.
pub struct Instance {
    object: ffi::InstanceBox,
    interfaces: Interfaces,
    metadata: Metadata,
    observer: Option<Arc<dyn CallObserver>>,
}

/// Told about every interface call an instance answers (not stream items): how long it
/// took and, when it failed, the error's code. The host's metrics implement it.
pub trait CallObserver: Send + Sync {
    fn observed(&self, interface: Interface, elapsed: Duration, error: Option<ErrorCode>);
}

/// What a handle needs to report its calls.
#[derive(Clone, Copy)]
struct Calls<'a> {
    observer: Option<&'a dyn CallObserver>,
    interface: Interface,
}

impl Calls<'_> {
    async fn time<T>(self, call: ffi::FfiResult<T>) -> PluginResult<T> {
        let Some(observer) = self.observer else { return call.await.into_result() };
        let started = Instant::now();
        let result = call.await.into_result();
        observer.observed(self.interface, started.elapsed(), result.as_ref().err().map(PluginError::code));
        result
    }
}

pub use crate::ffi::export::EveryInterface;

impl Instance {
    /// An instance served by `driver`, a driver built into the host itself rather than
    /// loaded from a library (process isolation's proxy, which forwards every call to the
    /// plugin's own process). It provides exactly `metadata`'s interfaces.
    pub fn from_driver<D: EveryInterface>(driver: D, metadata: Metadata) -> PluginResult<Instance> {
        let object = ffi::export::local_instance(driver, &metadata.name, &metadata.interfaces)?;
        let interfaces = Interfaces::of(&object);
        Ok(Instance { object, interfaces, metadata, observer: None })
    }

    /// Reports every interface call from now on to `observer`.
    pub fn observe_calls(&mut self, observer: Arc<dyn CallObserver>) {
        self.observer = Some(observer);
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn provides(&self, interface: Interface) -> bool {
        self.interfaces.provides(interface)
    }

    pub async fn health(&self) -> Health {
        self.object.health().await.into()
    }

    /// Lets the driver release its backend; call once, after in-flight calls finished.
    pub async fn shutdown(&self) {
        self.object.shutdown().await
    }
}

/// A key, queue, topic or stream name as the FFI takes it.
fn name(text: &str) -> RStr<'_> {
    RStr::from_str(text)
}

/// A duration that must still elapse (TTL, visibility, timeout) in ms, rounded up to 1.
fn nonzero_millis(ttl: Duration) -> u64 {
    // A sub-millisecond TTL still expires: round up rather than to "no expiry".
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn values(values: RVec<RVec<u8>>) -> Vec<Vec<u8>> {
    values.into_iter().map(RVec::into_vec).collect()
}

pub struct KeyValueBasicHandle<'a>(&'a ffi::KeyValueBasicBox, Calls<'a>);

impl KeyValueBasicHandle<'_> {
    pub async fn get(&self, k: &str) -> PluginResult<Option<Vec<u8>>> {
        Ok(self.1.time(self.0.get(name(k))).await?.into_option().map(RVec::into_vec))
    }
    pub async fn set(&self, k: &str, value: Vec<u8>) -> PluginResult<()> {
        self.1.time(self.0.set(name(k), value.into())).await
    }
    pub async fn delete(&self, k: &str) -> PluginResult<bool> {
        self.1.time(self.0.delete(name(k))).await
    }
    pub async fn exists(&self, k: &str) -> PluginResult<bool> {
        self.1.time(self.0.exists(name(k))).await
    }
}

pub struct KeyValueTtlHandle<'a>(&'a ffi::KeyValueTtlBox, Calls<'a>);

impl KeyValueTtlHandle<'_> {
    pub async fn set_with_ttl(&self, k: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()> {
        self.1.time(self.0.set_with_ttl(name(k), value.into(), nonzero_millis(ttl))).await
    }
    pub async fn expire(&self, k: &str, ttl: Duration) -> PluginResult<bool> {
        self.1.time(self.0.expire(name(k), nonzero_millis(ttl))).await
    }
    pub async fn get_ttl(&self, k: &str) -> PluginResult<KeyTtl> {
        Ok(self.1.time(self.0.get_ttl(name(k))).await?.into())
    }
    pub async fn persist(&self, k: &str) -> PluginResult<bool> {
        self.1.time(self.0.persist(name(k))).await
    }
}

pub struct KeyValueScanHandle<'a>(&'a ffi::KeyValueScanBox, Calls<'a>);

impl KeyValueScanHandle<'_> {
    pub async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        let cursor: ROption<RStr<'_>> = cursor.map(RStr::from_str).into();
        Ok(self.1.time(self.0.scan(name(prefix), cursor, limit)).await?.into())
    }
    pub async fn count(&self, prefix: &str) -> PluginResult<u64> {
        self.1.time(self.0.count(name(prefix))).await
    }
    /// Every entry under `prefix`, pumped by the plugin with bounded read-ahead.
    pub fn scan_stream(&self, prefix: &str) -> EntryStream {
        EntryStream { inner: self.0.scan_stream(name(prefix)) }
    }
}

/// A stream of key/value entries from a plugin. Dropping it cancels the plugin's pump.
pub struct EntryStream {
    inner: ffi::EntryStreamBox,
}

impl EntryStream {
    /// The next entry, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<PluginResult<(String, Vec<u8>)>> {
        match self.inner.next().await {
            RResult::ROk(ROption::RSome(item)) => Some(Ok(item.into())),
            RResult::ROk(ROption::RNone) => None,
            RResult::RErr(error) => Some(Err(error)),
        }
    }
}

pub struct KeyValueBatchHandle<'a>(&'a ffi::KeyValueBatchBox, Calls<'a>);

impl KeyValueBatchHandle<'_> {
    pub async fn batch_get(&self, keys: &[String]) -> PluginResult<Vec<Option<Vec<u8>>>> {
        let keys: RVec<RString> = keys.iter().map(|k| RString::from(k.as_str())).collect();
        let found = self.1.time(self.0.batch_get(keys)).await?;
        Ok(found.into_iter().map(|v| v.into_option().map(RVec::into_vec)).collect())
    }
    pub async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        let entries: RVec<FfiEntry> = entries.into_iter().map(FfiEntry::from).collect();
        let results = self.1.time(self.0.batch_set(entries)).await?;
        Ok(results.into_iter().map(RResult::into_result).collect())
    }
    pub async fn batch_delete(&self, keys: &[String]) -> PluginResult<Vec<bool>> {
        let keys: RVec<RString> = keys.iter().map(|k| RString::from(k.as_str())).collect();
        Ok(self.1.time(self.0.batch_delete(keys)).await?.into_vec())
    }
}

pub struct KeyValueCasHandle<'a>(&'a ffi::KeyValueCasBox, Calls<'a>);

impl KeyValueCasHandle<'_> {
    pub async fn get_versioned(&self, k: &str) -> PluginResult<Option<Versioned>> {
        let found = self.1.time(self.0.get_versioned(name(k))).await?;
        Ok(found.into_option().map(Versioned::from))
    }
    pub async fn compare_and_swap(
        &self,
        k: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult> {
        let ttl = ttl.map(nonzero_millis).unwrap_or(0);
        Ok(self.1.time(self.0.compare_and_swap(name(k), expected_version, value.into(), ttl)).await?.into())
    }
    pub async fn delete_if_version(&self, k: &str, expected_version: u64) -> PluginResult<CasResult> {
        Ok(self.1.time(self.0.delete_if_version(name(k), expected_version)).await?.into())
    }
}

pub struct ListBasicHandle<'a>(&'a ffi::ListBasicBox, Calls<'a>);

impl ListBasicHandle<'_> {
    pub async fn push(&self, k: &str, at: ListEnd, items: Vec<Vec<u8>>) -> PluginResult<u64> {
        let items: RVec<RVec<u8>> = items.into_iter().map(RVec::from).collect();
        self.1.time(self.0.push(name(k), at.into(), items)).await
    }
    pub async fn pop(&self, k: &str, at: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>> {
        Ok(values(self.1.time(self.0.pop(name(k), at.into(), count)).await?))
    }
    pub async fn length(&self, k: &str) -> PluginResult<u64> {
        self.1.time(self.0.length(name(k))).await
    }
}

pub struct ListRangeHandle<'a>(&'a ffi::ListRangeBox, Calls<'a>);

impl ListRangeHandle<'_> {
    pub async fn range(&self, k: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>> {
        Ok(values(self.1.time(self.0.range(name(k), start, stop)).await?))
    }
    pub async fn trim(&self, k: &str, start: i64, stop: i64) -> PluginResult<()> {
        self.1.time(self.0.trim(name(k), start, stop)).await
    }
}

/// A duration in ms, 0 allowed (a nack's delay).
fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub struct KeyValueTransactionalHandle<'a>(&'a ffi::KeyValueTransactionalBox, Calls<'a>);

impl KeyValueTransactionalHandle<'_> {
    pub async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        Ok(TransactionId(self.1.time(self.0.begin(nonzero_millis(timeout))).await?))
    }
    pub async fn get(&self, tx: TransactionId, k: &str) -> PluginResult<Option<Vec<u8>>> {
        Ok(self.1.time(self.0.tx_get(tx.0, name(k))).await?.into_option().map(RVec::into_vec))
    }
    pub async fn set(&self, tx: TransactionId, k: &str, value: Vec<u8>) -> PluginResult<()> {
        self.1.time(self.0.tx_set(tx.0, name(k), value.into())).await
    }
    pub async fn delete(&self, tx: TransactionId, k: &str) -> PluginResult<bool> {
        self.1.time(self.0.tx_delete(tx.0, name(k))).await
    }
    pub async fn commit(&self, tx: TransactionId) -> PluginResult<()> {
        self.1.time(self.0.commit(tx.0)).await
    }
    pub async fn rollback(&self, tx: TransactionId) -> PluginResult<()> {
        self.1.time(self.0.rollback(tx.0)).await
    }
}

fn queue_messages(messages: RVec<ffi::FfiQueueMessage>) -> Vec<QueueMessage> {
    messages.into_iter().map(QueueMessage::from).collect()
}

pub struct QueueBasicHandle<'a>(&'a ffi::QueueBasicBox, Calls<'a>);

impl QueueBasicHandle<'_> {
    pub async fn enqueue(&self, queue: &str, payload: Vec<u8>) -> PluginResult<String> {
        Ok(self.1.time(self.0.enqueue(name(queue), payload.into())).await?.into_string())
    }
    pub async fn dequeue(&self, queue: &str, max: u32) -> PluginResult<Vec<QueueMessage>> {
        Ok(queue_messages(self.1.time(self.0.dequeue(name(queue), max)).await?))
    }
    pub async fn ack(&self, queue: &str, receipt: &str) -> PluginResult<bool> {
        self.1.time(self.0.ack(name(queue), name(receipt))).await
    }
    pub async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> PluginResult<bool> {
        self.1.time(self.0.nack(name(queue), name(receipt), millis_of(delay))).await
    }
}

pub struct QueueVisibilityHandle<'a>(&'a ffi::QueueVisibilityBox, Calls<'a>);

impl QueueVisibilityHandle<'_> {
    pub async fn dequeue_with_visibility(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> PluginResult<Vec<QueueMessage>> {
        let messages =
            self.1.time(self.0.dequeue_with_visibility(name(queue), max, nonzero_millis(visibility))).await?;
        Ok(queue_messages(messages))
    }
    pub async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> PluginResult<bool> {
        self.1.time(self.0.extend_visibility(name(queue), name(receipt), nonzero_millis(visibility))).await
    }
}

pub struct QueueDeadLetterHandle<'a>(&'a ffi::QueueDeadLetterBox, Calls<'a>);

impl QueueDeadLetterHandle<'_> {
    pub async fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> PluginResult<DeadLetterPage> {
        let cursor: ROption<RStr<'_>> = cursor.map(RStr::from_str).into();
        Ok(self.1.time(self.0.dead_letters(name(queue), cursor, limit)).await?.into())
    }
    pub async fn replay_dead_letters(&self, queue: &str, ids: &[String]) -> PluginResult<u64> {
        let ids: RVec<RString> = ids.iter().map(|id| RString::from(id.as_str())).collect();
        self.1.time(self.0.replay_dead_letters(name(queue), ids)).await
    }
}

pub struct QueueDelayedHandle<'a>(&'a ffi::QueueDelayedBox, Calls<'a>);

impl QueueDelayedHandle<'_> {
    pub async fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> PluginResult<String> {
        Ok(self
            .1
            .time(self.0.enqueue_at(name(queue), payload.into(), deliver_at_unix_ms))
            .await?
            .into_string())
    }
}

/// A subscription's messages from a plugin. Dropping it stops the plugin's pump and
/// unsubscribes in the backend. Messages cross the boundary in batches.
pub struct MessageStream {
    inner: ffi::MessageStreamBox,
    buffered: std::collections::VecDeque<Message>,
}

impl MessageStream {
    fn new(inner: ffi::MessageStreamBox) -> Self {
        MessageStream { inner, buffered: std::collections::VecDeque::new() }
    }

    /// The messages waiting (at least one, at most `max`), or `None` once the
    /// subscription has ended.
    pub async fn next_batch(&mut self, max: usize) -> Option<PluginResult<Vec<Message>>> {
        if !self.buffered.is_empty() {
            let take = max.max(1).min(self.buffered.len());
            return Some(Ok(self.buffered.drain(..take).collect()));
        }
        match self.inner.next_batch(u32::try_from(max).unwrap_or(u32::MAX)).await {
            RResult::ROk(batch) if batch.is_empty() => None,
            RResult::ROk(batch) => Some(Ok(batch.into_iter().map(Message::from).collect())),
            RResult::RErr(error) => Some(Err(error)),
        }
    }

    /// The next message, or `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<PluginResult<Message>> {
        if let Some(message) = self.buffered.pop_front() {
            return Some(Ok(message));
        }
        match self.next_batch(64).await? {
            Ok(batch) => {
                self.buffered.extend(batch);
                self.buffered.pop_front().map(Ok)
            }
            Err(error) => Some(Err(error)),
        }
    }
}

pub struct PubSubBasicHandle<'a>(&'a ffi::PubSubBasicBox, Calls<'a>);

impl PubSubBasicHandle<'_> {
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String> {
        let metadata = ffi::convert::headers_to_ffi(metadata);
        Ok(self.1.time(self.0.publish(name(topic), payload.into(), metadata)).await?.into_string())
    }
    pub async fn subscribe(&self, topic: &str) -> PluginResult<MessageStream> {
        Ok(MessageStream::new(self.1.time(self.0.subscribe(name(topic))).await?))
    }
}

pub struct PubSubWildcardsHandle<'a>(&'a ffi::PubSubWildcardsBox, Calls<'a>);

impl PubSubWildcardsHandle<'_> {
    pub async fn subscribe_pattern(&self, pattern: &str) -> PluginResult<MessageStream> {
        Ok(MessageStream::new(self.1.time(self.0.subscribe_pattern(name(pattern))).await?))
    }
}

pub struct PubSubPersistentHandle<'a>(&'a ffi::PubSubPersistentBox, Calls<'a>);

impl PubSubPersistentHandle<'_> {
    pub async fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> PluginResult<MessageStream> {
        let inner = self
            .1
            .time(self.0.subscribe_durable(self::name(name), self::name(topic), nonzero_millis(ack_wait)))
            .await?;
        Ok(MessageStream::new(inner))
    }
    pub async fn ack(&self, name: &str, ack_id: &str) -> PluginResult<()> {
        self.1.time(self.0.ack(self::name(name), self::name(ack_id))).await
    }
}

/// A stream read's records or a consumer group's events, from a plugin. Dropping it
/// stops the plugin's pump (and, for a group, leaves it). Items cross in batches.
pub struct EventStream {
    inner: ffi::EventStreamBox,
}

impl EventStream {
    /// The events waiting (at least one, at most `max`), or `None` once the feed has ended.
    pub async fn next_batch(&mut self, max: usize) -> Option<PluginResult<Vec<GroupEvent>>> {
        match self.inner.next_batch(u32::try_from(max).unwrap_or(u32::MAX)).await {
            RResult::ROk(batch) if batch.is_empty() => None,
            RResult::ROk(batch) => Some(Ok(batch.into_iter().map(GroupEvent::from).collect())),
            RResult::RErr(error) => Some(Err(error)),
        }
    }
}

pub struct StreamBasicHandle<'a>(&'a ffi::StreamBasicBox, Calls<'a>);

impl StreamBasicHandle<'_> {
    pub async fn append(&self, stream: &str, record: NewRecord) -> PluginResult<Appended> {
        Ok(self.1.time(self.0.append(name(stream), record.into())).await?.into())
    }
    /// Records only (a read never carries assignments).
    pub async fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> PluginResult<EventStream> {
        let inner = self.1.time(self.0.read(name(stream), partition, from_offset, follow)).await?;
        Ok(EventStream { inner })
    }
    pub async fn offsets(&self, stream: &str) -> PluginResult<Vec<PartitionOffsets>> {
        let offsets = self.1.time(self.0.offsets(name(stream))).await?;
        Ok(offsets.into_iter().map(PartitionOffsets::from).collect())
    }
}

pub struct StreamPartitioningHandle<'a>(&'a ffi::StreamPartitioningBox, Calls<'a>);

impl StreamPartitioningHandle<'_> {
    pub async fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended> {
        Ok(self.1.time(self.0.append_to_partition(name(stream), partition, record.into())).await?.into())
    }
}

pub struct StreamReplayHandle<'a>(&'a ffi::StreamReplayBox, Calls<'a>);

impl StreamReplayHandle<'_> {
    pub async fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> PluginResult<u64> {
        self.1.time(self.0.offset_for_timestamp(name(stream), partition, timestamp_unix_ms)).await
    }
}

pub struct StreamConsumerGroupsHandle<'a>(&'a ffi::StreamConsumerGroupsBox, Calls<'a>);

impl StreamConsumerGroupsHandle<'_> {
    pub async fn join(&self, stream: &str, group: &str) -> PluginResult<EventStream> {
        let inner = self.1.time(self.0.join(name(stream), name(group))).await?;
        Ok(EventStream { inner })
    }
    pub async fn commit(&self, stream: &str, group: &str, ack_id: &str) -> PluginResult<()> {
        self.1.time(self.0.commit(name(stream), name(group), name(ack_id))).await
    }
    pub async fn committed(&self, stream: &str, group: &str) -> PluginResult<Vec<(u32, Option<u64>)>> {
        let positions = self.1.time(self.0.committed(name(stream), name(group))).await?;
        Ok(positions.into_iter().map(|c| (c.partition, c.offset.into_option())).collect())
    }
}

pub struct StateTransferHandle<'a>(&'a ffi::StateTransferBox, Calls<'a>);

impl StateTransferHandle<'_> {
    pub async fn export_state(&self) -> PluginResult<Vec<u8>> {
        Ok(self.1.time(self.0.export_state()).await?.into_vec())
    }
    pub async fn import_state(&self, state: Vec<u8>) -> PluginResult<()> {
        self.1.time(self.0.import_state(state.into())).await
    }
}

pub struct ObjectStoreBasicHandle<'a>(&'a ffi::ObjectStoreBasicBox, Calls<'a>);

impl ObjectStoreBasicHandle<'_> {
    /// Starts writing `key`; nothing is visible until [`ObjectWriter::finish`].
    pub async fn put(&self, key: &str) -> PluginResult<ObjectWriter> {
        Ok(ObjectWriter { inner: self.1.time(self.0.put(name(key))).await? })
    }
    /// The object's info and its chunks in order, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> PluginResult<Option<(ObjectInfo, ChunkStream)>> {
        let read = self.1.time(self.0.get(name(key))).await?.into_option();
        Ok(read.map(|read| (read.info.into(), ChunkStream { inner: read.chunks })))
    }
    pub async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>> {
        Ok(self.1.time(self.0.head(name(key))).await?.into_option().map(ObjectInfo::from))
    }
    pub async fn delete(&self, key: &str) -> PluginResult<bool> {
        self.1.time(self.0.delete(name(key))).await
    }
}

/// An object being written into a plugin, one chunk per call. Dropped before `finish`,
/// the plugin aborts the upload and nothing is left visible.
pub struct ObjectWriter {
    inner: ffi::ObjectUploadBox,
}

impl ObjectWriter {
    pub async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        self.inner.write(chunk.into()).await.into_result()
    }
    pub async fn finish(self) -> PluginResult<ObjectInfo> {
        Ok(self.inner.finish().await.into_result()?.into())
    }
}

/// An object's bytes from a plugin, in chunks, with a few chunks of read-ahead at most.
/// Dropping it stops the read.
pub struct ChunkStream {
    inner: ffi::ChunkStreamBox,
}

impl ChunkStream {
    /// The next chunk, or `None` once the object has been read to its end.
    pub async fn next(&mut self) -> Option<PluginResult<Vec<u8>>> {
        match self.inner.next().await {
            RResult::ROk(ROption::RSome(chunk)) => Some(Ok(chunk.into_vec())),
            RResult::ROk(ROption::RNone) => None,
            RResult::RErr(error) => Some(Err(error)),
        }
    }
}
