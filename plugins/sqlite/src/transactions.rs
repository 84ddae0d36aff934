//! Transactions that span calls, optimistic: SQLite has one writer at a time, so a
//! transaction holding the write lock between calls would stall every other write of
//! the namespace. Instead a transaction keeps its writes in memory and the version of
//! every key it read; commit checks in one write transaction that none of those keys
//! changed (`Aborted` when one did, so the client retries) and applies the writes, all
//! or none. An abandoned transaction holds no lock, only its buffered writes, and is
//! dropped when found past its timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_abi::{ErrorCode, KeyValueTransactional, PluginError, PluginResult, TransactionId};

use crate::config::Config;
use crate::keyvalue;
use crate::Sqlite;

#[derive(Default)]
struct Open {
    /// The key's value as this transaction will leave it (`None`: deleted).
    writes: HashMap<String, Option<Vec<u8>>>,
    /// The version each key had when this transaction first read it (0: absent).
    reads: HashMap<String, i64>,
    deadline: Option<Instant>,
    timeout: Duration,
}

pub struct Transactions {
    open: Mutex<HashMap<u64, Arc<Mutex<Open>>>>,
    max_writes: usize,
    max_timeout: Duration,
}

fn not_open(tx: TransactionId) -> PluginError {
    PluginError::not_found(format!(
        "transaction {} is not open: it was committed, rolled back, or timed out",
        tx.0
    ))
}

/// Ids are random, so one instance's (or a restarted gateway's) id never names another
/// transaction.
fn new_id() -> PluginResult<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| PluginError::internal(format!("no randomness for an id: {e}")))?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

impl Transactions {
    pub fn new(config: &Config) -> Self {
        Transactions {
            open: Mutex::new(HashMap::new()),
            max_writes: config.max_transaction_writes,
            max_timeout: Duration::from_millis(config.max_transaction_ms),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Mutex<Open>>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        if timeout > self.max_timeout {
            return Err(PluginError::invalid_argument(format!(
                "a transaction may stay open at most {} ms (max_transaction_ms)",
                self.max_timeout.as_millis()
            )));
        }
        let now = Instant::now();
        let mut table = self.table();
        // Abandoned transactions hold only memory; drop them as new ones begin.
        table.retain(|_, open| {
            open.lock().unwrap_or_else(|e| e.into_inner()).deadline.is_some_and(|deadline| deadline > now)
        });
        let id = new_id()?;
        let open = Open { deadline: Some(now + timeout), timeout, ..Open::default() };
        table.insert(id, Arc::new(Mutex::new(open)));
        Ok(TransactionId(id))
    }

    /// The open transaction `tx`, or why it cannot be used.
    fn get(&self, tx: TransactionId) -> PluginResult<Arc<Mutex<Open>>> {
        let open = self.table().get(&tx.0).cloned().ok_or_else(|| not_open(tx))?;
        let timed_out = {
            let state = open.lock().unwrap_or_else(|e| e.into_inner());
            state.deadline.filter(|deadline| *deadline <= Instant::now()).map(|_| state.timeout)
        };
        if let Some(timeout) = timed_out {
            self.table().remove(&tx.0);
            return Err(PluginError::new(
                ErrorCode::Aborted,
                format!(
                    "transaction {} timed out after {} ms and was rolled back",
                    tx.0,
                    timeout.as_millis()
                ),
            ));
        }
        Ok(open)
    }

    fn take(&self, tx: TransactionId) -> PluginResult<Open> {
        let open = self.get(tx)?;
        self.table().remove(&tx.0);
        let mut state = open.lock().unwrap_or_else(|e| e.into_inner());
        Ok(std::mem::take(&mut *state))
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sqlite {
    /// What `key` holds for `tx`: its own write, or the stored value (whose version
    /// is then remembered for the commit's check).
    async fn tx_read(&self, tx: TransactionId, key: &str) -> PluginResult<Option<Vec<u8>>> {
        let open = self.transactions.get(tx)?;
        if let Some(written) = lock(&open).writes.get(key) {
            return Ok(written.clone());
        }
        let owned = key.to_owned();
        // Value and version from one statement: read apart, a commit landing between
        // them would pair an old value with the new version, and the check would pass.
        let found = self.read(move |c, now| keyvalue::get_versioned(c, now, &owned)).await?;
        let version = found.as_ref().map_or(0, |found| found.version as i64);
        lock(&open).reads.entry(key.to_owned()).or_insert(version);
        Ok(found.map(|found| found.value))
    }

    fn tx_write(&self, tx: TransactionId, key: &str, value: Option<Vec<u8>>) -> PluginResult<()> {
        let open = self.transactions.get(tx)?;
        let mut state = lock(&open);
        if state.writes.len() >= self.transactions.max_writes && !state.writes.contains_key(key) {
            return Err(PluginError::resource_exhausted(format!(
                "transaction {} already writes {} keys (max_transaction_writes)",
                tx.0, self.transactions.max_writes
            )));
        }
        state.writes.insert(key.to_owned(), value);
        Ok(())
    }
}

impl KeyValueTransactional for Sqlite {
    async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        self.transactions.begin(timeout)
    }

    async fn tx_get(&self, tx: TransactionId, key: &str) -> PluginResult<Option<Vec<u8>>> {
        self.tx_read(tx, key).await
    }

    async fn tx_set(&self, tx: TransactionId, key: &str, value: Vec<u8>) -> PluginResult<()> {
        self.tx_write(tx, key, Some(value))
    }

    async fn tx_delete(&self, tx: TransactionId, key: &str) -> PluginResult<bool> {
        let existed = self.tx_read(tx, key).await?.is_some();
        self.tx_write(tx, key, None)?;
        Ok(existed)
    }

    async fn commit(&self, tx: TransactionId) -> PluginResult<()> {
        let open = self.transactions.take(tx)?;
        let conflict = self
            .write(move |c, now| {
                for (key, seen) in &open.reads {
                    if keyvalue::version(c, now, key)? != *seen {
                        return Ok(Some(key.clone()));
                    }
                }
                for (key, value) in &open.writes {
                    match value {
                        Some(value) => keyvalue::set(c, key, value, None).map(|_| ())?,
                        None => keyvalue::delete(c, now, key).map(|_| ())?,
                    }
                }
                Ok(None)
            })
            .await?;
        match conflict {
            None => Ok(()),
            Some(key) => Err(PluginError::new(
                ErrorCode::Aborted,
                format!(
                    "transaction {} was rolled back: key '{key}' changed after the transaction read it; retry the transaction",
                    tx.0
                ),
            )
            .with_retryable(true)),
        }
    }

    async fn rollback(&self, tx: TransactionId) -> PluginResult<()> {
        self.transactions.take(tx).map(|_| ())
    }
}
