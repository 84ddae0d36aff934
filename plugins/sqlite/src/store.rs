//! The instance: a few reading connections to one database file, each read run on a
//! blocking thread of the plugin's runtime so SQLite's file I/O never stalls the async
//! worker that polls the other calls, and one writer thread (`writer.rs`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::{Driver, Health, PluginError, PluginResult};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::writer::{Batch, Writer};
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
    writer: Writer,
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

    /// An idle connection, if one is open and unused (never opens one).
    fn idle_one(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
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

    /// Runs `work` in the writer's next transaction (see `writer.rs`), with its time.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Batch<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        self.writer.write(work).await
    }

    /// Runs a read outside any transaction (each statement sees one snapshot).
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        self.run(move |connection| work(connection, plugin_abi::unix_millis())).await
    }

    /// Runs a read of one key on the calling thread when a connection is idle and
    /// `inline_point_reads` is on: a primary-key lookup of a cached page costs a few
    /// microseconds, less than the two thread hops of [`Sqlite::read`], which it falls
    /// back to when every connection is busy.
    pub(crate) async fn read_point<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        if self.config.inline_point_reads {
            let connections = &self.connections;
            if let Ok(_permit) = connections.permits.try_acquire() {
                if let Some(connection) = connections.idle_one() {
                    // A panic unwinds past here and drops the connection, as `run` does.
                    let result = work(&connection, plugin_abi::unix_millis()).map_err(db_error);
                    connections.give_back(connection);
                    return result;
                }
            }
        }
        self.read(work).await
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
        });
        let schema = connections.clone();
        let writing = tokio::task::spawn_blocking(move || {
            let connection = schema.open().map_err(|error| opening(&path, db_error(error)))?;
            crate::schema::create(&connection).map_err(|error| opening(&path, error))?;
            Ok::<_, PluginError>(connection)
        })
        .await
        .map_err(|_| PluginError::internal("sqlite: creating the schema panicked"))??;
        let writer = Writer::start(writing)?;
        let expiry_reaper = tokio::spawn(reap_expired(writer.clone())).abort_handle();
        let transactions = Transactions::new(&config);
        Ok(Sqlite { connections, writer, config, transactions, expiry_reaper })
    }

    async fn health(&self) -> Health {
        if self.writer.stopped() {
            // Every write would fail; unhealthy makes the host recreate the instance.
            return Health::unhealthy("sqlite: the writer thread stopped");
        }
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

/// Deletes expired rows every second, 500 per write, so no batch waits long behind it.
async fn reap_expired(writer: Writer) {
    const BATCH: usize = 500;
    loop {
        tokio::time::sleep(REAP_EXPIRED_EVERY).await;
        let reap = |c: &Batch<'_>, now: i64| {
            c.execute(
                "DELETE FROM prism_kv WHERE rowid IN \
                 (SELECT rowid FROM prism_kv WHERE expires_at <= ?1 LIMIT 500)",
                [now],
            )
        };
        while let Ok(BATCH) = writer.write(reap).await {}
    }
}
