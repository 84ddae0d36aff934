//! The instance: a few connections to one database file. Every call runs on a blocking
//! thread of the plugin's runtime, so SQLite's file I/O and its wait for another
//! writer never stall the async worker that polls the other calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::{Driver, Health, PluginError, PluginResult};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::config::{Config, Synchronous};
use crate::errors::db_error;
use crate::transactions::Transactions;

/// SQLite 3.35 brought `RETURNING`, which every write here uses.
const OLDEST_SQLITE: i32 = 3_035_000;

/// How often rows past their `expires_at` are deleted (they are invisible at once).
const REAP_EXPIRED_EVERY: Duration = Duration::from_secs(1);

pub struct Sqlite {
    connections: Arc<Connections>,
    pub(crate) config: Config,
    pub(crate) transactions: Transactions,
    expiry_reaper: tokio::task::AbortHandle,
}

/// A pool without a health query per checkout (deadpool-sqlite runs one, a second
/// thread hop per call): a connection to a local file fails only with the file, and the
/// statement that meets the failure reports it.
struct Connections {
    path: PathBuf,
    synchronous: Synchronous,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// One write at a time per instance: SQLite has one writer anyway, and a writer
    /// that finds the lock taken sleeps in its busy handler (1 ms, 2 ms, 5 ms, …) where
    /// a queue here hands over at once. The busy timeout is left for other processes
    /// and the other instance during a reload.
    writer: Arc<Semaphore>,
}

impl Connections {
    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)?;
        connection.busy_timeout(self.busy_timeout)?;
        connection.pragma_update(None, "synchronous", self.synchronous.pragma())?;
        Ok(connection)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        match self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(connection) => Ok(connection),
            None => self.open(),
        }
    }

    fn give_back(&self, connection: Connection) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(connection);
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.expiry_reaper.abort();
    }
}

impl Sqlite {
    /// Runs `work` on a pooled connection on a blocking thread. A connection whose work
    /// panicked is dropped (rolling back anything it had open), not reused.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        let connections = self.connections.clone();
        let permit = connections.permits.clone().acquire_owned().await.map_err(|_| shutting_down())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut connection = connections.take().map_err(db_error)?;
            let result = work(&mut connection).map_err(db_error);
            connections.give_back(connection);
            result
        })
        .await
        .map_err(|_| PluginError::internal("sqlite: a database call panicked"))?
    }

    /// Runs `work` in a write transaction, taken at once (`BEGIN IMMEDIATE`) so two
    /// writers queue for the lock instead of failing on an upgrade; `now` is read after
    /// the lock is held.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        let turn = self.connections.writer.clone().acquire_owned().await.map_err(|_| shutting_down())?;
        self.run(move |connection| {
            let _turn = turn;
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let result = work(&transaction, plugin_abi::unix_millis())?;
            transaction.commit()?;
            Ok(result)
        })
        .await
    }

    /// Runs a read outside any transaction (each statement sees one snapshot).
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        self.run(move |connection| work(connection, plugin_abi::unix_millis())).await
    }

    /// Runs several reads on one snapshot (a read transaction, never committed).
    pub(crate) async fn read_snapshot<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        self.run(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Deferred)?;
            work(&transaction, plugin_abi::unix_millis())
        })
        .await
    }
}

impl Driver for Sqlite {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }

    fn check(config: &Config) -> PluginResult<()> {
        config.check()
    }

    async fn create(config: Config) -> PluginResult<Self> {
        if rusqlite::version_number() < OLDEST_SQLITE {
            return Err(PluginError::failed_precondition(format!(
                "sqlite: the system's libsqlite3 is {}; this plugin needs 3.35 or later",
                rusqlite::version()
            )));
        }
        let path = PathBuf::from(&config.path);
        if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(directory).map_err(|error| {
                PluginError::unavailable(format!(
                    "sqlite: cannot create the directory {} for {}: {error}",
                    directory.display(),
                    path.display()
                ))
            })?;
        }
        let connections = Arc::new(Connections {
            path: path.clone(),
            synchronous: config.synchronous,
            busy_timeout: Duration::from_millis(config.busy_timeout_ms),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.pool_size)),
            writer: Arc::new(Semaphore::new(1)),
        });
        let schema = connections.clone();
        tokio::task::spawn_blocking(move || {
            let connection = schema.open().map_err(|error| opening(&path, db_error(error)))?;
            crate::schema::create(&connection).map_err(|error| opening(&path, error))?;
            schema.give_back(connection);
            Ok::<_, PluginError>(())
        })
        .await
        .map_err(|_| PluginError::internal("sqlite: creating the schema panicked"))??;
        let expiry_reaper = tokio::spawn(reap_expired(Arc::downgrade(&connections))).abort_handle();
        let transactions = Transactions::new(&config);
        Ok(Sqlite { connections, config, transactions, expiry_reaper })
    }

    async fn health(&self) -> Health {
        match self
            .run(|connection| {
                connection.query_row("SELECT count(*) FROM (SELECT 1 FROM prism_kv LIMIT 1)", [], |_| Ok(()))
            })
            .await
        {
            Ok(()) => Health::serving(),
            Err(error) => Health::unhealthy(error.message().to_owned()),
        }
    }

    async fn shutdown(&self) {
        self.connections.writer.close();
        self.connections.permits.close();
        let connections = self.connections.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let idle = std::mem::take(&mut *connections.idle.lock().unwrap_or_else(|e| e.into_inner()));
            drop(idle);
        })
        .await;
    }
}

fn shutting_down() -> PluginError {
    PluginError::unavailable("sqlite: the instance is shutting down")
}

fn opening(path: &std::path::Path, error: PluginError) -> PluginError {
    PluginError::new(error.code(), format!("{} (database {})", error.message(), path.display()))
}

/// Deletes expired rows every second, 500 per statement, so no write waits long behind it.
async fn reap_expired(connections: std::sync::Weak<Connections>) {
    const BATCH: usize = 500;
    loop {
        tokio::time::sleep(REAP_EXPIRED_EVERY).await;
        let Some(connections) = connections.upgrade() else { return };
        let Ok(turn) = connections.writer.clone().acquire_owned().await else { return };
        let Ok(permit) = connections.permits.clone().acquire_owned().await else { return };
        let _ = tokio::task::spawn_blocking(move || {
            let _permits = (turn, permit);
            let Ok(connection) = connections.take() else { return };
            while let Ok(BATCH) = connection.execute(
                "DELETE FROM prism_kv WHERE rowid IN \
                 (SELECT rowid FROM prism_kv WHERE expires_at <= ?1 LIMIT 500)",
                [plugin_abi::unix_millis()],
            ) {}
            connections.give_back(connection);
        })
        .await;
    }
}
