use redis::IntoConnectionInfo;
use serde::Deserialize;

use plugin_abi::PluginError;

/// The slot's `config` table for redis.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. With `cluster`, the seed nodes, comma-separated.
    pub url: String,
    /// The url names nodes of a Redis Cluster: commands follow the cluster's slot map, and every key of this instance carries the hash tag `{key_prefix}`, so one namespace lives in one slot.
    #[serde(default)]
    pub cluster: bool,
    /// With `rediss://`: a PEM CA file to verify the server with (default: system roots).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// With `rediss://`: a PEM client certificate, for servers that require one.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
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
        let tls = self.url.starts_with("rediss://");
        if !tls && !self.url.starts_with("redis://") {
            return Err(PluginError::invalid_argument(format!(
                "url: '{}' is not a Redis URL; use redis://[user:password@]host:port[/db] (rediss:// for TLS)",
                self.url
            )));
        }
        let tls_files = [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file];
        if !tls && tls_files.iter().any(|file| file.is_some()) {
            return Err(PluginError::invalid_argument(
                "tls_ca_file, tls_cert_file and tls_key_file need a rediss:// url",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(PluginError::invalid_argument("tls_cert_file and tls_key_file go together"));
        }
        if self.cluster && self.key_prefix.is_empty() {
            return Err(PluginError::invalid_argument(
                "key_prefix: a Redis Cluster needs one: it is the hash tag that keeps a namespace's keys in one slot (set e.g. key_prefix = \"orders:\")",
            ));
        }
        if self.cluster && tls {
            return Err(PluginError::invalid_argument(
                "cluster: TLS to a Redis Cluster is not supported yet; use redis:// urls",
            ));
        }
        if !self.cluster && self.url.contains(',') {
            return Err(PluginError::invalid_argument(
                "url: several urls name a Redis Cluster's nodes: set cluster = true, or give one url",
            ));
        }
        for url in self.urls() {
            url.into_connection_info().map_err(|e| {
                PluginError::invalid_argument(format!("url: '{url}' is not a valid Redis URL: {e}"))
            })?;
        }
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

impl Config {
    /// The urls of `url`: one server, or a cluster's seed nodes.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|url| !url.is_empty()).collect()
    }

    /// The client for `url` (for a cluster, its first seed node, where pub/sub subscribes
    /// when it answers: a cluster forwards every PUBLISH to every node), with the
    /// configured CA and client certificate for TLS.
    pub fn client(&self) -> Result<redis::Client, PluginError> {
        let url = self.urls().first().copied().unwrap_or_default();
        let read = |key: &str, path: &String| {
            std::fs::read(path)
                .map_err(|e| PluginError::invalid_argument(format!("{key}: cannot read {path}: {e}")))
        };
        let invalid = |e: redis::RedisError| PluginError::invalid_argument(format!("url: {e}"));
        if self.tls_ca_file.is_none() && self.tls_cert_file.is_none() {
            return redis::Client::open(url).map_err(invalid);
        }
        let root_cert = self.tls_ca_file.as_ref().map(|path| read("tls_ca_file", path)).transpose()?;
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("tls_cert_file", cert)?,
                client_key: read("tls_key_file", key)?,
            }),
            _ => None,
        };
        redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert }).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_cluster_needs_a_key_prefix_for_its_hash_tag() {
        let without = config("url = \"redis://a:6379,redis://b:6379\"\ncluster = true");
        let error = without.check().unwrap_err();
        assert!(error.message().contains("key_prefix"), "{}", error.message());
        let with = config("url = \"redis://a:6379,redis://b:6379\"\ncluster = true\nkey_prefix = \"p:\"");
        assert!(with.check().is_ok());
        let list_without_cluster = config("url = \"redis://a:6379,redis://b:6379\"\nkey_prefix = \"p:\"");
        assert!(list_without_cluster.check().unwrap_err().message().contains("cluster = true"));
    }
}
