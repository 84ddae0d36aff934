//! The list interfaces: push/pop at either end, length, range and trim.

use plugin_abi::PluginResult;
use std::collections::VecDeque;

use plugin_abi::{ListBasic, ListEnd, ListRange};

use crate::Memstore;

/// The positions `start..=stop` name in a list of `len` items (see `plugin_abi::ranges`).
fn resolve(len: usize, start: i64, stop: i64) -> Option<std::ops::Range<usize>> {
    plugin_abi::ranges::list_range(len as u64, start, stop)
        .map(|range| range.start as usize..range.end as usize)
}

fn item_bytes(items: &[Vec<u8>]) -> i64 {
    items.iter().map(|v| v.len() as i64).sum()
}

impl ListBasic for Memstore {
    async fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> PluginResult<u64> {
        let mut shard = self.inner.write_key(key);
        let new_key = !shard.lists.contains_key(key);
        let key_bytes = if new_key { key.len() as i64 } else { 0 };
        self.inner.reserve(i64::from(new_key), key_bytes + item_bytes(&values))?;
        let list = shard.lists.entry(key.to_owned()).or_default();
        for value in values {
            match end {
                ListEnd::Left => list.push_front(value),
                ListEnd::Right => list.push_back(value),
            }
        }
        Ok(list.len() as u64)
    }

    async fn pop(&self, key: &str, end: ListEnd, count: u32) -> PluginResult<Vec<Vec<u8>>> {
        let mut shard = self.inner.write_key(key);
        let Some(list) = shard.lists.get_mut(key) else { return Ok(Vec::new()) };
        let take = (count as usize).min(list.len());
        let popped: Vec<Vec<u8>> = match end {
            ListEnd::Left => list.drain(..take).collect(),
            ListEnd::Right => list.drain(list.len() - take..).rev().collect(),
        };
        let emptied = list.is_empty();
        if emptied {
            shard.lists.remove(key);
        }
        let key_bytes = if emptied { key.len() as u64 } else { 0 };
        self.inner.release(u64::from(emptied), key_bytes + item_bytes(&popped) as u64);
        Ok(popped)
    }

    async fn length(&self, key: &str) -> PluginResult<u64> {
        Ok(self.inner.read_key(key).lists.get(key).map_or(0, |l| l.len() as u64))
    }
}

impl ListRange for Memstore {
    async fn range(&self, key: &str, start: i64, stop: i64) -> PluginResult<Vec<Vec<u8>>> {
        let shard = self.inner.read_key(key);
        let Some(list) = shard.lists.get(key) else { return Ok(Vec::new()) };
        Ok(match resolve(list.len(), start, stop) {
            Some(range) => list.range(range).cloned().collect(),
            None => Vec::new(),
        })
    }

    async fn trim(&self, key: &str, start: i64, stop: i64) -> PluginResult<()> {
        let mut shard = self.inner.write_key(key);
        let Some(list) = shard.lists.get_mut(key) else { return Ok(()) };
        let before = item_bytes(list.make_contiguous());
        let kept: VecDeque<Vec<u8>> = match resolve(list.len(), start, stop) {
            Some(range) => list.drain(range).collect(),
            None => VecDeque::new(),
        };
        *list = kept;
        let after = item_bytes(list.make_contiguous());
        let emptied = list.is_empty();
        if emptied {
            shard.lists.remove(key);
        }
        let key_bytes = if emptied { key.len() as u64 } else { 0 };
        self.inner.release(u64::from(emptied), key_bytes + (before - after) as u64);
        Ok(())
    }
}
