//! kafka: streams and pub/sub on Kafka (or a Kafka-compatible broker) through rdkafka.
//!
//! A Prism stream or pub/sub topic is the Kafka topic `topic_prefix + name`, created
//! through the admin API on first use when `create_topics` is on. Appends go through one
//! idempotent producer and report the partition and offset from the delivery report.
//! Reads are consumers assigned to one partition (no group); consumer groups are Kafka
//! consumer groups with manual commits, so a record's ack id names the member that
//! received it and commits go through that member's consumer.

#![forbid(unsafe_code)]

mod config;
mod durable;
mod group;
mod pubsub;
mod registry;
mod stream;
mod topics;

use std::sync::Arc;
use std::time::Duration;

use plugin_abi::{Driver, Health, PluginError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

pub use config::Config;

/// Remembers librdkafka's last reported client error, to say why brokers are unreachable.
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl rdkafka::ClientContext for LastError {
    fn error(&self, _error: KafkaError, reason: &str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }

    // A failed TLS handshake or SASL exchange is reported as a log line, not an error event.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, _facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel::{Alert, Critical, Emerg, Error};
        if matches!(level, Emerg | Alert | Critical | Error) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

pub struct Kafka {
    config: Config,
    producer: FutureProducer,
    /// Metadata, watermarks and time lookups; never subscribes or commits.
    lookups: Arc<BaseConsumer>,
    topics: topics::Topics,
    members: registry::Registry<group::Member>,
    durables: registry::Registry<durable::DurableMember>,
    /// Deliveries so far of uncommitted durable messages, for `delivery_count`.
    delivery_counts: Arc<durable::DeliveryCounts>,
    /// Picks the partition this instance publishes pub/sub messages to.
    publisher_id: u64,
}

plugin_abi::export_plugin! {
    driver: Kafka,
    name: "kafka",
    description: "Kafka streams (consumer groups, replay, partitions) and pub/sub with durable subscriptions",
    connection_format: "brokers = \"host:port[,host:port…]\"; config: topic_prefix, partitions, replication, create_topics, request_timeout_ms, properties",
    interfaces: [
        StreamBasic, StreamConsumerGroups, StreamReplay, StreamPartitioning, PubSubBasic, PubSubPersistent,
    ],
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(format!("kafka: {what}: {error}"))
}

/// Runs a blocking rdkafka call (metadata, watermarks, sync commits) off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(KafkaError::Canceled),
    }
}

impl Kafka {
    /// The base client settings every producer and consumer shares.
    fn client_config(&self) -> ClientConfig {
        self.config.client_config()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }
}

impl Driver for Kafka {
    type Config = Config;

    fn config_keys() -> Vec<plugin_abi::ConfigKey> {
        plugin_abi::config_keys_of::<Self::Config>()
    }
    /// rdkafka runs its own threads; the runtime only drives pumps and delivery futures.
    const RUNTIME_WORKERS: usize = 2;

    fn check(config: &Config) -> Result<(), PluginError> {
        config.check()
    }

    async fn create(config: Config) -> Result<Self, PluginError> {
        let producer: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", config.request_timeout_ms.to_string())
            .create()
            .map_err(|e| unavailable("cannot create a producer", e))?;
        let lookups: BaseConsumer = config
            .client_config()
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| unavailable("cannot create a metadata client", e))?;
        let lookups = Arc::new(lookups);
        let timeout = Duration::from_millis(config.request_timeout_ms);
        // Fail at create, with the broker address and librdkafka's reason (a refused
        // connection, a failed TLS handshake, failed SASL) in the message, not on first use.
        let probe: BaseConsumer<LastError> = config
            .client_config()
            .create_with_context(LastError::default())
            .map_err(|e| unavailable("cannot create a metadata client", e))?;
        let probe = Arc::new(probe);
        let probing = probe.clone();
        let probed = blocking(move || {
            let result = probing.fetch_metadata(None, timeout).map(|_| ());
            if result.is_err() {
                // Error events reach the context only when the client is polled.
                for _ in 0..8 {
                    let _ = probing.poll(Duration::ZERO);
                }
            }
            result
        });
        if let Err(error) = probed.await {
            let why = match probe.context().0.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(reason) => format!("cannot reach brokers {} ({reason})", config.brokers),
                None => format!("cannot reach brokers {}", config.brokers),
            };
            return Err(unavailable(&why, error));
        }
        let publisher_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64 ^ u64::from(std::process::id()))
            .unwrap_or_default();
        Ok(Kafka {
            topics: topics::Topics::default(),
            members: registry::Registry::default(),
            durables: registry::Registry::default(),
            delivery_counts: Arc::default(),
            publisher_id,
            config,
            producer,
            lookups,
        })
    }

    async fn health(&self) -> Health {
        let lookups = self.lookups.clone();
        let timeout = self.timeout();
        match blocking(move || lookups.fetch_metadata(None, timeout)).await {
            Ok(metadata) if !metadata.brokers().is_empty() => Health::serving(),
            Ok(_) => Health::unhealthy("kafka: the cluster reports no brokers"),
            Err(error) => {
                Health::unhealthy(format!("kafka: brokers {} unreachable: {error}", self.config.brokers))
            }
        }
    }
}
