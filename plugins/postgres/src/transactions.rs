//! Transactions that span calls: each holds a pooled connection inside `BEGIN … COMMIT`
//! until it is committed, rolled back, or reaped after its timeout.

use plugin_abi::PluginResult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use plugin_abi::{KeyValueTransactional, PluginError, TransactionId};

use crate::errors::{db_error, pool_error};
use crate::keyvalue::Statements;
use crate::Postgres;

struct Open {
    client: Object,
    deadline: Instant,
    timeout: Duration,
}

type Slot = Arc<tokio::sync::Mutex<Option<Open>>>;

pub struct Transactions {
    pool: Pool,
    next_id: AtomicU64,
    open: std::sync::Mutex<HashMap<u64, Slot>>,
}

fn not_open(tx: TransactionId) -> PluginError {
    PluginError::not_found(format!(
        "transaction {} is not open: it was committed, rolled back, or timed out",
        tx.0
    ))
}

/// Ends a transaction. A connection whose ROLLBACK/COMMIT failed is closed rather than
/// returned to the pool, so no half-finished transaction is ever reused.
async fn finish(open: Open, statement: &str) -> PluginResult<()> {
    match open.client.batch_execute(statement).await {
        Ok(()) => Ok(()),
        Err(error) => {
            drop(Object::take(open.client));
            Err(db_error(error))
        }
    }
}

impl Transactions {
    pub fn new(pool: Pool) -> Self {
        Transactions { pool, next_id: AtomicU64::new(1), open: std::sync::Mutex::new(HashMap::new()) }
    }

    fn slot(&self, tx: TransactionId) -> Option<Slot> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(&tx.0).cloned()
    }

    fn take_slot(&self, tx: TransactionId) -> Option<Slot> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&tx.0)
    }

    async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.batch_execute("BEGIN").await.map_err(db_error)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let open = Open { client, deadline: Instant::now() + timeout, timeout };
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(tokio::sync::Mutex::new(Some(open))));
        Ok(TransactionId(id))
    }

    /// Runs `work` on the transaction's connection; a failed statement aborts the
    /// transaction in PostgreSQL, so it is rolled back and closed here too.
    async fn with<T>(
        &self,
        tx: TransactionId,
        work: impl AsyncFnOnce(&deadpool_postgres::ClientWrapper) -> PluginResult<T>,
    ) -> PluginResult<T> {
        let slot = self.slot(tx).ok_or_else(|| not_open(tx))?;
        let mut guard = slot.lock().await;
        let Some(open) = guard.as_ref() else { return Err(not_open(tx)) };
        if Instant::now() >= open.deadline {
            let timeout = open.timeout;
            let open = guard.take().expect("checked above");
            self.take_slot(tx);
            let _ = finish(open, "ROLLBACK").await;
            return Err(PluginError::new(
                plugin_abi::ErrorCode::Aborted,
                format!(
                    "transaction {} timed out after {} ms and was rolled back",
                    tx.0,
                    timeout.as_millis()
                ),
            ));
        }
        let result = work(&open.client).await;
        if result.is_err() {
            let open = guard.take().expect("checked above");
            self.take_slot(tx);
            let _ = finish(open, "ROLLBACK").await;
        }
        result
    }

    async fn end(&self, tx: TransactionId, statement: &str) -> PluginResult<()> {
        let slot = self.take_slot(tx).ok_or_else(|| not_open(tx))?;
        let open = slot.lock().await.take().ok_or_else(|| not_open(tx))?;
        finish(open, statement).await
    }

    fn expired(&self) -> Vec<u64> {
        let now = Instant::now();
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .filter(|(_, slot)| {
                slot.try_lock().is_ok_and(|open| open.as_ref().is_some_and(|o| o.deadline <= now))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    pub async fn rollback_all(&self) {
        let ids: Vec<u64> = self.open.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for id in ids {
            let _ = self.end(TransactionId(id), "ROLLBACK").await;
        }
    }
}

/// Rolls back transactions left open past their timeout.
pub(crate) async fn reap(transactions: Weak<Transactions>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(transactions) = transactions.upgrade() else { return };
        for id in transactions.expired() {
            let _ = transactions.end(TransactionId(id), "ROLLBACK").await;
        }
    }
}

impl KeyValueTransactional for Postgres {
    async fn begin(&self, timeout: Duration) -> PluginResult<TransactionId> {
        let cap = Duration::from_millis(self.config.max_transaction_ms);
        if timeout > cap {
            return Err(PluginError::invalid_argument(format!(
                "a transaction may stay open at most {} ms (max_transaction_ms)",
                cap.as_millis()
            )));
        }
        self.transactions.begin(timeout).await
    }

    async fn tx_get(&self, tx: TransactionId, key: &str) -> PluginResult<Option<Vec<u8>>> {
        let statements = Statements { kv: &self.sql.kv };
        self.transactions.with(tx, async |client| statements.get(client, key).await).await
    }

    async fn tx_set(&self, tx: TransactionId, key: &str, value: Vec<u8>) -> PluginResult<()> {
        let statements = Statements { kv: &self.sql.kv };
        self.transactions.with(tx, async |client| statements.set(client, key, &value).await.map(|_| ())).await
    }

    async fn tx_delete(&self, tx: TransactionId, key: &str) -> PluginResult<bool> {
        let statements = Statements { kv: &self.sql.kv };
        self.transactions.with(tx, async |client| statements.delete(client, key).await).await
    }

    async fn commit(&self, tx: TransactionId) -> PluginResult<()> {
        self.transactions.end(tx, "COMMIT").await
    }

    async fn rollback(&self, tx: TransactionId) -> PluginResult<()> {
        self.transactions.end(tx, "ROLLBACK").await
    }
}
