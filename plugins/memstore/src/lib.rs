//! memstore: an in-process, sharded key-value and list store. Needs no external
//! service, so the default `plugins.toml` runs with nothing else installed.
//!
//! Keys live in sharded `BTreeMap`s (ordered, so prefix scans page by key), each
//! behind its own lock. TTLs are checked lazily on access and reclaimed by one
//! background sweeper per instance, never by a timer per key. Pub/sub fans out in
//! process through one bounded channel per subscription. Streams are bounded
//! in-memory logs with consumer groups.

#![forbid(unsafe_code)]

mod config;
mod keyvalue;
mod list;
mod pubsub;
mod state;
mod store;
mod stream;

pub use config::Config;
pub use store::Memstore;

plugin_abi::export_plugin! {
    driver: Memstore,
    name: "memstore",
    description: "In-process sharded key-value and list store, pub/sub fan-out and streams (data lives as long as the instance)",
    connection_format: "none (in-process)",
    interfaces: [
        KeyValueBasic, KeyValueTtl, KeyValueScan, KeyValueBatch, KeyValueCas, ListBasic, ListRange,
        PubSubBasic, PubSubWildcards, StreamBasic, StreamConsumerGroups, StreamReplay, StreamPartitioning,
        StateTransfer,
    ],
}
