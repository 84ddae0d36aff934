//! pubsub_persistent on a Kafka consumer group per durable name (`<prefix>durable.<name>`).
//!
//! Kafka commits a position, not single messages, so each subscriber keeps the messages
//! it delivered until they are acked: the group's committed offset for a partition moves
//! up to the first unacked one, a message unacked after `ack_wait` is sent again, and a
//! subscriber that goes away leaves its uncommitted messages to whoever gets the
//! partition next. Delivery counts are remembered per instance (a restart starts them
//! again at 1).

use plugin_abi::PluginResult;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use plugin_abi::{MemberAck, Message, PluginError, PubSubPersistent, Subscription};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::group::MemberConsumer;
use crate::stream::prism_headers;
use crate::{blocking, unavailable, Kafka};

/// Unacked messages one subscriber may hold before it stops taking new ones.
const MAX_UNACKED: usize = 1000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Pending {
    message: Message,
    acked: bool,
    resend_at: Instant,
}

pub(crate) struct DurableMember {
    consumer: MemberConsumer,
    name: String,
    topic: String,
    ack_wait: Duration,
    /// Per partition, delivered messages by offset that are not yet committed.
    pending: Mutex<HashMap<u32, BTreeMap<u64, Pending>>>,
    /// The position committed per partition; held across a commit so concurrent acks
    /// cannot commit out of order (Kafka keeps the last commit, not the highest).
    committed: tokio::sync::Mutex<HashMap<u32, u64>>,
}

impl DurableMember {
    fn unacked(&self) -> usize {
        lock(&self.pending).values().map(|p| p.values().filter(|m| !m.acked).count()).sum()
    }
}

/// Deliveries of each uncommitted message, by (group, partition, offset).
#[derive(Default)]
pub(crate) struct DeliveryCounts {
    counts: Mutex<HashMap<(String, u32, u64), u32>>,
}

impl DeliveryCounts {
    fn bump(&self, group: &str, partition: u32, offset: u64) -> u32 {
        let mut counts = lock(&self.counts);
        let count = counts.entry((group.to_owned(), partition, offset)).or_insert(0);
        *count += 1;
        *count
    }

    fn forget_below(&self, group: &str, partition: u32, committed: u64) {
        lock(&self.counts).retain(|(g, p, o), _| !(g == group && *p == partition && *o < committed));
    }
}

impl Kafka {
    fn durable_group(&self, name: &str) -> String {
        format!("{}durable.{name}", self.config.topic_prefix)
    }

    /// A durable subscription keeps what is published after it was first created: the
    /// first time, commit the current ends so the group starts there, not wherever the
    /// first assignment happens to land.
    async fn anchor_new_group(&self, group: &str, topic: &str, partitions: u32) -> PluginResult<()> {
        let anchor: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| unavailable("cannot create a consumer", e))?;
        let anchor = Arc::new(anchor);
        let mut query = TopicPartitionList::new();
        for partition in 0..partitions {
            query.add_partition(topic, partition as i32);
        }
        let timeout = self.timeout();
        let reader = anchor.clone();
        let committed = blocking(move || reader.committed_offsets(query, timeout))
            .await
            .map_err(|e| unavailable(&format!("committed offsets of '{group}'"), e))?;
        let fresh = committed.elements().iter().all(|e| !matches!(e.offset(), Offset::Offset(o) if o >= 0));
        if !fresh {
            return Ok(());
        }
        let mut ends = TopicPartitionList::new();
        for partition in 0..partitions {
            let (_, next) = self.watermarks(topic, partition).await?;
            ends.add_partition_offset(topic, partition as i32, Offset::Offset(next as i64))
                .map_err(|e| unavailable("cannot build the commit", e))?;
        }
        blocking(move || anchor.commit(&ends, CommitMode::Sync))
            .await
            .map_err(|e| unavailable(&format!("cannot create durable subscription '{group}'"), e))
    }

    /// Commits a partition up to its first unacked message, dropping what is below.
    async fn commit_acked(&self, member: &Arc<DurableMember>, partition: u32) -> PluginResult<()> {
        let mut committed = member.committed.lock().await;
        let position = {
            let mut pending = lock(&member.pending);
            let Some(delivered) = pending.get_mut(&partition) else { return Ok(()) };
            let first_unacked = delivered.iter().find(|(_, m)| !m.acked).map(|(offset, _)| *offset);
            let position = match first_unacked {
                Some(offset) => offset,
                None => delivered.keys().next_back().map_or(0, |last| last + 1),
            };
            delivered.retain(|offset, _| *offset >= position);
            position
        };
        if committed.get(&partition).is_some_and(|done| *done >= position) {
            return Ok(());
        }
        let group = self.durable_group(&member.name);
        let mut commit = TopicPartitionList::new();
        commit
            .add_partition_offset(&member.topic, partition as i32, Offset::Offset(position as i64))
            .map_err(|e| unavailable("cannot build the commit", e))?;
        let committer = member.clone();
        blocking(move || committer.consumer.commit(&commit, CommitMode::Sync))
            .await
            .map_err(|e| unavailable(&format!("commit to durable subscription '{group}' failed"), e))?;
        committed.insert(partition, position);
        self.delivery_counts.forget_below(&group, partition, position);
        Ok(())
    }
}

