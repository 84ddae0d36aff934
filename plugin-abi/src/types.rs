use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Interface;

/// How an instance feels about its backend.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Serving,
    /// Working, but impaired (e.g. reconnecting, near a capacity limit).
    Degraded,
    Unhealthy,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
}

impl Health {
    pub fn serving() -> Self {
        Health { status: HealthStatus::Serving, message: String::new() }
    }
    pub fn degraded(message: impl Into<String>) -> Self {
        Health { status: HealthStatus::Degraded, message: message.into() }
    }
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Health { status: HealthStatus::Unhealthy, message: message.into() }
    }
}

/// One page of a prefix scan. `next_cursor` is `None` when the scan is complete.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(String, Vec<u8>)>,
    pub next_cursor: Option<String>,
}

/// The time-to-live state of a key.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    Missing,
    NoExpiry,
    ExpiresIn(Duration),
}

/// A value with the version that CAS operations compare against.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// The result of a compare-and-swap (or a versioned delete).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasResult {
    /// The write happened; `version` is the key's new version (0 after a delete).
    Swapped { version: u64 },
    /// The expected version did not match; `current_version` is 0 when the key is absent.
    Conflict { current_version: u64 },
}

/// A transaction opened with `KeyValueTransactional::begin`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub u64);

/// A message handed out by a queue. `receipt` identifies this delivery: ack, nack and
/// extend take it, and it stops working once the message is redelivered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub payload: Vec<u8>,
    pub receipt: String,
    /// How many times the message has been handed out, this delivery included.
    pub delivery_count: u32,
    pub enqueued_at_unix_ms: i64,
}

/// One page of dead letters; `next_cursor` is `None` at the end.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterPage {
    pub messages: Vec<QueueMessage>,
    pub next_cursor: Option<String>,
}

/// Which end of a list an operation works on.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListEnd {
    Left,
    Right,
}

/// A plugin's metadata table, as the host sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Human-readable format of the connection setting, e.g. `redis://host:port/db`.
    pub connection_format: String,
    /// The `plugin-abi` version the plugin was built against, e.g. `1.0.0`.
    pub abi_version: String,
    /// Interfaces this host knows, in declaration order.
    pub interfaces: Vec<Interface>,
    /// Declared interface names this host does not know (a newer plugin).
    pub unknown_interfaces: Vec<String>,
    /// The slot config's keys; `None` when the plugin predates ABI 1.1.
    pub config_keys: Option<Vec<ConfigKey>>,
    /// Two instances must never run at once: a reload drains and shuts the old one down
    /// before it creates the new one.
    pub exclusive: bool,
}

/// One key of a plugin's slot config.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    /// e.g. `integer`, `string`, `boolean`, `string | null`.
    pub type_name: String,
    /// The default, as TOML; `None` when the key has none.
    pub default: Option<String>,
    pub required: bool,
    /// One line from the field's doc comment.
    pub doc: String,
}

impl Metadata {
    pub fn implements(&self, interface: Interface) -> bool {
        self.interfaces.contains(&interface)
    }
}

/// A published message, as a subscriber receives it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<(String, String)>,
    pub published_at_unix_ms: i64,
    /// For a durable subscription: what `PubSubPersistent::ack` takes. Empty otherwise.
    pub ack_id: String,
    /// For a durable subscription: deliveries so far, this one included. 0 otherwise.
    pub delivery_count: u32,
}

/// Items a plugin produces over time: a subscription's messages, a stream read's
/// records, a consumer group's events. Dropping it cancels the producer in the backend.
pub struct Feed<T> {
    stream: std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<T, crate::PluginError>> + Send>>,
    /// An error met while gathering a batch, handed out after the items before it.
    held_error: Option<crate::PluginError>,
    ended: bool,
}

/// The messages of one subscription. Dropping it unsubscribes in the backend.
pub type Subscription = Feed<Message>;
/// The records of one stream read.
pub type RecordFeed = Feed<StreamRecord>;
/// What a consumer-group member receives: its assignments and its records.
pub type GroupFeed = Feed<GroupEvent>;

