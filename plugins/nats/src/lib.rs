//! nats: pub/sub on NATS core subjects. Prism's topic syntax is NATS's own (`.`-separated
//! tokens, `*` and a final `>`), so patterns pass through unchanged under the configured
//! `subject_prefix`. Metadata travels as NATS headers, next to the message id and
//! publish time (`Prism-Message-Id`, `Prism-Published-At`).
//!
//! Durable subscriptions (`pubsub_persistent`) are JetStream durable pull consumers on a
//! stream that captures every subject under `subject_prefix` (created on first durable
//! use); a message's ack id is its JetStream ack subject.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use plugin_abi::{
    Driver, Health, Message, PluginError, PubSubBasic, PubSubPersistent, PubSubWildcards, Subscription,
};
use serde::Deserialize;

const ID_HEADER: &str = "Prism-Message-Id";
const TIME_HEADER: &str = "Prism-Published-At";

/// The slot's `config` table for nats.
#[derive(Debug, Clone, Deserialize, serde::Serialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://host:port` (several, comma-separated, for a cluster); `tls://` for TLS.
    pub url: String,
    /// A PEM CA file to verify the server with (default: system roots); implies TLS.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// A PEM client certificate, for servers that verify clients; implies TLS.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Prepended to every subject, e.g. `"prism.orders."`; empty for none.
    #[serde(default)]
    pub subject_prefix: String,
    /// How long to wait for the first connection to the server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long the JetStream stream behind durable subscriptions keeps messages.
    #[serde(default = "default_retention_ms")]
    pub retention_ms: u64,
    /// A durable subscription nobody has used for this long is deleted by the server.
    #[serde(default = "default_durable_idle_ms")]
    pub durable_idle_ms: u64,
}

fn default_retention_ms() -> u64 {
    24 * 60 * 60 * 1000
}

fn default_durable_idle_ms() -> u64 {
    60 * 60 * 1000
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

pub struct Nats {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    config: Config,
    prefix: String,
    instance: u64,
    next_id: AtomicU64,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(format!("nats: {what}: {error}"))
}

impl Driver for Nats {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }

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
        if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
            return Err(PluginError::invalid_argument("tls_cert_file and tls_key_file go together"));
        }
        for (key, file) in [
            ("tls_ca_file", &config.tls_ca_file),
            ("tls_cert_file", &config.tls_cert_file),
            ("tls_key_file", &config.tls_key_file),
        ] {
            if let Some(file) = file {
                std::fs::metadata(file)
                    .map_err(|e| PluginError::invalid_argument(format!("{key}: cannot read {file}: {e}")))?;
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
        for (name, value) in [
            ("connect_timeout_ms", config.connect_timeout_ms),
            ("retention_ms", config.retention_ms),
            ("durable_idle_ms", config.durable_idle_ms),
        ] {
            if value == 0 {
                return Err(PluginError::invalid_argument(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .name("prism");
        let tls = config.url.split(',').any(|url| url.trim().starts_with("tls://"));
        if tls || config.tls_ca_file.is_some() || config.tls_cert_file.is_some() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.into());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            options = options.add_client_certificate(cert.into(), key.into());
        }
        // Every server of a cluster: the client picks one and moves to another when it
        // is lost. (A comma-separated string is not a list to async-nats.)
        let servers: Vec<async_nats::ServerAddr> =
            config.url.split(',').filter_map(|url| url.trim().parse().ok()).collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|e| unavailable(&format!("cannot connect to {}", config.url), e))?;
        let instance =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default();
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Nats {
            client,
            jetstream,
            prefix: config.subject_prefix.clone(),
            config,
            instance,
            next_id: AtomicU64::new(1),
        })
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

    /// The JetStream stream capturing every subject under the prefix.
    async fn durable_stream(&self) -> Result<async_nats::jetstream::stream::Stream, PluginError> {
        if self.prefix.is_empty() {
            return Err(PluginError::failed_precondition(
                "durable subscriptions need a subject_prefix in the nats slot config (their JetStream stream \
                 captures every subject under it)",
            ));
        }
        let name = format!("PRISM_{}", self.prefix.trim_end_matches('.').replace(['.', '*', '>'], "_"));
        self.jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name,
                subjects: vec![format!("{}>", self.prefix)],
                max_age: Duration::from_millis(self.config.retention_ms),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("cannot open the JetStream stream", e))
    }
}

fn from_nats(message: async_nats::Message, prefix_len: usize) -> Message {
    from_nats_delivery(message, prefix_len, String::new(), 0)
}

fn from_nats_delivery(
    message: async_nats::Message,
    prefix_len: usize,
    ack_id: String,
    delivery_count: u32,
) -> Message {
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
        ack_id,
        delivery_count,
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
        headers.insert(TIME_HEADER, plugin_abi::unix_millis().to_string().as_str());
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

impl PubSubPersistent for Nats {
    async fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> Result<Subscription, PluginError> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let stream = self.durable_stream().await?;
        let filter = format!("{}{topic}", self.prefix);
        let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_owned()),
                    filter_subject: filter.clone(),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::New,
                    ack_wait,
                    inactive_threshold: Duration::from_millis(self.config.durable_idle_ms),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable("cannot open the durable consumer", e))?;
        let existing = &consumer.cached_info().config.filter_subject;
        if *existing != filter {
            return Err(PluginError::failed_precondition(format!(
                "durable subscription '{name}' already exists for topic '{}'; use another name",
                existing.get(self.prefix.len()..).unwrap_or(existing)
            )));
        }
        let messages =
            consumer.messages().await.map_err(|e| unavailable("cannot read the durable consumer", e))?;
        let prefix_len = self.prefix.len();
        Ok(Subscription::new(messages.map(move |delivery| {
            let delivery = delivery.map_err(|e| unavailable("durable delivery failed", e))?;
            let count = delivery.info().map(|info| info.delivered as u32).unwrap_or(1);
            let ack_id = delivery.reply.as_ref().map(|reply| reply.to_string()).unwrap_or_default();
            Ok(from_nats_delivery(delivery.message, prefix_len, ack_id, count))
        })))
    }

    async fn ack(&self, name: &str, ack_id: &str) -> Result<(), PluginError> {
        // Only ever publish to this consumer's own ack subjects.
        let ours = ack_id.starts_with("$JS.ACK.") && ack_id.split('.').nth(3) == Some(name);
        if !ours {
            return Err(PluginError::invalid_argument(format!(
                "'{ack_id}' is not an ack id of durable subscription '{name}'"
            )));
        }
        self.client.publish(ack_id.to_owned(), "+ACK".into()).await.map_err(|e| unavailable("ack", e))?;
        self.client.flush().await.map_err(|e| unavailable("ack", e))
    }
}

plugin_abi::export_plugin! {
    driver: Nats,
    name: "nats",
    description: "NATS core pub/sub with native wildcards; durable subscriptions on JetStream",
    connection_format: "nats://host:port[,nats://host:port…]",
    interfaces: [PubSubBasic, PubSubWildcards, PubSubPersistent],
}
