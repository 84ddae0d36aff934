//! sqlite: key-value (with transactions), lists and work queues in one SQLite database
//! file per namespace, the durable embedded backend.
//!
//! The plugin links the system libsqlite3 rather than a copy of its own: during a hot
//! reload two builds of this plugin run in one process, and two copies of SQLite there
//! would each keep their own table of POSIX locks and corrupt each other's view of the
//! file. With one shared libsqlite3 they are just two connections. The database runs in
//! WAL mode; a commit is on disk (in the log) before the call returns, so a killed
//! gateway loses no acknowledged write (`synchronous = "full"` adds power loss).

#![forbid(unsafe_code)]

mod config;
mod errors;
mod keyvalue;
mod list;
mod queue;
mod schema;
mod store;
mod transactions;
mod writer;

pub use config::{Config, Synchronous};
pub use store::Sqlite;

plugin_abi::export_plugin! {
    driver: Sqlite,
    name: "sqlite",
    description: "SQLite key-value with transactions, lists and queues, in one local database file per namespace",
    connection_format: "path = \"/var/lib/prism/namespace.db\"",
    interfaces: [
        KeyValueBasic, KeyValueTtl, KeyValueScan, KeyValueBatch, KeyValueCas, KeyValueTransactional,
        ListBasic, ListRange,
        QueueBasic, QueueVisibility, QueueDeadLetter, QueueDelayed,
    ],
}
