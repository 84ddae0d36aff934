//! pubsub_basic on Kafka topics: publish is a produce; a subscription is a group-less
//! consumer assigned to every partition at its end as of the subscribe call, so it gets
//! exactly what is published from then on. Kafka has no subject wildcards, so this
//! plugin does not declare pubsub_wildcards.

use plugin_abi::PluginResult;
use std::sync::Arc;

use plugin_abi::{Message, PubSubBasic, Subscription};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::stream::prism_headers;
use crate::{unavailable, Kafka};

impl PubSubBasic for Kafka {
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String> {
        let kafka_topic = self.topic_name(topic)?;
        let count = self.ensure_topic(&kafka_topic).await?;
        // One partition per publisher (this instance) keeps its order on the topic, which
        // a subscriber reading several partitions would otherwise lose.
        let partition = (self.publisher_id % u64::from(count)) as u32;
        let appended = self.produce(&kafka_topic, Some(partition), None, &payload, &metadata).await?;
        Ok(format!("{}-{}", appended.partition, appended.offset))
    }

    async fn subscribe(&self, topic: &str) -> PluginResult<Subscription> {
        let kafka_topic = self.topic_name(topic)?;
        let count = self.ensure_topic(&kafka_topic).await?;
        // Explicit end offsets, not Offset::End: librdkafka resolves End lazily, which
        // would lose what is published between this call returning and that lookup.
        let mut assignment = TopicPartitionList::new();
        for partition in 0..count {
            let (_, next) = self.watermarks(&kafka_topic, partition).await?;
            assignment
                .add_partition_offset(&kafka_topic, partition as i32, Offset::Offset(next as i64))
                .map_err(|e| unavailable("cannot assign partitions", e))?;
        }
        let consumer = Arc::new(self.reader()?);
        consumer.assign(&assignment).map_err(|e| unavailable("cannot assign partitions", e))?;
        let (sender, receiver) = mpsc::channel(256);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    received = consumer.recv() => received.map(|message| Message {
                        id: format!("{}-{}", message.partition(), message.offset()),
                        topic: topic.clone(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                        metadata: prism_headers(&message),
                        published_at_unix_ms: message.timestamp().to_millis().unwrap_or_default(),
                        ack_id: String::new(),
                        delivery_count: 0,
                    }),
                    () = sender.closed() => break,
                };
                let failed = received.is_err();
                if sender.send(received.map_err(|e| unavailable("subscription failed", e))).await.is_err()
                    || failed
                {
                    break;
                }
            }
            tokio::task::spawn_blocking(move || drop(consumer));
        });
        Ok(Subscription::from_receiver(receiver))
    }
}
