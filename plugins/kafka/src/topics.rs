//! Topic names, existence and partition counts. Counts are cached once seen: a topic's
//! partitions only grow through an admin action, and a stale count only narrows which
//! partitions a request may name.

use std::collections::HashMap;
use std::sync::Mutex;

use plugin_abi::PluginError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{valid_topic_chars, MAX_TOPIC_LEN};
use crate::{blocking, unavailable, Kafka};

#[derive(Default)]
pub(crate) struct Topics {
    partitions: Mutex<HashMap<String, u32>>,
    /// One past the highest offset a delivery report gave, per (topic, partition).
    acknowledged: Mutex<HashMap<(String, u32), u64>>,
}

impl Topics {
    pub(crate) fn produced(&self, topic: &str, partition: u32, offset: u64) {
        let mut acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        let end = acknowledged.entry((topic.to_owned(), partition)).or_insert(0);
        *end = (*end).max(offset + 1);
    }

    pub(crate) fn acknowledged_end(&self, topic: &str, partition: u32) -> u64 {
        let acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        acknowledged.get(&(topic.to_owned(), partition)).copied().unwrap_or(0)
    }
}

impl Kafka {
    /// The Kafka topic behind a stream or pub/sub topic name, or INVALID_ARGUMENT.
    pub(crate) fn topic_name(&self, name: &str) -> Result<String, PluginError> {
        let topic = format!("{}{name}", self.config.topic_prefix);
        if name.is_empty() || !valid_topic_chars(name) || topic.len() > MAX_TOPIC_LEN {
            return Err(PluginError::invalid_argument(format!(
                "'{name}' cannot name a Kafka topic: use letters, digits, '.', '_' and '-' \
                 ({MAX_TOPIC_LEN} characters at most with the prefix '{}')",
                self.config.topic_prefix
            )));
        }
        Ok(topic)
    }

    /// The topic's partition count, or NOT_FOUND when it does not exist.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<u32, PluginError> {
        if let Some(count) = self.cached(topic) {
            return Ok(count);
        }
        match self.fetch_partitions(topic).await? {
            Some(count) => Ok(count),
            None => Err(PluginError::not_found(format!(
                "topic '{topic}' does not exist (append or publish to it to create it)"
            ))),
        }
    }

    /// The topic's partition count, creating the topic first when it is missing and
    /// `create_topics` is on.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<u32, PluginError> {
        if let Some(count) = self.cached(topic) {
            return Ok(count);
        }
        if let Some(count) = self.fetch_partitions(topic).await? {
            return Ok(count);
        }
        if !self.config.create_topics {
            return Err(PluginError::not_found(format!(
                "topic '{topic}' does not exist and create_topics is off: create it on the cluster first"
            )));
        }
        self.create_topic(topic).await?;
        // The controller may answer before metadata shows the topic everywhere.
        for _ in 0..50 {
            if let Some(count) = self.fetch_partitions(topic).await? {
                return Ok(count);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(PluginError::unavailable(format!(
            "kafka: topic '{topic}' was created but does not show in metadata"
        )))
    }

    /// Checks `partition` against the topic's partitions.
    pub(crate) async fn check_partition(
        &self,
        topic: &str,
        partition: u32,
        count: u32,
    ) -> Result<(), PluginError> {
        if partition < count {
            return Ok(());
        }
        // The cache may be stale after partitions were added: ask once more.
        self.forget(topic);
        let count = self.partitions(topic).await?;
        if partition < count {
            return Ok(());
        }
        Err(PluginError::invalid_argument(format!(
            "topic '{topic}' has partitions 0..{count}; partition {partition} does not exist"
        )))
    }

    fn cached(&self, topic: &str) -> Option<u32> {
        self.topics.partitions.lock().unwrap_or_else(|e| e.into_inner()).get(topic).copied()
    }

    fn forget(&self, topic: &str) {
        self.topics.partitions.lock().unwrap_or_else(|e| e.into_inner()).remove(topic);
    }

    async fn fetch_partitions(&self, topic: &str) -> Result<Option<u32>, PluginError> {
        let lookups = self.lookups.clone();
        let timeout = self.timeout();
        let name = topic.to_owned();
        let metadata = blocking(move || lookups.fetch_metadata(Some(&name), timeout))
            .await
            .map_err(|e| unavailable(&format!("metadata of '{topic}'"), e))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|count| *count > 0);
        if let Some(count) = count {
            self.topics.partitions.lock().unwrap_or_else(|e| e.into_inner()).insert(topic.to_owned(), count);
        }
        Ok(count)
    }

    async fn create_topic(&self, topic: &str) -> Result<(), PluginError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().map_err(|e| unavailable("cannot create an admin client", e))?;
        let new_topic = NewTopic::new(
            topic,
            self.config.partitions as i32,
            TopicReplication::Fixed(self.config.replication as i32),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.timeout()));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| unavailable(&format!("cannot create topic '{topic}'"), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(unavailable(&format!("cannot create topic '{name}'"), code));
                }
            }
        }
        Ok(())
    }
}
