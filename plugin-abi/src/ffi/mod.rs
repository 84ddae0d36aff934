#![allow(non_local_definitions)] // #[sabi_trait] expands impls inside a const block
//! Everything that crosses the library boundary: `#[repr(C)]` types, the instance's
//! vtable, the metadata table and the root module, and the hand-written pumps (streams,
//! uploads) and conversions (`crossing`) that the code generated from each interface's
//! declaration calls. The interface objects themselves are generated where each
//! interface is declared (`interfaces/`). This is the only hand-written code that uses
//! `abi_stable`, `async-ffi` or `unsafe`.

#[cfg(test)]
mod added_methods;
pub(crate) mod bridge;
pub(crate) mod convert;
pub(crate) mod crossing;
pub(crate) mod error;
pub mod export;
pub mod export_header;
pub mod host;
pub(crate) mod load;
pub(crate) mod log;
pub(crate) mod stream;
pub(crate) mod upload;
mod v1_0;
mod v1_1;
mod v1_2;
mod v1_3;

use abi_stable::{
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use async_ffi::FfiFuture;

use crate::interfaces::*;
use crate::PluginError;

pub(crate) use stream::{ChunkStreamBox, EntryStreamBox, EventStreamBox, MessageStreamBox};
pub(crate) use upload::ObjectUploadBox;

/// A future that resolves to a plugin result.
pub type FfiResult<T> = FfiFuture<RResult<T, PluginError>>;

/// What an interface method added in a later minor release answers for a plugin built
/// before it (the default body of its FFI method, which that plugin's vtable lacks).
pub(crate) fn missing_method<T: Send + 'static>(method: &'static str) -> FfiResult<T> {
    async_ffi::FutureExt::into_ffi(async move {
        RResult::RErr(PluginError::unimplemented(format!(
            "this plugin was built before `{method}` was added to its interface"
        )))
    })
}

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
    /// Only in the pretend next minor release the compatibility tests build.
    #[cfg(feature = "test-next-minor")]
    pub next_minor_note: RStr<'static>,
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

pub type InstanceBox = FfiInstance_TO<'static, RBox<()>>;

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

impl RootModule for PluginModuleRef {
    abi_stable::declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "prism_plugin";
    const NAME: &'static str = "prism_plugin";
    #[cfg(not(feature = "test-next-minor"))]
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
    #[cfg(feature = "test-next-minor")]
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.99.0");
}