impl<T: Send + 'static> Feed<T> {
    pub fn new(
        stream: impl futures_core::Stream<Item = Result<T, crate::PluginError>> + Send + 'static,
    ) -> Self {
        Feed { stream: Box::pin(stream), held_error: None, ended: false }
    }

    /// A feed that fails with `error` and ends.
    pub fn failed(error: crate::PluginError) -> Self {
        let mut error = Some(error);
        Feed::new(futures_core_stream(move |_| std::task::Poll::Ready(error.take().map(Err))))
    }

    /// A feed whose items come from `step`, one future per item: it gets the state and
    /// answers the next item with the state after it, or `None` at the end.
    pub fn unfold<S, F, Fut>(state: S, mut step: F) -> Self
    where
        S: Send + 'static,
        F: FnMut(S) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<(Result<T, crate::PluginError>, S)>> + Send + 'static,
    {
        let mut state = Some(state);
        let mut pending: Option<std::pin::Pin<Box<Fut>>> = None;
        Feed::new(futures_core_stream(move |cx| {
            if pending.is_none() {
                match state.take() {
                    Some(current) => pending = Some(Box::pin(step(current))),
                    None => return std::task::Poll::Ready(None),
                }
            }
            let future = pending.as_mut().expect("set above");
            let next = std::task::ready!(std::future::Future::poll(future.as_mut(), cx));
            pending = None;
            std::task::Poll::Ready(next.map(|(item, next_state)| {
                state = Some(next_state);
                item
            }))
        }))
    }

    /// A feed fed through a bounded channel (the sender side stays with the plugin).
    pub fn from_receiver(mut receiver: tokio::sync::mpsc::Receiver<Result<T, crate::PluginError>>) -> Self {
        Feed::new(futures_core_stream(move |cx| receiver.poll_recv(cx)))
    }

    /// The next item; `None` when the feed has ended.
    pub async fn next(&mut self) -> Option<Result<T, crate::PluginError>> {
        if let Some(error) = self.held_error.take() {
            return Some(Err(error));
        }
        if self.ended {
            return None;
        }
        let next = std::future::poll_fn(|cx| self.stream.as_mut().poll_next(cx)).await;
        self.ended = next.is_none();
        next
    }

    /// The items waiting: at least one (waiting for it), at most `max`; `None` once the
    /// feed has ended. An error comes alone, after the items before it.
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<T>, crate::PluginError>> {
        let first = match self.next().await? {
            Ok(item) => item,
            Err(error) => return Some(Err(error)),
        };
        let mut batch = vec![first];
        let mut ready = std::task::Context::from_waker(std::task::Waker::noop());
        while batch.len() < max.max(1) && !self.ended {
            match self.stream.as_mut().poll_next(&mut ready) {
                std::task::Poll::Ready(Some(Ok(item))) => batch.push(item),
                std::task::Poll::Ready(Some(Err(error))) => {
                    self.held_error = Some(error);
                    break;
                }
                std::task::Poll::Ready(None) => self.ended = true,
                std::task::Poll::Pending => break,
            }
        }
        Some(Ok(batch))
    }
}

/// What an object store knows of an object (ABI 1.2).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its length in bytes.
    pub size: u64,
    /// When it was last written, in Unix milliseconds (0 when the store does not say).
    pub modified_unix_ms: i64,
}

/// One object in a listing (ABI 1.3): its key and what the store knows of it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub info: ObjectInfo,
}

/// An object being read: what the store knows of it, and its bytes in chunks in order.
/// Dropping `chunks` stops the read in the backend.
pub struct ObjectRead {
    pub info: ObjectInfo,
    pub chunks: Feed<Vec<u8>>,
}

/// A record to append to a stream.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Records with the same key go to the same partition; `None` lets the plugin spread them.
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Where an appended record landed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_unix_ms: i64,
}

/// A record read back from a stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub timestamp_unix_ms: i64,
    /// For a consumer-group delivery: what `StreamConsumerGroups::commit` takes. Empty otherwise.
    pub ack_id: String,
}

/// The offsets of one partition: records live at `earliest..next`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: u32,
    pub earliest: u64,
    /// The offset the next appended record will get (the high watermark).
    pub next: u64,
}

/// An ack id that names the group member a record was delivered to, its partition and
/// offset (`<member>:<partition>:<offset>`): for plugins whose commits must go through
/// the member that owns the partition. Ack ids are opaque to clients and the host.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAck {
    pub member: u64,
    pub partition: u32,
    pub offset: u64,
}

impl MemberAck {
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.member, self.partition, self.offset)
    }

    /// Refuses anything `encode` did not make with `InvalidArgument`.
    pub fn parse(ack_id: &str) -> Result<MemberAck, crate::PluginError> {
        let invalid = || {
            crate::PluginError::invalid_argument(format!(
                "'{ack_id}' is not an ack id this stream handed out"
            ))
        };
        let mut parts = ack_id.split(':');
        let (Some(member), Some(partition), Some(offset), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(MemberAck {
            member: member.parse().map_err(|_| invalid())?,
            partition: partition.parse().map_err(|_| invalid())?,
            offset: offset.parse().map_err(|_| invalid())?,
        })
    }

    /// The position a commit of this record moves its partition to (the next offset).
    pub fn next_offset(&self) -> Result<u64, crate::PluginError> {
        self.offset.checked_add(1).ok_or_else(|| {
            crate::PluginError::invalid_argument(format!(
                "ack id '{}' names an offset past any record",
                self.encode()
            ))
        })
    }
}

/// What a consumer-group member receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The partitions this member now owns (after joining and after every rebalance).
    /// Records of partitions it no longer owns stop arriving; uncommitted ones go to the new owner.
    Assigned(Vec<u32>),
    Record(StreamRecord),
}

/// A `Stream` from a poll function.
pub(crate) fn futures_core_stream<T, F>(poll: F) -> impl futures_core::Stream<Item = T>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>>,
{
    // Boxed, so the stream is `Unpin` whatever the closure holds.
    struct PollStream<F>(Box<F>);
    impl<T, F> futures_core::Stream for PollStream<F>
    where
        F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>>,
    {
        type Item = T;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            (self.get_mut().0)(cx)
        }
    }
    PollStream(Box::new(poll))
}
