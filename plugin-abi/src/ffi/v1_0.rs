//! The 1.0 declarations of the prefix types later minor versions extended, kept only to
//! check a 1.0 library's layout against. abi_stable's load-time check requires a
//! library's prefix types to have at least the fields the host declares, so an older
//! library would be refused by the current declarations; checked against these, it loads,
//! and the fields it lacks read as absent through the accessors (which consult the
//! library's own field table at run time). Never edit: they are what 1.0 plugins export.

#![allow(dead_code)] // declared for their layouts, never built

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use abi_stable::StableAbi;

use super::v1_1::InstanceBox; // the instance's vtable was the same in 1.0 and 1.1
use super::FfiResult;
use crate::PluginError;

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
}
