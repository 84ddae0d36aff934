//! The 1.1 declarations of the types 1.2 extended (the instance's vtable gained
//! `object_store_basic`), kept only to check a 1.1 library's layout against, like
//! `v1_0`. Never edit: they are what 1.1 plugins export.

#![allow(dead_code)] // declared for their layouts, never built

use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString};
use abi_stable::{sabi_trait, StableAbi};
use async_ffi::FfiFuture;

use super::*;
use crate::PluginError;

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
}

pub type InstanceBox = FfiInstance_TO<'static, RBox<()>>;

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FfiMetadataRef)))]
#[sabi(missing_field(option))]
pub struct FfiMetadata {
    pub name: RStr<'static>,
    pub version: RStr<'static>,
    pub description: RStr<'static>,
    pub connection_format: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub interfaces: RSlice<'static, RStr<'static>>,
    pub config_keys: RSlice<'static, FfiConfigKey>,
    pub exclusive: bool,
}

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub metadata: FfiMetadataRef,
    pub check_config: extern "C" fn(config: RStr<'_>) -> RResult<(), PluginError>,
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(config: RString) -> FfiResult<InstanceBox>,
    pub create_in: extern "C" fn(config: RString, context: FfiCreateContext<'_>) -> FfiResult<InstanceBox>,
}
