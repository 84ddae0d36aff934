use redis::IntoConnectionInfo;
use serde::Deserialize;

use plugin_abi::PluginError;

/// The slot's `config` table for redis.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every Redis key this instance uses; give each namespace its own.
    #[serde(default)]
    pub key_prefix: String,
    /// How long to wait for a connection (at start and on every reconnect).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long one command may take before the call fails with UNAVAILABLE.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// How often the sweeper drops index entries of expired keys.
    #[serde(default = "default_sweep_interval_ms")]
    pub sweep_interval_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_command_timeout_ms() -> u64 {
    1000
}

fn default_sweep_interval_ms() -> u64 {
    60_000
}

impl Config {
    pub fn check(&self) -> Result<(), PluginError> {
        if self.url.starts_with("rediss://") {
            return Err(PluginError::invalid_argument(
                "url: rediss:// (TLS) is not supported by this build of the redis plugin; use redis:// \
                 (over a private network or a TLS tunnel)",
            ));
        }
        if !self.url.starts_with("redis://") {
            return Err(PluginError::invalid_argument(format!(
                "url: '{}' is not a Redis URL; use redis://[user:password@]host:port[/db]",
                self.url
            )));
        }
        self.url.as_str().into_connection_info().map_err(|e| {
            PluginError::invalid_argument(format!("url: '{}' is not a valid Redis URL: {e}", self.url))
        })?;
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("command_timeout_ms", self.command_timeout_ms),
            ("sweep_interval_ms", self.sweep_interval_ms),
        ] {
            if value == 0 {
                return Err(PluginError::invalid_argument(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}
