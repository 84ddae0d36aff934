//! The stable ABI between the Prism host and its driver plugins.
//!
//! Plugin authors implement [`Driver`] plus one safe async trait per interface
//! (e.g. [`KeyValueBasic`]) and call [`export_plugin!`]; this crate does the FFI.
//! The host uses [`host::Plugin`] to load a library and [`host::Instance`] to call it.
//!
//! Everything that knows `abi_stable` or `async-ffi` lives in [`ffi`]; no other module
//! (and no plugin or host code) touches those crates or `unsafe`.

mod error;
pub mod ffi;
pub mod host;
mod interfaces;
mod macros;
pub mod topics;
mod traits;
mod types;

pub use error::{ErrorCode, PluginError};
pub use interfaces::Interface;
pub use traits::{
    Driver, KeyValueBasic, KeyValueBatch, KeyValueCas, KeyValueScan, KeyValueTransactional, KeyValueTtl,
    ListBasic, ListRange, PubSubBasic, PubSubPersistent, PubSubWildcards, QueueBasic, QueueDeadLetter,
    QueueDelayed, QueueVisibility, StateTransfer, StreamBasic, StreamConsumerGroups, StreamPartitioning,
    StreamReplay,
};
pub use types::{
    Appended, CasResult, DeadLetterPage, Feed, GroupEvent, GroupFeed, Health, HealthStatus, KeyTtl, ListEnd,
    MemberAck, Message, Metadata, NewRecord, PartitionOffsets, QueueMessage, RecordFeed, ScanPage,
    StreamRecord, Subscription, TransactionId, Versioned,
};

/// The version of the plugin ABI described by this crate. A host refuses plugins
/// whose root-module layout does not match; this number is what it reports.
/// 2: the stream interfaces and `state_transfer` joined `FfiInstance`.
pub const ABI_VERSION: u32 = 2;

#[doc(hidden)]
pub mod __private {
    pub use crate::ffi::export::{build_root_module, PluginModuleRef, StaticMetadata};
    pub use crate::ffi::export_header::*;
}
