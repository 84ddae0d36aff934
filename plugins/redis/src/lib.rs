//! redis: key-value and lists on a Redis server.
//!
//! Data model, under the slot's `key_prefix`:
//! - `{prefix}k:{key}` — a hash `{v: value, n: version}`; its TTL is the key's TTL.
//! - `{prefix}n` — the version counter every write increments, so versions never repeat.
//! - `{prefix}i` — a sorted set of live key names (all score 0), so prefix scans page
//!   in key order with `ZRANGEBYLEX` and never return a key twice. Entries whose hash
//!   has expired are dropped lazily by scans, counts and a background sweeper.
//! - `{prefix}l:{key}` — a Redis list.
//! - `{prefix}p:{topic}` — a pub/sub channel (see `pubsub.rs`).
//!
//! Every write is one Lua script, so value, version, TTL and index change atomically.

#![forbid(unsafe_code)]

mod config;
mod connection;
mod errors;
mod keyvalue;
mod list;
mod pubsub;
mod scripts;
mod store;

pub use config::Config;
pub use store::Redis;

plugin_abi::export_plugin! {
    driver: Redis,
    name: "redis",
    description: "Redis key-value (hash per key, sorted-set index), lists and pub/sub",
    connection_format: "redis://[user:password@]host:port[/db]",
    interfaces: [
        KeyValueBasic, KeyValueTtl, KeyValueScan, KeyValueBatch, KeyValueCas, ListBasic, ListRange,
        PubSubBasic, PubSubWildcards,
    ],
}
