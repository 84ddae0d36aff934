use serde::{Deserialize, Serialize};

use plugin_abi::PluginError;

/// The slot's `config` table for sqlite.
#[derive(Debug, Clone, Deserialize, Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database file, created with its directory on first use. A relative path starts at the gateway's working directory; write `${config_dir}/data/x.db` for one next to plugins.toml.
    pub path: String,
    /// When a commit waits for the disk: `normal` survives a crash of the process, `full` also a power loss.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Reading connections, used in parallel; writes go through one writer connection of their own.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Read a key (Get, Exists) on the calling thread when a connection is idle, instead of a blocking thread: a cached page reads in microseconds, less than the thread hops around it. Turn off for a database much larger than memory, whose reads wait for the disk.
    #[serde(default = "default_inline_point_reads")]
    pub inline_point_reads: bool,
    /// How long a write waits for another writer (another instance, during a reload) before it fails.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// Longest a transaction may stay open before it is dropped (Mutate asks for 30000).
    #[serde(default = "default_max_transaction_ms")]
    pub max_transaction_ms: u64,
    /// Most writes one transaction may hold before its commit.
    #[serde(default = "default_max_transaction_writes")]
    pub max_transaction_writes: usize,
    /// Visibility timeout of a plain dequeue (queue_basic).
    #[serde(default = "default_visibility_timeout_ms")]
    pub visibility_timeout_ms: u64,
    /// Deliveries after which an unacknowledged message becomes a dead letter.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, plugin_abi::schemars::JsonSchema,
)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// No fsync at all: a crash of the machine can lose or corrupt recent commits.
    Off,
    /// fsync at checkpoints: every commit survives the process being killed; a power
    /// loss can lose the last commits, never corrupt the file.
    #[default]
    Normal,
    /// fsync on every commit: commits survive a power loss too.
    Full,
    /// `full`, and the directory is synced after the journal changes.
    Extra,
}

impl Synchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

fn default_pool_size() -> usize {
    4
}
fn default_inline_point_reads() -> bool {
    true
}
fn default_busy_timeout_ms() -> u64 {
    5000
}
fn default_max_transaction_ms() -> u64 {
    60_000
}
fn default_max_transaction_writes() -> usize {
    10_000
}
fn default_visibility_timeout_ms() -> u64 {
    30_000
}
fn default_max_deliveries() -> u32 {
    5
}

impl Config {
    pub fn check(&self) -> Result<(), PluginError> {
        if self.path.trim().is_empty() {
            return Err(PluginError::invalid_argument(
                "path is empty: name the database file, e.g. path = \"${config_dir}/data/default.db\"",
            ));
        }
        if self.path == ":memory:" || self.path.starts_with("file:") {
            return Err(PluginError::invalid_argument(format!(
                "path = '{}' is not a file: sqlite keeps a namespace in a database file (use memstore for data that need not last)",
                self.path
            )));
        }
        for (name, value) in [
            ("pool_size", self.pool_size as u64),
            ("busy_timeout_ms", self.busy_timeout_ms),
            ("max_transaction_ms", self.max_transaction_ms),
            ("max_transaction_writes", self.max_transaction_writes as u64),
            ("visibility_timeout_ms", self.visibility_timeout_ms),
            ("max_deliveries", u64::from(self.max_deliveries)),
        ] {
            if value == 0 {
                return Err(PluginError::invalid_argument(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_durable_against_a_killed_process() {
        let config = parse("path = \"/tmp/x.db\"");
        assert_eq!(config.synchronous, Synchronous::Normal);
        assert!(config.check().is_ok());
    }

    #[test]
    fn in_memory_and_empty_paths_are_refused_with_a_fix() {
        for path in ["", ":memory:", "file:x?mode=memory"] {
            let error = parse(&format!("path = \"{path}\"")).check().unwrap_err();
            assert!(error.message().contains("path"), "{error}");
        }
        let error = parse("path = \"/tmp/x.db\"\npool_size = 0").check().unwrap_err();
        assert!(error.message().contains("pool_size"), "{error}");
    }
}
