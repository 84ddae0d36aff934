//! The pub/sub family: fan-out, wildcard patterns, durable subscriptions.
//! Declarations only; `#[interface]` generates the rest.

use std::time::Duration;

use crate::{interface, Driver, PluginResult, Subscription};

/// `pubsub_basic`: at-most-once fan-out to every current subscriber of a topic, keeping
/// each publisher's order on a topic. Topics are `.`-separated tokens.
#[interface]
pub trait PubSubBasic: Driver {
    /// Returns the message id.
    async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> PluginResult<String>;
    /// Messages published to exactly `topic` from now on, until the subscription is dropped.
    async fn subscribe(&self, topic: &str) -> PluginResult<Subscription>;
}

/// `pubsub_wildcards`: subscribe to a pattern where `*` matches one token and a final
/// `>` one or more (see [`crate::topics::matches`]).
#[interface]
pub trait PubSubWildcards: Driver {
    async fn subscribe_pattern(&self, pattern: &str) -> PluginResult<Subscription>;
}

/// `pubsub_persistent`: durable named subscriptions, at least once. Messages published
/// to the topic after the subscription was first created are kept for it while nobody
/// listens; each delivered message must be acked, or it is redelivered after `ack_wait`.
#[interface]
pub trait PubSubPersistent: Driver {
    /// Opens (creating on first use) the durable subscription `name` on `topic`, which
    /// may be a pattern. Messages carry `ack_id` and `delivery_count`.
    async fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> PluginResult<Subscription>;
    async fn ack(&self, name: &str, ack_id: &str) -> PluginResult<()>;
}
