use serde::Deserialize;

/// The slot's `config` table for memstore. Every field has a default.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Number of independently locked shards (rounded up to a power of two).
    pub shards: usize,
    /// Most keys (key-value entries plus lists) the store holds; 0 = unlimited.
    pub max_keys: u64,
    /// Most bytes of keys and values the store holds; 0 = unlimited.
    pub max_bytes: u64,
    /// How often the sweeper reclaims one shard's expired keys.
    pub sweep_interval_ms: u64,
    /// Messages a subscription may have waiting; past that it misses new ones (at most once).
    pub subscriber_buffer: usize,
    /// Partitions of every stream (fixed when the stream is created by its first append).
    pub stream_partitions: u32,
    /// Records each stream partition keeps; older ones fall off and `earliest` moves on.
    pub stream_retention: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 16,
            max_keys: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            sweep_interval_ms: 250,
            subscriber_buffer: 1024,
            stream_partitions: 3,
            stream_retention: 100_000,
        }
    }
}
