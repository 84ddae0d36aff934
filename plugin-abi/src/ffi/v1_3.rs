//! The 1.3 declarations of everything an interface declaration generates or that the
//! root module reaches: data types, interface objects, the instance's vtable, the
//! metadata table and the root module, written out by hand as 1.3 shipped them. The
//! layout test compares the live (generated) declarations with these both ways, so a
//! change of the generator that moves a field, a method or a type fails a test instead
//! of a user's plugin. Never edit: they are what 1.3 plugins export.

#![allow(dead_code)] // declared for their layouts, never built

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use async_ffi::FfiFuture;

// The streams and uploads are hand-written pumps that no declaration generates.
use super::{ChunkStreamBox, EntryStreamBox, EventStreamBox, MessageStreamBox, ObjectUploadBox};
use crate::PluginError;

/// A future that resolves to a plugin result.
pub type FfiResult<T> = FfiFuture<RResult<T, PluginError>>;

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiHealthStatus {
    Serving = 0,
    Degraded = 1,
    Unhealthy = 2,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiHealth {
    pub status: FfiHealthStatus,
    pub message: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiEntry {
    pub key: RString,
    pub value: RVec<u8>,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiScanPage {
    pub entries: RVec<FfiEntry>,
    pub next_cursor: ROption<RString>,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiTtlKind {
    Missing = 0,
    NoExpiry = 1,
    ExpiresIn = 2,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiTtl {
    pub kind: FfiTtlKind,
    pub millis: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiVersioned {
    pub value: RVec<u8>,
    pub version: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiCas {
    pub swapped: bool,
    pub version: u64,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiListEnd {
    Left = 0,
    Right = 1,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiQueueMessage {
    pub id: RString,
    pub payload: RVec<u8>,
    pub receipt: RString,
    pub delivery_count: u32,
    pub enqueued_at_unix_ms: i64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiDeadLetterPage {
    pub messages: RVec<FfiQueueMessage>,
    pub next_cursor: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiHeader {
    pub name: RString,
    pub value: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiMessage {
    pub id: RString,
    pub topic: RString,
    pub payload: RVec<u8>,
    pub metadata: RVec<FfiHeader>,
    pub published_at_unix_ms: i64,
    pub ack_id: RString,
    pub delivery_count: u32,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiNewRecord {
    pub key: ROption<RVec<u8>>,
    pub payload: RVec<u8>,
    pub headers: RVec<FfiHeader>,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiAppended {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_unix_ms: i64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiStreamRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: ROption<RVec<u8>>,
    pub payload: RVec<u8>,
    pub headers: RVec<FfiHeader>,
    pub timestamp_unix_ms: i64,
    pub ack_id: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiPartitionOffsets {
    pub partition: u32,
    pub earliest: u64,
    pub next: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiCommitted {
    pub partition: u32,
    pub offset: ROption<u64>,
}

/// One item of a stream read or a consumer-group feed.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone)]
pub enum FfiStreamEvent {
    Assigned(RVec<u32>),
    Record(FfiStreamRecord),
}

/// A plugin's metadata table: static data of the library, built once per load.
/// A prefix type, so later minor versions can add fields after `interfaces`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FfiMetadataRef)))]
#[sabi(missing_field(option))]
pub struct FfiMetadata {
    pub name: RStr<'static>,
    pub version: RStr<'static>,
    pub description: RStr<'static>,
    pub connection_format: RStr<'static>,
    /// snake_case interface names; a host skips (and reports) names it does not know.
    #[sabi(last_prefix_field)]
    pub interfaces: RSlice<'static, RStr<'static>>,
    /// 1.1: the slot config's keys (derived from the driver's `Config` type).
    pub config_keys: RSlice<'static, FfiConfigKey>,
    /// 1.1: two instances of this plugin must never run at once (a reload drains and
    /// shuts the old one down before creating the new one).
    pub exclusive: bool,
}

/// One key of a plugin's slot config, as `prism plugins` shows it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiConfigKey {
    pub name: RStr<'static>,
    /// e.g. `integer`, `string`, `boolean`, `string | null`.
    pub type_name: RStr<'static>,
    /// The default as TOML, or empty when the key has none.
    pub default: RStr<'static>,
    pub required: bool,
    pub doc: RStr<'static>,
}

/// 1.1: what the host tells an instance it creates.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiCreateContext<'a> {
    /// The namespace the instance serves, for the plugin's log lines.
    pub namespace: RStr<'a>,
    pub log: FfiLogSink,
}

/// Where a plugin's `tracing` events go: the host's log. Events above `max_level`
/// (1 = error … 5 = trace, 0 = none) are discarded in the plugin at the call site.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiLogSink {
    pub max_level: u8,
    pub emit: for<'a> extern "C" fn(record: &FfiLogRecord<'a>),
}

/// One `tracing` event of a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct FfiLogRecord<'a> {
    pub level: u8,
    pub plugin: RStr<'a>,
    pub namespace: RStr<'a>,
    /// The module path of the code that logged (`tracing`'s target).
    pub target: RStr<'a>,
    pub message: RStr<'a>,
    /// The event's other fields as `name=value`, space-separated.
    pub fields: RStr<'a>,
}

#[sabi_trait]
pub trait FfiKeyValueBasic: Send + Sync {
    fn get(&self, key: RStr<'_>) -> FfiResult<ROption<RVec<u8>>>;
    fn set(&self, key: RStr<'_>, value: RVec<u8>) -> FfiResult<()>;
    fn delete(&self, key: RStr<'_>) -> FfiResult<bool>;
    #[sabi(last_prefix_field)]
    fn exists(&self, key: RStr<'_>) -> FfiResult<bool>;
}

#[sabi_trait]
pub trait FfiKeyValueTtl: Send + Sync {
    fn set_with_ttl(&self, key: RStr<'_>, value: RVec<u8>, ttl_millis: u64) -> FfiResult<()>;
    fn expire(&self, key: RStr<'_>, ttl_millis: u64) -> FfiResult<bool>;
    fn get_ttl(&self, key: RStr<'_>) -> FfiResult<FfiTtl>;
    #[sabi(last_prefix_field)]
    fn persist(&self, key: RStr<'_>) -> FfiResult<bool>;
}

#[sabi_trait]
pub trait FfiKeyValueScan: Send + Sync {
    fn scan(&self, prefix: RStr<'_>, cursor: ROption<RStr<'_>>, limit: u32) -> FfiResult<FfiScanPage>;
    fn count(&self, prefix: RStr<'_>) -> FfiResult<u64>;
    #[sabi(last_prefix_field)]
    fn scan_stream(&self, prefix: RStr<'_>) -> EntryStreamBox;
}

#[sabi_trait]
pub trait FfiKeyValueBatch: Send + Sync {
    fn batch_get(&self, keys: RVec<RString>) -> FfiResult<RVec<ROption<RVec<u8>>>>;
    fn batch_set(&self, entries: RVec<FfiEntry>) -> FfiResult<RVec<RResult<(), PluginError>>>;
    #[sabi(last_prefix_field)]
    fn batch_delete(&self, keys: RVec<RString>) -> FfiResult<RVec<bool>>;
}

#[sabi_trait]
pub trait FfiKeyValueCas: Send + Sync {
    fn get_versioned(&self, key: RStr<'_>) -> FfiResult<ROption<FfiVersioned>>;
    fn compare_and_swap(
        &self,
        key: RStr<'_>,
        expected_version: u64,
        value: RVec<u8>,
        ttl_millis: u64,
    ) -> FfiResult<FfiCas>;
    #[sabi(last_prefix_field)]
    fn delete_if_version(&self, key: RStr<'_>, expected_version: u64) -> FfiResult<FfiCas>;
}

#[sabi_trait]
pub trait FfiListBasic: Send + Sync {
    fn push(&self, key: RStr<'_>, end: FfiListEnd, values: RVec<RVec<u8>>) -> FfiResult<u64>;
    fn pop(&self, key: RStr<'_>, end: FfiListEnd, count: u32) -> FfiResult<RVec<RVec<u8>>>;
    #[sabi(last_prefix_field)]
    fn length(&self, key: RStr<'_>) -> FfiResult<u64>;
}

#[sabi_trait]
pub trait FfiListRange: Send + Sync {
    fn range(&self, key: RStr<'_>, start: i64, stop: i64) -> FfiResult<RVec<RVec<u8>>>;
    #[sabi(last_prefix_field)]
    fn trim(&self, key: RStr<'_>, start: i64, stop: i64) -> FfiResult<()>;
}

#[sabi_trait]
pub trait FfiKeyValueTransactional: Send + Sync {
    fn begin(&self, timeout_millis: u64) -> FfiResult<u64>;
    fn tx_get(&self, tx: u64, key: RStr<'_>) -> FfiResult<ROption<RVec<u8>>>;
    fn tx_set(&self, tx: u64, key: RStr<'_>, value: RVec<u8>) -> FfiResult<()>;
    fn tx_delete(&self, tx: u64, key: RStr<'_>) -> FfiResult<bool>;
    fn commit(&self, tx: u64) -> FfiResult<()>;
    #[sabi(last_prefix_field)]
    fn rollback(&self, tx: u64) -> FfiResult<()>;
}

#[sabi_trait]
pub trait FfiQueueBasic: Send + Sync {
    fn enqueue(&self, queue: RStr<'_>, payload: RVec<u8>) -> FfiResult<RString>;
    fn dequeue(&self, queue: RStr<'_>, max: u32) -> FfiResult<RVec<FfiQueueMessage>>;
    fn ack(&self, queue: RStr<'_>, receipt: RStr<'_>) -> FfiResult<bool>;
    #[sabi(last_prefix_field)]
    fn nack(&self, queue: RStr<'_>, receipt: RStr<'_>, delay_millis: u64) -> FfiResult<bool>;
}

#[sabi_trait]
pub trait FfiQueueVisibility: Send + Sync {
    fn dequeue_with_visibility(
        &self,
        queue: RStr<'_>,
        max: u32,
        visibility_millis: u64,
    ) -> FfiResult<RVec<FfiQueueMessage>>;
    #[sabi(last_prefix_field)]
    fn extend_visibility(
        &self,
        queue: RStr<'_>,
        receipt: RStr<'_>,
        visibility_millis: u64,
    ) -> FfiResult<bool>;
}

#[sabi_trait]
pub trait FfiQueueDeadLetter: Send + Sync {
    fn dead_letters(
        &self,
        queue: RStr<'_>,
        cursor: ROption<RStr<'_>>,
        limit: u32,
    ) -> FfiResult<FfiDeadLetterPage>;
    #[sabi(last_prefix_field)]
    fn replay_dead_letters(&self, queue: RStr<'_>, ids: RVec<RString>) -> FfiResult<u64>;
}

#[sabi_trait]
pub trait FfiQueueDelayed: Send + Sync {
    #[sabi(last_prefix_field)]
    fn enqueue_at(&self, queue: RStr<'_>, payload: RVec<u8>, deliver_at_unix_ms: i64) -> FfiResult<RString>;
}

#[sabi_trait]
pub trait FfiPubSubBasic: Send + Sync {
    fn publish(&self, topic: RStr<'_>, payload: RVec<u8>, metadata: RVec<FfiHeader>) -> FfiResult<RString>;
    #[sabi(last_prefix_field)]
    fn subscribe(&self, topic: RStr<'_>) -> FfiResult<MessageStreamBox>;
}

#[sabi_trait]
pub trait FfiPubSubWildcards: Send + Sync {
    #[sabi(last_prefix_field)]
    fn subscribe_pattern(&self, pattern: RStr<'_>) -> FfiResult<MessageStreamBox>;
}

#[sabi_trait]
pub trait FfiPubSubPersistent: Send + Sync {
    fn subscribe_durable(
        &self,
        name: RStr<'_>,
        topic: RStr<'_>,
        ack_wait_millis: u64,
    ) -> FfiResult<MessageStreamBox>;
    #[sabi(last_prefix_field)]
    fn ack(&self, name: RStr<'_>, ack_id: RStr<'_>) -> FfiResult<()>;
}

#[sabi_trait]
pub trait FfiStreamBasic: Send + Sync {
    fn append(&self, stream: RStr<'_>, record: FfiNewRecord) -> FfiResult<FfiAppended>;
    fn read(
        &self,
        stream: RStr<'_>,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> FfiResult<EventStreamBox>;
    #[sabi(last_prefix_field)]
    fn offsets(&self, stream: RStr<'_>) -> FfiResult<RVec<FfiPartitionOffsets>>;
}

#[sabi_trait]
pub trait FfiStreamPartitioning: Send + Sync {
    #[sabi(last_prefix_field)]
    fn append_to_partition(
        &self,
        stream: RStr<'_>,
        partition: u32,
        record: FfiNewRecord,
    ) -> FfiResult<FfiAppended>;
}

#[sabi_trait]
pub trait FfiStreamReplay: Send + Sync {
    #[sabi(last_prefix_field)]
    fn offset_for_timestamp(
        &self,
        stream: RStr<'_>,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> FfiResult<u64>;
}

#[sabi_trait]
pub trait FfiStreamConsumerGroups: Send + Sync {
    fn join(&self, stream: RStr<'_>, group: RStr<'_>) -> FfiResult<EventStreamBox>;
    fn commit(&self, stream: RStr<'_>, group: RStr<'_>, ack_id: RStr<'_>) -> FfiResult<()>;
    #[sabi(last_prefix_field)]
    fn committed(&self, stream: RStr<'_>, group: RStr<'_>) -> FfiResult<RVec<FfiCommitted>>;
}

#[sabi_trait]
pub trait FfiStateTransfer: Send + Sync {
    fn export_state(&self) -> FfiResult<RVec<u8>>;
    #[sabi(last_prefix_field)]
    fn import_state(&self, state: RVec<u8>) -> FfiResult<()>;
}

/// 1.2: what an object store knows of an object.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiObjectInfo {
    pub size: u64,
    pub modified_unix_ms: i64,
}

/// 1.3: one object in a listing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiObjectEntry {
    pub key: RString,
    pub info: FfiObjectInfo,
}

/// 1.2: an object being read: its info and its chunks, pumped with bounded read-ahead.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiObjectRead {
    pub info: FfiObjectInfo,
    pub chunks: ChunkStreamBox,
}

/// 1.2: objects written and read in chunks; no object crosses the boundary whole.
#[sabi_trait]
pub trait FfiObjectStoreBasic: Send + Sync {
    fn put(&self, key: RStr<'_>) -> FfiResult<ObjectUploadBox>;
    fn get(&self, key: RStr<'_>) -> FfiResult<ROption<FfiObjectRead>>;
    fn head(&self, key: RStr<'_>) -> FfiResult<ROption<FfiObjectInfo>>;
    #[sabi(last_prefix_field)]
    fn delete(&self, key: RStr<'_>) -> FfiResult<bool>;
    /// 1.3. A 1.2 plugin's vtable lacks it, so the default answers.
    fn list(&self, prefix: RStr<'_>, after: RStr<'_>, limit: u32) -> FfiResult<RVec<FfiObjectEntry>> {
        let _ = (prefix, after, limit);
        crate::ffi::missing_method("list")
    }
}

pub type InstanceBox = FfiInstance_TO<'static, RBox<()>>;
pub type KeyValueBasicBox = FfiKeyValueBasic_TO<'static, RBox<()>>;
pub type KeyValueTtlBox = FfiKeyValueTtl_TO<'static, RBox<()>>;
pub type KeyValueScanBox = FfiKeyValueScan_TO<'static, RBox<()>>;
pub type KeyValueBatchBox = FfiKeyValueBatch_TO<'static, RBox<()>>;
pub type KeyValueCasBox = FfiKeyValueCas_TO<'static, RBox<()>>;
pub type KeyValueTransactionalBox = FfiKeyValueTransactional_TO<'static, RBox<()>>;
pub type ListBasicBox = FfiListBasic_TO<'static, RBox<()>>;
pub type ListRangeBox = FfiListRange_TO<'static, RBox<()>>;
pub type QueueBasicBox = FfiQueueBasic_TO<'static, RBox<()>>;
pub type QueueVisibilityBox = FfiQueueVisibility_TO<'static, RBox<()>>;
pub type QueueDeadLetterBox = FfiQueueDeadLetter_TO<'static, RBox<()>>;
pub type QueueDelayedBox = FfiQueueDelayed_TO<'static, RBox<()>>;
pub type PubSubBasicBox = FfiPubSubBasic_TO<'static, RBox<()>>;
pub type PubSubWildcardsBox = FfiPubSubWildcards_TO<'static, RBox<()>>;
pub type PubSubPersistentBox = FfiPubSubPersistent_TO<'static, RBox<()>>;
pub type StreamBasicBox = FfiStreamBasic_TO<'static, RBox<()>>;
pub type StreamConsumerGroupsBox = FfiStreamConsumerGroups_TO<'static, RBox<()>>;
pub type StreamReplayBox = FfiStreamReplay_TO<'static, RBox<()>>;
pub type StreamPartitioningBox = FfiStreamPartitioning_TO<'static, RBox<()>>;
pub type StateTransferBox = FfiStateTransfer_TO<'static, RBox<()>>;
pub type ObjectStoreBasicBox = FfiObjectStoreBasic_TO<'static, RBox<()>>;

/// A created plugin instance: its lifecycle, and one accessor per interface returning
/// that interface's object when the plugin has it. The vtable is a prefix type: an
/// interface added in a later minor version is a default method returning `RNone`, so
/// an instance from an older plugin reports it absent instead of failing to load.
#[sabi_trait]
pub trait FfiInstance: Send + Sync {
    fn health(&self) -> FfiFuture<FfiHealth>;
    fn shutdown(&self) -> FfiFuture<()>;
    fn keyvalue_basic(&self) -> ROption<KeyValueBasicBox>;
    fn keyvalue_ttl(&self) -> ROption<KeyValueTtlBox>;
    fn keyvalue_scan(&self) -> ROption<KeyValueScanBox>;
    fn keyvalue_batch(&self) -> ROption<KeyValueBatchBox>;
    fn keyvalue_cas(&self) -> ROption<KeyValueCasBox>;
    fn keyvalue_transactional(&self) -> ROption<KeyValueTransactionalBox>;
    fn list_basic(&self) -> ROption<ListBasicBox>;
    fn list_range(&self) -> ROption<ListRangeBox>;
    fn queue_basic(&self) -> ROption<QueueBasicBox>;
    fn queue_visibility(&self) -> ROption<QueueVisibilityBox>;
    fn queue_dead_letter(&self) -> ROption<QueueDeadLetterBox>;
    fn queue_delayed(&self) -> ROption<QueueDelayedBox>;
    fn pubsub_basic(&self) -> ROption<PubSubBasicBox>;
    fn pubsub_wildcards(&self) -> ROption<PubSubWildcardsBox>;
    fn pubsub_persistent(&self) -> ROption<PubSubPersistentBox>;
    fn stream_basic(&self) -> ROption<StreamBasicBox>;
    fn stream_consumer_groups(&self) -> ROption<StreamConsumerGroupsBox>;
    fn stream_replay(&self) -> ROption<StreamReplayBox>;
    fn stream_partitioning(&self) -> ROption<StreamPartitioningBox>;
    #[sabi(last_prefix_field)]
    fn state_transfer(&self) -> ROption<StateTransferBox>;
    /// 1.2. A 1.0 or 1.1 plugin's vtable lacks it, so the default answers.
    fn object_store_basic(&self) -> ROption<ObjectStoreBasicBox> {
        ROption::RNone
    }
}

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub metadata: FfiMetadataRef,
    /// Parses a slot's `config` (TOML text) without connecting anywhere.
    pub check_config: extern "C" fn(config: RStr<'_>) -> RResult<(), PluginError>,
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(config: RString) -> FfiResult<InstanceBox>,
    /// 1.1: `create` with the namespace and the host's log sink.
    pub create_in: extern "C" fn(config: RString, context: FfiCreateContext<'_>) -> FfiResult<InstanceBox>,
}

/// Compares the live declarations with the frozen ones. While this crate is 1.3 they
/// must match both ways (abi_stable accepts an implementation with more prefix fields
/// than its interface, so one direction alone would let a generator add or drop a
/// method at the end unnoticed); in a later minor release the live ones may only append.
#[cfg(all(test, not(feature = "test-next-minor")))]
mod tests {
    use abi_stable::abi_stability::abi_checking::{check_layout_compatibility_with_globals, CheckingGlobals};
    use abi_stable::StableAbi;

    use crate::ffi as live;

    /// Fresh globals for each comparison: abi_stable merges the prefix types it has seen
    /// by name and crate version, and the frozen copies share both with the live ones.
    fn check_layout_compatibility(
        interface: &'static abi_stable::type_layout::TypeLayout,
        implementation: &'static abi_stable::type_layout::TypeLayout,
    ) -> Result<(), abi_stable::abi_stability::abi_checking::AbiInstabilityErrors> {
        check_layout_compatibility_with_globals(interface, implementation, &CheckingGlobals::new())
    }

    fn same_layout<Frozen: StableAbi, Live: StableAbi>(what: &str) {
        if let Err(errors) = check_layout_compatibility(Frozen::LAYOUT, Live::LAYOUT) {
            panic!("{what}: the live layout no longer matches the frozen 1.3 one:\n{errors}");
        }
        if !crate::ABI_VERSION.starts_with("1.3.") {
            return;
        }
        if let Err(errors) = check_layout_compatibility(Live::LAYOUT, Frozen::LAYOUT) {
            panic!("{what}: the live layout has more than the frozen 1.3 one:\n{errors}");
        }
    }

    macro_rules! same_layouts {
        ($($type:ident),* $(,)?) => {
            $(same_layout::<super::$type, live::$type>(stringify!($type));)*
        };
    }

    #[test]
    fn every_interface_object_keeps_its_1_3_layout() {
        same_layouts!(
            KeyValueBasicBox,
            KeyValueTtlBox,
            KeyValueScanBox,
            KeyValueBatchBox,
            KeyValueCasBox,
            KeyValueTransactionalBox,
            ListBasicBox,
            ListRangeBox,
            QueueBasicBox,
            QueueVisibilityBox,
            QueueDeadLetterBox,
            QueueDelayedBox,
            PubSubBasicBox,
            PubSubWildcardsBox,
            PubSubPersistentBox,
            StreamBasicBox,
            StreamConsumerGroupsBox,
            StreamReplayBox,
            StreamPartitioningBox,
            StateTransferBox,
            ObjectStoreBasicBox,
        );
    }

    #[test]
    fn the_root_module_the_instance_and_the_metadata_keep_their_1_3_layout() {
        same_layouts!(PluginModuleRef, FfiMetadataRef, InstanceBox, FfiCreateContext, FfiLogRecord);
    }
}
