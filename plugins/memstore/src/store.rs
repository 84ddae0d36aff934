use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use plugin_abi::{Driver, PluginError};

use crate::Config;

pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
    pub expires_at: Option<Instant>,
}

impl Entry {
    pub fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
pub(crate) struct Shard {
    pub entries: BTreeMap<String, Entry>,
    pub lists: HashMap<String, VecDeque<Vec<u8>>>,
}

/// Keys and bytes held, checked against the configured limits before every growth.
struct Usage {
    keys: AtomicU64,
    bytes: AtomicU64,
    max_keys: u64,
    max_bytes: u64,
}

pub(crate) struct Inner {
    shards: Box<[RwLock<Shard>]>,
    usage: Usage,
    /// The last version handed out: every write takes the next one, so versions grow on
    /// every write and a key deleted (or expired) and written again never repeats one.
    pub versions: AtomicU64,
}

pub struct Memstore {
    pub(crate) inner: Arc<Inner>,
    pub(crate) bus: crate::pubsub::Bus,
    pub(crate) streams: crate::stream::Streams,
    sweeper: tokio::task::AbortHandle,
}

impl Drop for Memstore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl Driver for Memstore {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }

    fn check(config: &Config) -> Result<(), PluginError> {
        if config.shards == 0 || config.shards > 4096 {
            return Err(PluginError::invalid_argument(format!(
                "shards = {} is out of range: use 1..=4096",
                config.shards
            )));
        }
        if config.sweep_interval_ms == 0 {
            return Err(PluginError::invalid_argument("sweep_interval_ms must be at least 1"));
        }
        if config.stream_partitions == 0 || config.stream_partitions > 1024 {
            return Err(PluginError::invalid_argument(format!(
                "stream_partitions = {} is out of range: use 1..=1024",
                config.stream_partitions
            )));
        }
        if config.stream_retention == 0 {
            return Err(PluginError::invalid_argument("stream_retention must be at least 1 record"));
        }
        if config.subscriber_buffer == 0 {
            return Err(PluginError::invalid_argument("subscriber_buffer must be at least 1"));
        }
        Ok(())
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let shards = config.shards.next_power_of_two();
        let inner = Arc::new(Inner {
            shards: (0..shards).map(|_| RwLock::new(Shard::default())).collect(),
            versions: AtomicU64::new(0),
            usage: Usage {
                keys: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                max_keys: config.max_keys,
                max_bytes: config.max_bytes,
            },
        });
        let sweeper =
            tokio::spawn(sweep(Arc::downgrade(&inner), Duration::from_millis(config.sweep_interval_ms)));
        Ok(Memstore {
            inner,
            bus: crate::pubsub::Bus::new(config.subscriber_buffer),
            streams: crate::stream::Streams::new(config.stream_partitions, config.stream_retention),
            sweeper: sweeper.abort_handle(),
        })
    }
}

/// Reclaims expired entries one shard per tick, so no pass holds a lock for long.
async fn sweep(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut next = 0usize;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let shard_index = next % inner.shards.len();
        next = next.wrapping_add(1);
        let now = Instant::now();
        let mut shard = inner.write(shard_index);
        let mut freed_keys = 0u64;
        let mut freed_bytes = 0u64;
        shard.entries.retain(|key, entry| {
            let live = entry.live(now);
            if !live {
                freed_keys += 1;
                freed_bytes += (key.len() + entry.value.len()) as u64;
            }
            live
        });
        drop(shard);
        inner.release(freed_keys, freed_bytes);
    }
}

/// FNV-1a: cheap and good enough to spread keys over shards.
fn shard_hash(key: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as usize
}

impl Inner {
    pub fn shard_of(&self, key: &str) -> usize {
        shard_hash(key) & (self.shards.len() - 1)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn read(&self, index: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[index].read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, index: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[index].write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn read_key(&self, key: &str) -> RwLockReadGuard<'_, Shard> {
        self.read(self.shard_of(key))
    }

    pub fn write_key(&self, key: &str) -> RwLockWriteGuard<'_, Shard> {
        self.write(self.shard_of(key))
    }

    /// Reserves room for `keys` more keys and `bytes` more bytes (negative = shrink), or
    /// refuses with RESOURCE_EXHAUSTED naming the limit to raise.
    pub fn reserve(&self, keys: i64, bytes: i64) -> Result<(), PluginError> {
        let usage = &self.usage;
        if keys > 0 {
            let now = usage.keys.fetch_add(keys as u64, Ordering::Relaxed) + keys as u64;
            if usage.max_keys > 0 && now > usage.max_keys {
                usage.keys.fetch_sub(keys as u64, Ordering::Relaxed);
                return Err(PluginError::resource_exhausted(format!(
                    "memstore is full: max_keys = {} reached (raise max_keys in the slot config or delete keys)",
                    usage.max_keys
                )));
            }
        }
        if bytes > 0 {
            let now = usage.bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
            if usage.max_bytes > 0 && now > usage.max_bytes {
                usage.bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
                if keys > 0 {
                    usage.keys.fetch_sub(keys as u64, Ordering::Relaxed);
                }
                return Err(PluginError::resource_exhausted(format!(
                    "memstore is full: max_bytes = {} reached (raise max_bytes in the slot config or delete keys)",
                    usage.max_bytes
                )));
            }
        }
        self.release((-keys.min(0)) as u64, (-bytes.min(0)) as u64);
        Ok(())
    }

    /// Drops every entry and list (before a state import).
    pub fn clear(&self) {
        for index in 0..self.shard_count() {
            let mut shard = self.write(index);
            shard.entries.clear();
            shard.lists.clear();
        }
        self.usage.keys.store(0, Ordering::Relaxed);
        self.usage.bytes.store(0, Ordering::Relaxed);
    }

    pub fn release(&self, keys: u64, bytes: u64) {
        if keys > 0 {
            self.usage.keys.fetch_sub(keys, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}