/// Delivers new messages (while fewer than MAX_UNACKED wait for acks) and resends those
/// whose ack wait lapsed, until the subscriber goes away.
async fn pump_durable(
    member: Arc<DurableMember>,
    id: u64,
    counts: Arc<DeliveryCounts>,
    group: String,
    prism_topic: String,
    mut assignments: mpsc::UnboundedReceiver<Vec<u32>>,
    sender: mpsc::Sender<PluginResult<Message>>,
) {
    let mut tick = tokio::time::interval((member.ack_wait / 4).max(Duration::from_millis(50)));
    loop {
        let full = member.unacked() >= MAX_UNACKED;
        let received = tokio::select! {
            biased;
            () = sender.closed() => break,
            Some(owned) = assignments.recv() => {
                // Messages of partitions this subscriber lost are the new owner's now.
                lock(&member.pending).retain(|partition, _| owned.contains(partition));
                continue;
            }
            _ = tick.tick() => {
                if resend_overdue(&member, &counts, &group, &sender).await.is_err() {
                    break;
                }
                continue;
            }
            received = member.consumer.recv(), if !full => received.map(|message| {
                let (partition, offset) = (message.partition() as u32, message.offset() as u64);
                let message = Message {
                    id: format!("{partition}-{offset}"),
                    topic: prism_topic.clone(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    metadata: prism_headers(&message),
                    published_at_unix_ms: message.timestamp().to_millis().unwrap_or_default(),
                    ack_id: MemberAck { member: id, partition, offset }.encode(),
                    delivery_count: 0,
                };
                (partition, offset, message)
            }),
        };
        let (partition, offset, mut message) = match received {
            Ok(received) => received,
            Err(error) => {
                let _ = sender.send(Err(unavailable("durable subscription failed", error))).await;
                break;
            }
        };
        message.delivery_count = counts.bump(&group, partition, offset);
        let pending =
            Pending { message: message.clone(), acked: false, resend_at: Instant::now() + member.ack_wait };
        lock(&member.pending).entry(partition).or_default().insert(offset, pending);
        if sender.send(Ok(message)).await.is_err() {
            break;
        }
    }
    tokio::task::spawn_blocking(move || drop(member));
}

async fn resend_overdue(
    member: &DurableMember,
    counts: &DeliveryCounts,
    group: &str,
    sender: &mpsc::Sender<PluginResult<Message>>,
) -> Result<(), ()> {
    let now = Instant::now();
    let overdue: Vec<Message> = {
        let mut pending = lock(&member.pending);
        let mut overdue = Vec::new();
        for (partition, delivered) in pending.iter_mut() {
            for (offset, entry) in delivered.iter_mut().filter(|(_, m)| !m.acked && m.resend_at <= now) {
                entry.resend_at = now + member.ack_wait;
                entry.message.delivery_count = counts.bump(group, *partition, *offset);
                overdue.push(entry.message.clone());
            }
        }
        overdue
    };
    for message in overdue {
        sender.send(Ok(message)).await.map_err(|_| ())?;
    }
    Ok(())
}

impl PubSubPersistent for Kafka {
    async fn subscribe_durable(
        &self,
        name: &str,
        topic: &str,
        ack_wait: Duration,
    ) -> PluginResult<Subscription> {
        if plugin_abi::topics::check_pattern(topic).unwrap_or(false) {
            return Err(PluginError::invalid_argument(format!(
                "kafka durable subscriptions take a concrete topic, not the pattern '{topic}'"
            )));
        }
        let kafka_topic = self.topic_name(topic)?;
        let partitions = self.ensure_topic(&kafka_topic).await?;
        let group = self.durable_group(name);
        self.anchor_new_group(&group, &kafka_topic, partitions).await?;
        let (consumer, assignments) = self.group_member(&group, &kafka_topic)?;
        let member = Arc::new(DurableMember {
            consumer,
            name: name.to_owned(),
            topic: kafka_topic,
            ack_wait,
            pending: Mutex::default(),
            committed: Default::default(),
        });
        let id = self.durables.add(&member);
        let (sender, receiver) = mpsc::channel(256);
        let counts = self.delivery_counts.clone();
        tokio::spawn(pump_durable(member, id, counts, group, topic.to_owned(), assignments, sender));
        Ok(Subscription::from_receiver(receiver))
    }

    async fn ack(&self, name: &str, ack_id: &str) -> PluginResult<()> {
        let MemberAck { member: id, partition, offset } = MemberAck::parse(ack_id)?;
        let Some(member) = self.durables.get(id) else {
            return Err(PluginError::failed_precondition(format!(
                "the subscriber that received '{ack_id}' has gone; the message is delivered again to the \
                 durable subscription's next subscriber"
            )));
        };
        if member.name != name {
            return Err(PluginError::invalid_argument(format!(
                "ack id '{ack_id}' belongs to durable subscription '{}', not '{name}'",
                member.name
            )));
        }
        {
            let mut pending = lock(&member.pending);
            let Some(entry) = pending.get_mut(&partition).and_then(|delivered| delivered.get_mut(&offset))
            else {
                // Committed already (acked twice), or the partition moved to another subscriber.
                return Ok(());
            };
            entry.acked = true;
        }
        self.commit_acked(&member, partition).await
    }
}
