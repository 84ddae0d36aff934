use serde::Deserialize;

use plugin_abi::PluginError;

/// The slot's `config` table for postgres.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `postgres://user[:password]@host[:port]/database` (key=value strings work too).
    pub url: String,
    /// The schema holding this namespace's tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The key-value table.
    #[serde(default = "default_table")]
    pub table: String,
    /// The table holding every queue of this namespace.
    #[serde(default = "default_queue_table")]
    pub queue_table: String,
    /// Connections in the instance's pool (open transactions each hold one).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long to wait for a connection from the server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Server-side limit on any one statement.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Longest a transaction may stay open before it is rolled back.
    #[serde(default = "default_max_transaction_ms")]
    pub max_transaction_ms: u64,
    /// Visibility timeout of a plain dequeue (queue_basic).
    #[serde(default = "default_visibility_timeout_ms")]
    pub visibility_timeout_ms: u64,
    /// Deliveries after which an unacknowledged message becomes a dead letter.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
}

fn default_schema() -> String {
    "public".into()
}
fn default_table() -> String {
    "prism_kv".into()
}
fn default_queue_table() -> String {
    "prism_queue".into()
}
fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_statement_timeout_ms() -> u64 {
    5000
}
fn default_max_transaction_ms() -> u64 {
    60_000
}
fn default_visibility_timeout_ms() -> u64 {
    30_000
}
fn default_max_deliveries() -> u32 {
    5
}

/// An SQL identifier we create: lower-case letters, digits and `_`, short enough that
/// the index names derived from it stay under PostgreSQL's 63-byte limit.
fn check_identifier(key: &str, value: &str) -> Result<(), PluginError> {
    let mut chars = value.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_start && valid_rest && value.len() <= 48 {
        Ok(())
    } else {
        Err(PluginError::invalid_argument(format!(
            "{key} = '{value}' is not a usable table or schema name: use 1-48 lower-case letters, digits \
             and '_', starting with a letter or '_'"
        )))
    }
}

impl Config {
    pub fn check(&self) -> Result<(), PluginError> {
        crate::tls::parse(&self.url)?;
        check_identifier("schema", &self.schema)?;
        check_identifier("table", &self.table)?;
        check_identifier("queue_table", &self.queue_table)?;
        if self.table == self.queue_table {
            return Err(PluginError::invalid_argument("table and queue_table must differ"));
        }
        for (name, value) in [
            ("pool_size", self.pool_size as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("max_transaction_ms", self.max_transaction_ms),
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
    use super::check_identifier;

    #[test]
    fn only_plain_identifiers_pass() {
        assert!(check_identifier("table", "prism_kv").is_ok());
        assert!(check_identifier("table", "_t1").is_ok());
        for bad in ["", "1abc", "Upper", "a-b", "a\"b", "a;drop table x", &"x".repeat(49)] {
            assert!(check_identifier("table", bad).is_err(), "{bad:?} should be refused");
        }
    }
}
