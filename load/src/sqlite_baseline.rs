//! The SQLite baseline: one table in a WAL database file with the sqlite plugin's
//! defaults (`synchronous = NORMAL`, a 5 s busy timeout), four connections, every
//! statement on a blocking thread — what a bare service calling SQLite directly does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::Semaphore;

const CONNECTIONS: usize = 4;

pub struct Sqlite {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(connection)
}

impl Sqlite {
    pub fn open(path: &str) -> Result<Sqlite, String> {
        let path = PathBuf::from(path);
        let connection = open(&path).map_err(|e| e.to_string())?;
        connection
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .and_then(|_| {
                connection.execute_batch(
                    "CREATE TABLE IF NOT EXISTS prism_baseline_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)",
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(Sqlite {
            path,
            idle: Arc::new(Mutex::new(vec![connection])),
            permits: Arc::new(Semaphore::new(CONNECTIONS)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (idle, path) = (self.idle.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let popped = idle.lock().unwrap().pop();
            let connection = match popped {
                Some(connection) => connection,
                None => open(&path).map_err(|e| e.to_string())?,
            };
            let result = work(&connection).map_err(|e| e.to_string());
            idle.lock().unwrap().push(connection);
            result
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.run(move |c| {
            c.prepare_cached("SELECT value FROM prism_baseline_kv WHERE key = ?1")?
                .query_row([key.as_bytes()], |row| row.get(0))
                .optional()
        })
        .await
    }

    pub async fn set(&self, key: String, value: bytes::Bytes) -> Result<(), String> {
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO prism_baseline_kv (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(rusqlite::params![key.as_bytes(), &value[..]])
            .map(drop)
        })
        .await
    }

    pub async fn delete(&self, key: String) -> Result<bool, String> {
        self.run(move |c| {
            c.prepare_cached("DELETE FROM prism_baseline_kv WHERE key = ?1")?
                .execute([key.as_bytes()])
                .map(|n| n > 0)
        })
        .await
    }
}
