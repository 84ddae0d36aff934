//! The queue family: basic delivery, visibility, dead letters, delayed messages.
//! Declarations only; `#[interface]` generates the rest.

use std::time::Duration;

use crate::{interface, DeadLetterPage, Driver, PluginResult, QueueMessage};

/// `queue_basic`: enqueue, dequeue (invisible until acked or the plugin's default
/// visibility timeout lapses), ack, nack. Queues are named within a namespace.
#[interface]
pub trait QueueBasic: Driver {
    /// Returns the new message's id.
    async fn enqueue(&self, queue: &str, payload: Vec<u8>) -> PluginResult<String>;
    /// Up to `max` visible messages, oldest first; empty when none is ready.
    async fn dequeue(&self, queue: &str, max: u32) -> PluginResult<Vec<QueueMessage>>;
    /// Deletes the message; false when the receipt is stale (redelivered, acked or dead).
    async fn ack(&self, queue: &str, receipt: &str) -> PluginResult<bool>;
    /// Makes the message visible again after `delay`; counts as a failed delivery.
    async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> PluginResult<bool>;
}

/// `queue_visibility`: choose the visibility timeout per dequeue, and extend it.
#[interface]
pub trait QueueVisibility: Driver {
    async fn dequeue_with_visibility(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> PluginResult<Vec<QueueMessage>>;
    /// Makes the message invisible for `visibility` from now; false when the receipt is stale.
    async fn extend_visibility(&self, queue: &str, receipt: &str, visibility: Duration)
        -> PluginResult<bool>;
}

/// `queue_dead_letter`: a message delivered `max_deliveries` times without an ack moves
/// to the queue's dead-letter list, which can be read and replayed.
#[interface]
pub trait QueueDeadLetter: Driver {
    async fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> PluginResult<DeadLetterPage>;
    /// Moves dead letters back onto the queue (all of them when `ids` is empty), with
    /// their delivery counts reset; returns how many moved.
    async fn replay_dead_letters(&self, queue: &str, ids: Vec<String>) -> PluginResult<u64>;
}

/// `queue_delayed`: messages that become visible at a given time.
#[interface]
pub trait QueueDelayed: Driver {
    async fn enqueue_at(
        &self,
        queue: &str,
        payload: Vec<u8>,
        deliver_at_unix_ms: i64,
    ) -> PluginResult<String>;
}
