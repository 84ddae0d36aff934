//! The tables, created on first use. One database file holds one namespace.
//!
//! - `prism_kv`: keys as BLOBs (so ordering is bytewise and a prefix scan is an index
//!   range), a version from `prism_counters` that grows on every write and is never
//!   reused, and `expires_at` in Unix milliseconds.
//! - `prism_list`: one row per list item, ordered by `position`; pushes on the left take
//!   positions below the smallest, on the right above the largest.
//! - `prism_queue`: one row per message of every queue; `AUTOINCREMENT` so an id (and so
//!   a receipt) is never handed out twice, even after the newest message is acked.

use plugin_abi::{PluginError, PluginResult};
use rusqlite::Connection;

use crate::errors::db_error;

pub fn create(connection: &Connection) -> PluginResult<()> {
    // WAL: readers never wait for the writer, and a commit is one append to the log.
    let mode: String =
        connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(PluginError::failed_precondition(format!(
            "sqlite: the database cannot use write-ahead logging (journal_mode stayed {mode}); put it on a local file system"
        )));
    }
    connection
        .execute_batch(
            "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS prism_counters (
             name TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS prism_kv (
             key BLOB PRIMARY KEY,
             value BLOB NOT NULL,
             version INTEGER NOT NULL,
             expires_at INTEGER NULL
         );
         CREATE INDEX IF NOT EXISTS prism_kv_expiry ON prism_kv (expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE IF NOT EXISTS prism_list (
             key BLOB NOT NULL,
             position INTEGER NOT NULL,
             value BLOB NOT NULL,
             PRIMARY KEY (key, position)
         );
         CREATE TABLE IF NOT EXISTS prism_queue (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             queue TEXT NOT NULL,
             payload BLOB NOT NULL,
             enqueued_at INTEGER NOT NULL,
             visible_at INTEGER NOT NULL,
             deliveries INTEGER NOT NULL DEFAULT 0,
             receipt TEXT NULL,
             dead_at INTEGER NULL
         );
         CREATE INDEX IF NOT EXISTS prism_queue_ready ON prism_queue (queue, id) WHERE dead_at IS NULL;
         CREATE INDEX IF NOT EXISTS prism_queue_dead ON prism_queue (queue, id) WHERE dead_at IS NOT NULL;
         COMMIT;",
        )
        .map_err(db_error)
}
