use std::collections::BTreeMap;

use plugin_abi::PluginError;
use rdkafka::ClientConfig;
use serde::Deserialize;

/// The slot's `config` table for kafka.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Prepended to every stream and topic name, e.g. `"prism.orders."`; empty for none.
    #[serde(default)]
    pub topic_prefix: String,
    /// Partitions of the topics this plugin creates.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Replication factor of the topics this plugin creates.
    #[serde(default = "default_replication")]
    pub replication: u32,
    /// Create missing topics through the admin API on first use; when off, a missing
    /// topic is NOT_FOUND.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Bound on each broker round trip (produce, metadata, commit).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Extra librdkafka settings (e.g. `"security.protocol" = "SSL"`), applied to every client.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_partitions() -> u32 {
    3
}

fn default_replication() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

/// Kafka's topic-name rule: letters, digits, '.', '_', '-', at most 249 characters.
pub(crate) fn valid_topic_chars(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) const MAX_TOPIC_LEN: usize = 249;

impl Config {
    pub(crate) fn check(&self) -> Result<(), PluginError> {
        let invalid = |message: String| Err(PluginError::invalid_argument(message));
        if self.brokers.split(',').any(|b| {
            let b = b.trim();
            b.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        }) {
            return invalid(format!("brokers: '{}' must be host:port[,host:port…]", self.brokers));
        }
        if !valid_topic_chars(&self.topic_prefix) || self.topic_prefix.len() > 100 {
            return invalid(format!(
                "topic_prefix: '{}' may hold only letters, digits, '.', '_' and '-' (at most 100)",
                self.topic_prefix
            ));
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return invalid(format!("partitions = {} is out of range: use 1..=10000", self.partitions));
        }
        if self.replication == 0 || self.replication > 32 {
            return invalid(format!("replication = {} is out of range: use 1..=32", self.replication));
        }
        if self.request_timeout_ms < 100 {
            return invalid("request_timeout_ms must be at least 100".into());
        }
        for key in self.properties.keys() {
            if ["bootstrap.servers", "group.id", "enable.auto.commit"].contains(&key.as_str()) {
                return invalid(format!("properties: '{key}' is set by the plugin itself; remove it"));
            }
        }
        // librdkafka validates names and values (without connecting) as it builds its config.
        self.client_config()
            .create_native_config()
            .map(|_| ())
            .map_err(|e| PluginError::invalid_argument(format!("properties: librdkafka refused them: {e}")))
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("socket.timeout.ms", self.request_timeout_ms.max(10).to_string());
        config.set("log_level", "3");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
