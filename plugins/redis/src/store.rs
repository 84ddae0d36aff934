use std::time::Duration;

use plugin_abi::{Driver, Health, PluginError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::connection::Connection;

use crate::errors::plugin_error;
use crate::Config;

pub struct Redis {
    pub(crate) client: redis::Client,
    /// A cluster's other seed nodes, for pub/sub when the first does not answer.
    pub(crate) other_seeds: Vec<redis::Client>,
    pub(crate) connection: Connection,
    /// Distinguishes this instance's message ids from other publishers'.
    pub(crate) instance: u64,
    pub(crate) keys: KeyNames,
    sweeper: tokio::task::AbortHandle,
}

/// The Redis key names this instance uses, all under the configured prefix.
#[derive(Clone)]
pub(crate) struct KeyNames {
    prefix: String,
    pub index: String,
    /// The version counter: every write takes the next value, so a key deleted (or
    /// expired) and written again never gets back a version it had.
    pub versions: String,
    /// Prefix of pub/sub channel names.
    pub channels: String,
}

impl KeyNames {
    /// In a cluster every key carries the hash tag `{prefix}`: a write's script touches
    /// the value, the index and the version counter, which must share one slot.
    fn new(prefix: &str, cluster: bool) -> Self {
        let prefix = if cluster { format!("{{{prefix}}}") } else { prefix.to_owned() };
        let prefix = prefix.as_str();
        KeyNames {
            prefix: prefix.to_owned(),
            index: format!("{prefix}i"),
            versions: format!("{prefix}n"),
            channels: format!("{prefix}p:"),
        }
    }

    pub fn value(&self, key: &str) -> String {
        format!("{}k:{key}", self.prefix)
    }

    pub fn list(&self, key: &str) -> String {
        format!("{}l:{key}", self.prefix)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl Driver for Redis {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }

    fn check(config: &Config) -> Result<(), PluginError> {
        config.check()
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let client = config.client()?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(config.command_timeout_ms)))
            // Reconnect in the background with a short backoff; calls fail fast meanwhile.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let unreachable = |e: redis::RedisError| {
            PluginError::unavailable(format!("cannot connect to {}: {e}", redacted(&config.url)))
        };
        let connection = if config.cluster {
            let cluster = redis::cluster::ClusterClientBuilder::new(config.urls())
                .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
                .response_timeout(Duration::from_millis(config.command_timeout_ms))
                .build()
                .map_err(|e| PluginError::invalid_argument(format!("url: {e}")))?;
            Connection::Cluster(cluster.get_async_connection().await.map_err(unreachable)?)
        } else {
            Connection::Single(
                ConnectionManager::new_with_config(client.clone(), settings).await.map_err(unreachable)?,
            )
        };
        let keys = KeyNames::new(&config.key_prefix, config.cluster);
        let sweeper = tokio::spawn(crate::keyvalue::sweep_index(
            connection.clone(),
            keys.clone(),
            Duration::from_millis(config.sweep_interval_ms),
        ))
        .abort_handle();
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let other_seeds = match config.cluster {
            true => config.urls()[1..].iter().filter_map(|url| redis::Client::open(*url).ok()).collect(),
            false => Vec::new(),
        };
        Ok(Redis { client, other_seeds, connection, instance, keys, sweeper })
    }

    async fn health(&self) -> Health {
        let mut connection = self.connection.clone();
        match redis::cmd("PING").query_async::<String>(&mut connection).await {
            Ok(_) => Health::serving(),
            Err(error) => Health::unhealthy(plugin_error(error).message().to_owned()),
        }
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(super::redacted("redis://user:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(super::redacted("redis://host:6379"), "redis://host:6379");
    }
}
