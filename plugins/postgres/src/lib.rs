//! postgres: key-value (with transactions) and work queues on PostgreSQL.
//!
//! Tables, created on first use (`CREATE … IF NOT EXISTS` under an advisory lock):
//! - `{schema}.{table}`: `key BYTEA PRIMARY KEY, value BYTEA, version BIGINT, expires_at
//!   TIMESTAMPTZ NULL`. Keys are stored as UTF-8 bytes so ordering is bytewise and a
//!   prefix scan is an index range. A row past `expires_at` is invisible at once and
//!   deleted by a reaper within about a second, 500 rows per statement.
//! - `{schema}.{queue_table}`: one row per message of every queue of the namespace;
//!   dequeue claims rows with `FOR UPDATE SKIP LOCKED`, so concurrent consumers never
//!   get the same message while it is invisible.
//!
//! Identifiers come only from the slot config, are validated and always quoted; request
//! data only ever travels as bound parameters.

#![forbid(unsafe_code)]

mod config;
mod errors;
mod keyvalue;
mod queue;
mod store;
mod tls;
mod transactions;

pub use config::Config;
pub use store::Postgres;

plugin_abi::export_plugin! {
    driver: Postgres,
    name: "postgres",
    description: "PostgreSQL key-value with transactions, and queues with visibility timeouts and dead letters",
    connection_format: "postgres://user[:password]@host[:port]/database",
    interfaces: [
        KeyValueBasic, KeyValueTtl, KeyValueScan, KeyValueBatch, KeyValueCas, KeyValueTransactional,
        QueueBasic, QueueVisibility, QueueDeadLetter, QueueDelayed,
    ],
}
