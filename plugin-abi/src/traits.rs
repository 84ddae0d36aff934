//! The safe async traits a plugin implements: one for the driver itself, one per interface.
//!
//! Declaring an interface in `export_plugin!` requires the matching trait impl, so a
//! metadata table cannot list an interface the plugin does not implement.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{CasResult, Health, KeyTtl, ListEnd, PluginError, ScanPage, Versioned};

type Res<T> = Result<T, PluginError>;

/// The driver: built from the slot's `config` table, asked for health, shut down.
pub trait Driver: Sized + Send + Sync + 'static {
    /// The slot's `config` table, deserialized. Use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + Send + 'static;

    /// Checks a deserialized config beyond its types (URLs, ranges, names) without
    /// connecting anywhere. `prism validate` calls it; so does the host before `create`.
    fn check(config: &Self::Config) -> Res<()> {
        let _ = config;
        Ok(())
    }

    fn create(config: Self::Config) -> impl Future<Output = Res<Self>> + Send;

    fn health(&self) -> impl Future<Output = Health> + Send {
        async { Health::serving() }
    }

    /// Called once before the instance is dropped; in-flight calls have finished.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// `keyvalue_basic`: set/get/delete/exists. Set replaces the value and removes any TTL.
pub trait KeyValueBasic: Driver {
    fn get(&self, key: &str) -> impl Future<Output = Res<Option<Vec<u8>>>> + Send;
    fn set(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Res<()>> + Send;
    /// Returns whether a key was deleted.
    fn delete(&self, key: &str) -> impl Future<Output = Res<bool>> + Send;
    fn exists(&self, key: &str) -> impl Future<Output = Res<bool>> + Send;
}

/// `keyvalue_ttl`: keys that expire. An expired key is never returned, counted or scanned.
pub trait KeyValueTtl: Driver {
    fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> impl Future<Output = Res<()>> + Send;
    /// Returns false when the key does not exist.
    fn expire(&self, key: &str, ttl: Duration) -> impl Future<Output = Res<bool>> + Send;
    fn get_ttl(&self, key: &str) -> impl Future<Output = Res<KeyTtl>> + Send;
    /// Returns true when a TTL was removed.
    fn persist(&self, key: &str) -> impl Future<Output = Res<bool>> + Send;
}

/// `keyvalue_scan`: prefix scan with an opaque cursor, and count.
pub trait KeyValueScan: Driver {
    /// A key present for the whole scan is returned exactly once across pages.
    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Res<ScanPage>> + Send;
    fn count(&self, prefix: &str) -> impl Future<Output = Res<u64>> + Send;
}

/// `keyvalue_batch`: per-item results, not atomic.
pub trait KeyValueBatch: Driver {
    /// One entry per requested key, in request order.
    fn batch_get(&self, keys: Vec<String>) -> impl Future<Output = Res<Vec<Option<Vec<u8>>>>> + Send;
    fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> impl Future<Output = Res<Vec<Res<()>>>> + Send;
    /// Whether each key was deleted, in request order.
    fn batch_delete(&self, keys: Vec<String>) -> impl Future<Output = Res<Vec<bool>>> + Send;
}

/// `keyvalue_cas`: per-key versions starting at 1 and growing on every write.
pub trait KeyValueCas: Driver {
    fn get_versioned(&self, key: &str) -> impl Future<Output = Res<Option<Versioned>>> + Send;
    /// `expected_version` 0 means "create only if absent". `ttl` None means no expiry.
    fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Res<CasResult>> + Send;
    fn delete_if_version(
        &self,
        key: &str,
        expected_version: u64,
    ) -> impl Future<Output = Res<CasResult>> + Send;
}

/// `list_basic`: push and pop at either end, length.
pub trait ListBasic: Driver {
    /// Returns the list's length after the push.
    fn push(&self, key: &str, end: ListEnd, values: Vec<Vec<u8>>) -> impl Future<Output = Res<u64>> + Send;
    /// Pops up to `count` values; an absent list pops nothing.
    fn pop(&self, key: &str, end: ListEnd, count: u32) -> impl Future<Output = Res<Vec<Vec<u8>>>> + Send;
    fn length(&self, key: &str) -> impl Future<Output = Res<u64>> + Send;
}

/// `list_range`: indexed range and trim, Redis-style inclusive indexes (negative from the end).
pub trait ListRange: Driver {
    fn range(&self, key: &str, start: i64, stop: i64) -> impl Future<Output = Res<Vec<Vec<u8>>>> + Send;
    fn trim(&self, key: &str, start: i64, stop: i64) -> impl Future<Output = Res<()>> + Send;
}
