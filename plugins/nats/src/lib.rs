//! nats: pub/sub on NATS core subjects. Prism's topic syntax is NATS's own (`.`-separated
//! tokens, `*` and a final `>`), so patterns pass through unchanged under the configured
//! `subject_prefix`. Metadata travels as NATS headers, next to the message id and
//! publish time (`Prism-Message-Id`, `Prism-Published-At`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use plugin_abi::{Driver, Health, Message, PluginError, PubSubBasic, PubSubWildcards, Subscription};
use serde::Deserialize;

const ID_HEADER: &str = "Prism-Message-Id";
const TIME_HEADER: &str = "Prism-Published-At";

/// The slot's `config` table for nats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    /// Prepended to every subject, e.g. `"prism.orders."`; empty for none.
    #[serde(default)]
    pub subject_prefix: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

pub struct Nats {
    client: async_nats::Client,
    prefix: String,
    instance: u64,
    next_id: AtomicU64,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(format!("nats: {what}: {error}"))
}

fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl Driver for Nats {
    type Config = Config;

    fn check(config: &Config) -> Result<(), PluginError> {
        for url in config.url.split(',') {
            let url = url.trim();
            if !(url.starts_with("nats://") || url.starts_with("tls://"))
                || url.parse::<async_nats::ServerAddr>().is_err()
            {
                return Err(PluginError::invalid_argument(format!(
                    "url: '{url}' is not a NATS server address; use nats://host:port"
                )));
            }
        }
        let prefix = &config.subject_prefix;
        if !prefix.is_empty() {
            let valid =
                prefix.ends_with('.') && plugin_abi::topics::check_topic(&prefix[..prefix.len() - 1]).is_ok();
            if !valid {
                return Err(PluginError::invalid_argument(format!(
                    "subject_prefix: '{prefix}' must be dot-separated tokens ending in '.', e.g. \"prism.orders.\""
                )));
            }
        }
        if config.connect_timeout_ms == 0 {
            return Err(PluginError::invalid_argument("connect_timeout_ms must be at least 1"));
        }
        Ok(())
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .name("prism")
            .connect(config.url.as_str())
            .await
            .map_err(|e| unavailable(&format!("cannot connect to {}", config.url), e))?;
        let instance =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default();
        Ok(Nats { client, prefix: config.subject_prefix, instance, next_id: AtomicU64::new(1) })
    }

    async fn health(&self) -> Health {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Health::serving(),
            state => Health::unhealthy(format!("nats connection is {state}")),
        }
    }
}

impl Nats {
    async fn subscription(&self, pattern: &str) -> Result<Subscription, PluginError> {
        let subscriber = self
            .client
            .subscribe(format!("{}{pattern}", self.prefix))
            .await
            .map_err(|e| unavailable("subscribe", e))?;
        // The SUB must reach the server before we report the subscription live.
        self.client.flush().await.map_err(|e| unavailable("flush", e))?;
        let prefix_len = self.prefix.len();
        Ok(Subscription::new(subscriber.map(move |message| Ok(from_nats(message, prefix_len)))))
    }
}

fn from_nats(message: async_nats::Message, prefix_len: usize) -> Message {
    let mut id = String::new();
    let mut published_at_unix_ms = 0;
    let mut metadata = Vec::new();
    if let Some(headers) = &message.headers {
        for (name, values) in headers.iter() {
            let value = values.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
            match name.as_ref() {
                ID_HEADER => id = value,
                TIME_HEADER => published_at_unix_ms = value.parse().unwrap_or_default(),
                other => metadata.push((other.to_owned(), value)),
            }
        }
    }
    Message {
        id,
        topic: message.subject.as_str().get(prefix_len..).unwrap_or_default().to_owned(),
        payload: message.payload.to_vec(),
        metadata,
        published_at_unix_ms,
    }
}

impl PubSubBasic for Nats {
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> Result<String, PluginError> {
        let id = format!("{:x}-{}", self.instance, self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in metadata {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert(ID_HEADER, id.as_str());
        headers.insert(TIME_HEADER, now_unix_ms().to_string().as_str());
        self.client
            .publish_with_headers(format!("{}{topic}", self.prefix), headers, payload.into())
            .await
            .map_err(|e| unavailable("publish", e))?;
        Ok(id)
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, PluginError> {
        self.subscription(topic).await
    }
}

impl PubSubWildcards for Nats {
    async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription, PluginError> {
        self.subscription(pattern).await
    }
}

plugin_abi::export_plugin! {
    driver: Nats,
    name: "nats",
    description: "NATS core pub/sub with native wildcards",
    connection_format: "nats://host:port[,nats://host:port…]",
    interfaces: [PubSubBasic, PubSubWildcards],
}
