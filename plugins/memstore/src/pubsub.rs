//! In-process pub/sub: every subscription is a bounded channel; publishing offers the
//! message to each matching one. At most once: a subscriber whose buffer is full misses
//! the message rather than slowing the publisher.

use plugin_abi::PluginResult;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use plugin_abi::topics::matches;
use plugin_abi::{Message, PubSubBasic, PubSubWildcards, Subscription};
use tokio::sync::mpsc;

use crate::Memstore;

struct Subscriber {
    pattern: String,
    sender: mpsc::Sender<PluginResult<Message>>,
}

pub(crate) struct Bus {
    subscribers: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
    buffer: usize,
}

impl Bus {
    pub fn new(buffer: usize) -> Self {
        Bus { subscribers: RwLock::new(Vec::new()), next_id: AtomicU64::new(1), buffer }
    }

    fn subscribe(&self, pattern: &str) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.buffer);
        let mut subscribers = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| !s.sender.is_closed());
        subscribers.push(Subscriber { pattern: pattern.to_owned(), sender });
        Subscription::from_receiver(receiver)
    }

    fn publish(&self, topic: &str, payload: Vec<u8>, metadata: Vec<(String, String)>) -> String {
        let id = format!("m-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let published_at_unix_ms = plugin_abi::unix_millis();
        let message = Message {
            id: id.clone(),
            topic: topic.to_owned(),
            payload,
            metadata,
            published_at_unix_ms,
            ack_id: String::new(),
            delivery_count: 0,
        };
        let mut closed = false;
        {
            let subscribers = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
            for subscriber in subscribers.iter().filter(|s| matches(&s.pattern, topic)) {
                match subscriber.sender.try_send(Ok(message.clone())) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            self.subscribers.write().unwrap_or_else(|e| e.into_inner()).retain(|s| !s.sender.is_closed());
        }
        id
    }
}

impl PubSubBasic for Memstore {
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String> {
        Ok(self.bus.publish(topic, payload, metadata))
    }

    async fn subscribe(&self, topic: &str) -> PluginResult<Subscription> {
        Ok(self.bus.subscribe(topic))
    }
}

impl PubSubWildcards for Memstore {
    async fn subscribe_pattern(&self, pattern: &str) -> PluginResult<Subscription> {
        Ok(self.bus.subscribe(pattern))
    }
}
