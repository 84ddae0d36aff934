//! The stable ABI between the Prism host and its driver plugins.
//!
//! Plugin authors implement [`Driver`] plus one safe async trait per interface
//! (e.g. [`KeyValueBasic`]) and call [`export_plugin!`]; this crate does the FFI.
//! The host uses [`host::Plugin`] to load a library and [`host::Instance`] to call it.
//!
//! Everything that knows `abi_stable` or `async-ffi` lives in [`ffi`]; no other module
//! (and no plugin or host code) touches those crates or `unsafe`.

mod config_keys;
pub mod ffi;
mod interfaces;
mod macros;
pub mod ranges;
pub mod remote;
pub mod topics;
mod traits;
mod types;

pub use config_keys::config_keys_of;
pub use ffi::error::{ErrorCode, PluginError};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970): the one
/// timestamp form every message, record and registration carries.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// What every plugin operation returns.
pub type PluginResult<T> = Result<T, PluginError>;
/// The host's safe view of a plugin (it lives in `ffi` because it unwraps FFI types).
pub use ffi::host;
pub use interfaces::{Interface, ObjectUpload};
/// Declares an interface: see `plugin-abi-macros` for what it generates.
pub use plugin_abi_macros::interface;
/// Re-exported so plugins derive `JsonSchema` for their config with the same version.
pub use schemars;
pub use traits::Driver;

macro_rules! export_interface_traits {
    ($($variant:ident $name:ident $box:ident $object:ident $handle:ident $call:ident $to:ident;)*) => {
        pub use interfaces::{$($variant),*};
    };
}
for_each_interface!(export_interface_traits);
pub use types::{
    Appended, CasResult, ConfigKey, DeadLetterPage, Feed, GroupEvent, GroupFeed, Health, HealthStatus,
    KeyTtl, ListEnd, MemberAck, Message, Metadata, NewRecord, ObjectEntry, ObjectInfo, ObjectRead,
    PartitionOffsets, QueueMessage, RecordFeed, ScanPage, StreamRecord, Subscription, TransactionId,
    Versioned,
};

/// The plugin ABI version this build speaks: `plugin-abi`'s own crate version. A host
/// loads plugins built against the same major version, whatever their minor version
/// (docs/PLUGIN_ABI.md); each plugin's metadata reports the version it was built against.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub mod __private {
    pub use crate::ffi::export::{build_root_module, PluginModuleRef, StaticMetadata};
    pub use crate::ffi::export_header::*;
}
