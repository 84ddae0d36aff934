//! state_transfer: the key-value entries (value, version, remaining TTL) and lists, as one
//! snapshot, so a reloaded memstore keeps its keys. Pub/sub subscribers and streams are
//! not carried over: subscribers resubscribe, and streams are a log of this instance.
//!
//! Format (all integers big-endian): the magic, then `u64` entry count and per entry
//! key, value, `u64` version, `u64` remaining TTL in ms (0 = none); then `u64` list count
//! and per list key, `u32` item count, items; then (format 2) the `u64` last version
//! handed out, so the new instance never repeats a version. Byte strings are `u32`
//! length + bytes. Format 1 snapshots (no last version) are still read.

use plugin_abi::PluginResult;
use std::time::{Duration, Instant};

use plugin_abi::{PluginError, StateTransfer};

use crate::store::Entry;
use crate::Memstore;

const MAGIC: &[u8] = b"prism-memstore-state/2\n";
const MAGIC_V1: &[u8] = b"prism-memstore-state/1\n";

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> PluginResult<&'a [u8]> {
        if self.rest.len() < n {
            return Err(PluginError::invalid_argument("memstore state snapshot is truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    fn u32(&mut self) -> PluginResult<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> PluginResult<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> PluginResult<Vec<u8>> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn string(&mut self) -> PluginResult<String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| PluginError::invalid_argument("memstore state snapshot has a key that is not UTF-8"))
    }
}

impl StateTransfer for Memstore {
    async fn export_state(&self) -> PluginResult<Vec<u8>> {
        let now = Instant::now();
        let mut entries = Vec::new();
        let mut lists = Vec::new();
        let (mut entry_count, mut list_count) = (0u64, 0u64);
        for index in 0..self.inner.shard_count() {
            let shard = self.inner.read(index);
            for (key, entry) in shard.entries.iter().filter(|(_, e)| e.live(now)) {
                put_bytes(&mut entries, key.as_bytes());
                put_bytes(&mut entries, &entry.value);
                entries.extend_from_slice(&entry.version.to_be_bytes());
                let ttl_ms = entry
                    .expires_at
                    .map_or(0, |at| at.saturating_duration_since(now).as_millis().max(1) as u64);
                entries.extend_from_slice(&ttl_ms.to_be_bytes());
                entry_count += 1;
            }
            for (key, items) in &shard.lists {
                put_bytes(&mut lists, key.as_bytes());
                lists.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for item in items {
                    put_bytes(&mut lists, item);
                }
                list_count += 1;
            }
        }
        let mut out = Vec::with_capacity(MAGIC.len() + 16 + entries.len() + lists.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&entry_count.to_be_bytes());
        out.extend_from_slice(&entries);
        out.extend_from_slice(&list_count.to_be_bytes());
        out.extend_from_slice(&lists);
        out.extend_from_slice(&self.inner.versions.load(std::sync::atomic::Ordering::Relaxed).to_be_bytes());
        Ok(out)
    }

    async fn import_state(&self, state: Vec<u8>) -> PluginResult<()> {
        let (body, has_last_version) = match (state.strip_prefix(MAGIC), state.strip_prefix(MAGIC_V1)) {
            (Some(body), _) => (body, true),
            (None, Some(body)) => (body, false),
            (None, None) => {
                return Err(PluginError::invalid_argument(
                    "not a memstore state snapshot (or from an unknown format version)",
                ))
            }
        };
        // Parse everything first: a bad snapshot changes nothing.
        let now = Instant::now();
        let mut reader = Reader { rest: body };
        let mut entries = Vec::new();
        for _ in 0..reader.u64()? {
            let key = reader.string()?;
            let value = reader.bytes()?;
            let version = reader.u64()?;
            let ttl_ms = reader.u64()?;
            let expires_at = (ttl_ms > 0).then(|| now + Duration::from_millis(ttl_ms));
            entries.push((key, Entry { value, version, expires_at }));
        }
        let mut lists = Vec::new();
        for _ in 0..reader.u64()? {
            let key = reader.string()?;
            let count = reader.u32()?;
            let items: PluginResult<std::collections::VecDeque<Vec<u8>>> =
                (0..count).map(|_| reader.bytes()).collect();
            lists.push((key, items?));
        }
        let highest = entries.iter().map(|(_, entry)| entry.version).max().unwrap_or(0);
        let last_version = if has_last_version { reader.u64()?.max(highest) } else { highest };
        if !reader.rest.is_empty() {
            return Err(PluginError::invalid_argument("memstore state snapshot has trailing bytes"));
        }
        self.inner.clear();
        self.inner.versions.fetch_max(last_version, std::sync::atomic::Ordering::Relaxed);
        for (key, entry) in entries {
            self.inner.reserve(1, (key.len() + entry.value.len()) as i64)?;
            self.inner.write_key(&key).entries.insert(key, entry);
        }
        for (key, items) in lists {
            let bytes: usize = key.len() + items.iter().map(Vec::len).sum::<usize>();
            self.inner.reserve(1, bytes as i64)?;
            self.inner.write_key(&key).lists.insert(key, items);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use plugin_abi::{Driver, KeyValueBasic, KeyValueCas};

    use super::*;

    fn put_u64(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(&n.to_be_bytes());
    }

    #[tokio::test]
    async fn a_format_1_snapshot_is_read_and_versions_continue_above_it() {
        let mut snapshot = MAGIC_V1.to_vec();
        put_u64(&mut snapshot, 1);
        put_bytes(&mut snapshot, b"k");
        put_bytes(&mut snapshot, b"v");
        put_u64(&mut snapshot, 7);
        put_u64(&mut snapshot, 0);
        put_u64(&mut snapshot, 0);
        let store = Memstore::create(Default::default()).await.unwrap();
        store.import_state(snapshot).await.unwrap();
        assert_eq!(store.get_versioned("k").await.unwrap().unwrap().version, 7);
        store.set("other", b"x".to_vec()).await.unwrap();
        assert!(store.get_versioned("other").await.unwrap().unwrap().version > 7);
    }

    #[tokio::test]
    async fn the_last_version_handed_out_moves_with_the_state() {
        let old = Memstore::create(Default::default()).await.unwrap();
        for value in ["a", "b", "c"] {
            old.set("gone", value.as_bytes().to_vec()).await.unwrap();
        }
        let highest = old.get_versioned("gone").await.unwrap().unwrap().version;
        old.delete("gone").await.unwrap();
        let new = Memstore::create(Default::default()).await.unwrap();
        new.import_state(old.export_state().await.unwrap()).await.unwrap();
        new.set("gone", b"again".to_vec()).await.unwrap();
        assert!(
            new.get_versioned("gone").await.unwrap().unwrap().version > highest,
            "a key deleted before the handover must not get an old version back after it"
        );
    }
}
