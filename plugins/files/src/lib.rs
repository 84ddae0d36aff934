//! files: objects as files in one local directory — the `object_store_basic` interface
//! with no external service, for the default config's claim check and `SetStream`.
//!
//! An object is written to a temporary file and renamed over its name when finished, so
//! a reader sees the old object or the new one, whole, never a part; an open read keeps
//! the file it opened. Nothing is shared between two instances but the directory, so two
//! builds of the plugin can run side by side during a reload.

#![forbid(unsafe_code)]

mod config;
mod names;
mod store;

pub use config::Config;
pub use store::Files;

plugin_abi::export_plugin! {
    driver: Files,
    name: "files",
    description: "Objects of any size as files in a local directory, written and read in chunks",
    connection_format: "path = \"/var/lib/prism/objects\"",
    interfaces: [ObjectStoreBasic],
}
