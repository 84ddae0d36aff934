//! The key-value interfaces: basic, ttl, scan, batch and cas.

use plugin_abi::PluginResult;
use std::ops::Bound;
use std::time::{Duration, Instant};

use plugin_abi::{
    CasResult, KeyTtl, KeyValueBasic, KeyValueBatch, KeyValueCas, KeyValueScan, KeyValueTtl, ScanPage,
    Versioned,
};

use crate::store::{Entry, Inner};
use crate::Memstore;

impl Inner {
    /// Writes `value`, replacing any TTL with `expires_at`. With `expected`, writes only if
    /// the key's current version (0 = absent) matches.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<Instant>,
        expected: Option<u64>,
    ) -> PluginResult<CasResult> {
        let now = Instant::now();
        let mut shard = self.write_key(key);
        let existing = shard.entries.get(key);
        let current = existing.filter(|e| e.live(now)).map_or(0, |e| e.version);
        if let Some(expected) = expected {
            if expected != current {
                return Ok(CasResult::Conflict { current_version: current });
            }
        }
        let (new_keys, old_bytes) = match existing {
            Some(entry) => (0, key.len() + entry.value.len()),
            None => (1, 0),
        };
        let new_bytes = key.len() + value.len();
        self.reserve(new_keys, new_bytes as i64 - old_bytes as i64)?;
        // Taken under the shard's lock, so one key's versions are issued in order.
        let version = self.versions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        shard.entries.insert(key.to_owned(), Entry { value, version, expires_at });
        Ok(CasResult::Swapped { version })
    }

    fn remove(&self, key: &str, expected: Option<u64>) -> CasResult {
        let now = Instant::now();
        let mut shard = self.write_key(key);
        let current = shard.entries.get(key).filter(|e| e.live(now)).map_or(0, |e| e.version);
        if let Some(expected) = expected {
            if expected != current {
                return CasResult::Conflict { current_version: current };
            }
        }
        if let Some(entry) = shard.entries.remove(key) {
            self.release(1, (key.len() + entry.value.len()) as u64);
        }
        CasResult::Swapped { version: current }
    }

    fn with_live<T>(&self, key: &str, read: impl FnOnce(&Entry) -> T) -> Option<T> {
        let now = Instant::now();
        let shard = self.read_key(key);
        shard.entries.get(key).filter(|e| e.live(now)).map(read)
    }

    fn with_live_mut<T>(&self, key: &str, change: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let now = Instant::now();
        let mut shard = self.write_key(key);
        shard.entries.get_mut(key).filter(|e| e.live(now)).map(change)
    }

    /// Up to `limit` live keys starting with `prefix`, after `cursor`, in key order, plus
    /// whether more follow. Each shard contributes at most `limit + 1` candidates.
    fn scan_page(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> ScanPage {
        let now = Instant::now();
        let start = match cursor {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        for index in 0..self.shard_count() {
            let shard = self.read(index);
            let range = shard.entries.range::<String, _>((start.clone(), Bound::Unbounded));
            found.extend(
                range
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .filter(|(_, entry)| entry.live(now))
                    .take(limit + 1)
                    .map(|(key, entry)| (key.clone(), entry.value.clone())),
            );
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = found.len() > limit;
        found.truncate(limit);
        let next_cursor = if more { found.last().map(|(key, _)| key.clone()) } else { None };
        ScanPage { entries: found, next_cursor }
    }

    fn count_prefix(&self, prefix: &str) -> u64 {
        let now = Instant::now();
        (0..self.shard_count())
            .map(|index| {
                let shard = self.read(index);
                shard
                    .entries
                    .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .filter(|(_, entry)| entry.live(now))
                    .count() as u64
            })
            .sum()
    }
}

impl KeyValueBasic for Memstore {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>> {
        Ok(self.inner.with_live(key, |e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.inner.put(key, value, None, None).map(|_| ())
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        Ok(matches!(self.inner.remove(key, None), CasResult::Swapped { version } if version > 0))
    }

    async fn exists(&self, key: &str) -> PluginResult<bool> {
        Ok(self.inner.with_live(key, |_| ()).is_some())
    }
}

impl KeyValueTtl for Memstore {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()> {
        self.inner.put(key, value, Some(Instant::now() + ttl), None).map(|_| ())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> PluginResult<bool> {
        let at = Instant::now() + ttl;
        Ok(self.inner.with_live_mut(key, |e| e.expires_at = Some(at)).is_some())
    }

    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl> {
        let now = Instant::now();
        Ok(self
            .inner
            .with_live(key, |e| match e.expires_at {
                Some(at) => KeyTtl::ExpiresIn(at.saturating_duration_since(now)),
                None => KeyTtl::NoExpiry,
            })
            .unwrap_or(KeyTtl::Missing))
    }

    async fn persist(&self, key: &str) -> PluginResult<bool> {
        Ok(self.inner.with_live_mut(key, |e| e.expires_at.take().is_some()).unwrap_or(false))
    }
}

impl KeyValueScan for Memstore {
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage> {
        Ok(self.inner.scan_page(prefix, cursor, limit.max(1) as usize))
    }

    async fn count(&self, prefix: &str) -> PluginResult<u64> {
        Ok(self.inner.count_prefix(prefix))
    }
}

impl KeyValueBatch for Memstore {
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>> {
        Ok(keys.iter().map(|key| self.inner.with_live(key, |e| e.value.clone())).collect())
    }

    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>> {
        Ok(entries
            .into_iter()
            .map(|(key, value)| self.inner.put(&key, value, None, None).map(|_| ()))
            .collect())
    }

    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>> {
        Ok(keys
            .iter()
            .map(|key| matches!(self.inner.remove(key, None), CasResult::Swapped { version } if version > 0))
            .collect())
    }
}

impl KeyValueCas for Memstore {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>> {
        Ok(self.inner.with_live(key, |e| Versioned { value: e.value.clone(), version: e.version }))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult> {
        let expires_at = ttl.map(|ttl| Instant::now() + ttl);
        self.inner.put(key, value, expires_at, Some(expected_version))
    }

    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult> {
        Ok(self.inner.remove(key, Some(expected_version)))
    }
}
