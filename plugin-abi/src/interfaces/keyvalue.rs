//! The key-value family: basic, TTL, scan, batch, compare-and-swap, transactions.
//! Each trait is the interface's one declaration; `#[interface]` generates its FFI
//! object, adapter, host handle and remote calls (see plugin-abi-macros).

use std::sync::Arc;
use std::time::Duration;

use crate::{interface, CasResult, Driver, Feed, KeyTtl, PluginResult, ScanPage, TransactionId, Versioned};

/// `keyvalue_basic`: set/get/delete/exists. Set replaces the value and removes any TTL.
#[interface]
pub trait KeyValueBasic: Driver {
    async fn get(&self, key: &str) -> PluginResult<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: Vec<u8>) -> PluginResult<()>;
    /// Returns whether a key was deleted.
    async fn delete(&self, key: &str) -> PluginResult<bool>;
    async fn exists(&self, key: &str) -> PluginResult<bool>;
}

/// `keyvalue_ttl`: keys that expire. An expired key is never returned, counted or scanned.
#[interface]
pub trait KeyValueTtl: Driver {
    async fn set_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> PluginResult<()>;
    /// Returns false when the key does not exist.
    async fn expire(&self, key: &str, ttl: Duration) -> PluginResult<bool>;
    async fn get_ttl(&self, key: &str) -> PluginResult<KeyTtl>;
    /// Returns true when a TTL was removed.
    async fn persist(&self, key: &str) -> PluginResult<bool>;
}

/// `keyvalue_scan`: prefix scan with an opaque cursor, and count.
#[interface]
pub trait KeyValueScan: Driver {
    /// A key present for the whole scan is returned exactly once across pages.
    async fn scan(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> PluginResult<ScanPage>;
    async fn count(&self, prefix: &str) -> PluginResult<u64>;
    /// Every entry under `prefix`, page by page; the host reads it with bounded
    /// read-ahead. The default pages through `scan`; a driver with a native cursor may
    /// override it.
    fn scan_stream(self: Arc<Self>, prefix: &str) -> Feed<(String, Vec<u8>)> {
        scan_pages(self, prefix.to_owned())
    }
}

/// `KeyValueScan::scan_stream`'s default: pages of `scan`, handed out entry by entry.
fn scan_pages<D: KeyValueScan>(driver: Arc<D>, prefix: String) -> Feed<(String, Vec<u8>)> {
    const PAGE: u32 = 64;
    struct Scan<D> {
        driver: Arc<D>,
        prefix: String,
        page: std::vec::IntoIter<(String, Vec<u8>)>,
        /// `None` once the last page was fetched.
        cursor: Option<Option<String>>,
    }
    let start = Scan { driver, prefix, page: Vec::new().into_iter(), cursor: Some(None) };
    Feed::unfold(start, |mut scan| async move {
        loop {
            if let Some(entry) = scan.page.next() {
                return Some((Ok(entry), scan));
            }
            let cursor = scan.cursor.take()?;
            match scan.driver.scan(&scan.prefix, cursor.as_deref(), PAGE).await {
                Ok(page) => {
                    scan.cursor = page.next_cursor.map(Some);
                    scan.page = page.entries.into_iter();
                }
                Err(error) => return Some((Err(error), scan)),
            }
        }
    })
}

/// `keyvalue_batch`: per-item results, not atomic.
#[interface]
pub trait KeyValueBatch: Driver {
    /// One entry per requested key, in request order.
    async fn batch_get(&self, keys: Vec<String>) -> PluginResult<Vec<Option<Vec<u8>>>>;
    async fn batch_set(&self, entries: Vec<(String, Vec<u8>)>) -> PluginResult<Vec<PluginResult<()>>>;
    /// Whether each key was deleted, in request order.
    async fn batch_delete(&self, keys: Vec<String>) -> PluginResult<Vec<bool>>;
}

/// `keyvalue_cas`: per-key versions starting at 1 and growing on every write.
#[interface]
pub trait KeyValueCas: Driver {
    async fn get_versioned(&self, key: &str) -> PluginResult<Option<Versioned>>;
    /// `expected_version` 0 means "create only if absent". `ttl` None means no expiry.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> PluginResult<CasResult>;
    async fn delete_if_version(&self, key: &str, expected_version: u64) -> PluginResult<CasResult>;
}

/// `keyvalue_transactional`: operations inside a transaction apply in order, all or none.
/// A transaction not committed within its timeout is rolled back by the plugin.
#[interface]
pub trait KeyValueTransactional: Driver {
    async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId>;
    async fn tx_get(&self, tx: TransactionId, key: &str) -> PluginResult<Option<Vec<u8>>>;
    async fn tx_set(&self, tx: TransactionId, key: &str, value: Vec<u8>) -> PluginResult<()>;
    /// Returns whether a key was deleted.
    async fn tx_delete(&self, tx: TransactionId, key: &str) -> PluginResult<bool>;
    /// An unknown, finished or timed-out transaction is `NotFound`.
    async fn commit(&self, tx: TransactionId) -> PluginResult<()>;
    /// An unknown, finished or timed-out transaction is `NotFound`, as for `commit`.
    async fn rollback(&self, tx: TransactionId) -> PluginResult<()>;
}
