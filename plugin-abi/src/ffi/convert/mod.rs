//! Conversions between the plain Rust types plugins and the host use and their FFI
//! forms, as `From` impls in both directions, one file per concept, each with a
//! round-trip test. The plugin side (`export.rs`) and the host side (`host.rs`) both
//! convert with `.into()`, so a field is mapped in exactly one place.

mod health;
mod keyvalue;
mod list;
mod object;
mod pubsub;
mod queue;
mod stream;

pub(crate) use pubsub::{headers_from_ffi, headers_to_ffi};
