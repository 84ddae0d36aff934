//! stream_consumer_groups on Kafka consumer groups. Each `join` is one group member (its
//! own consumer, eager round-robin assignment, manual commits). Kafka accepts a commit
//! only from a current member that owns the partition, so ack ids name the member
//! (`<member>:<partition>:<offset>`) and commits go through its consumer.

use plugin_abi::PluginResult;
use std::sync::Arc;

use plugin_abi::{GroupEvent, GroupFeed, MemberAck, PluginError, StreamConsumerGroups};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::stream::stream_record;
use crate::{blocking, unavailable, Kafka};

/// Forwards each new assignment (the member's partitions of its topic) to its pump.
pub(crate) struct AssignmentContext {
    pub(crate) topic: String,
    pub(crate) assignments: mpsc::UnboundedSender<Vec<u32>>,
}

impl ClientContext for AssignmentContext {}

impl ConsumerContext for AssignmentContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut partitions: Vec<u32> =
                assigned.elements_for_topic(&self.topic).iter().map(|e| e.partition() as u32).collect();
            partitions.sort_unstable();
            let _ = self.assignments.send(partitions);
        }
    }
}

pub(crate) type MemberConsumer = StreamConsumer<AssignmentContext>;

pub(crate) struct Member {
    consumer: MemberConsumer,
    topic: String,
    group: String,
    /// The highest position committed per partition: Kafka overwrites a commit, so a
    /// late or out-of-order one must not move the group back. Held across the commit.
    committed: tokio::sync::Mutex<std::collections::HashMap<u32, u64>>,
}

fn moved_on(partition: u32, topic: &str, group: &str) -> PluginError {
    PluginError::failed_precondition(format!(
        "partition {partition} of '{topic}' is no longer this member's in group '{group}' (a rebalance moved it \
         or the member left); its new owner receives the uncommitted records again"
    ))
}

impl Kafka {
    fn group_id(&self, group: &str) -> String {
        format!("{}{group}", self.config.topic_prefix)
    }

    /// A member of Kafka group `group_id` subscribed to `topic`, with manual commits, and
    /// the channel its assignments arrive on. Stream groups and durable subscriptions
    /// share these settings.
    pub(crate) fn group_member(
        &self,
        group_id: &str,
        topic: &str,
    ) -> PluginResult<(MemberConsumer, mpsc::UnboundedReceiver<Vec<u32>>)> {
        let (assignments_tx, assignments) = mpsc::unbounded_channel();
        let context = AssignmentContext { topic: topic.to_owned(), assignments: assignments_tx };
        let consumer: MemberConsumer = self
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("allow.auto.create.topics", "false")
            .create_with_context(context)
            .map_err(|e| unavailable(&format!("cannot create a consumer in group '{group_id}'"), e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| unavailable(&format!("cannot subscribe to '{topic}'"), e))?;
        Ok((consumer, assignments))
    }
}

/// Sends the member's assignments and records until the reader goes away or the consumer fails.
async fn pump_member(
    member: Arc<Member>,
    id: u64,
    mut assignments: mpsc::UnboundedReceiver<Vec<u32>>,
    sender: mpsc::Sender<PluginResult<GroupEvent>>,
) {
    'pump: loop {
        let received = tokio::select! {
            biased;
            () = sender.closed() => break,
            Some(partitions) = assignments.recv() => {
                if sender.send(Ok(GroupEvent::Assigned(partitions))).await.is_err() {
                    break;
                }
                continue;
            }
            received = member.consumer.recv() => received
                .map(|message| {
                    let (partition, offset) = (message.partition() as u32, message.offset() as u64);
                    let ack_id = MemberAck { member: id, partition, offset }.encode();
                    stream_record(&message, ack_id)
                }),
        };
        // A rebalance is served inside `recv`, so its assignment goes out before the
        // first record it brought.
        while let Ok(partitions) = assignments.try_recv() {
            if sender.send(Ok(GroupEvent::Assigned(partitions))).await.is_err() {
                break 'pump;
            }
        }
        match received {
            Ok(record) => {
                if sender.send(Ok(GroupEvent::Record(record))).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                let _ = sender.send(Err(unavailable("group consumer failed", error))).await;
                break;
            }
        }
    }
    // Closing a consumer leaves the group synchronously: keep that off the async workers.
    tokio::task::spawn_blocking(move || drop(member));
}

impl StreamConsumerGroups for Kafka {
    async fn join(&self, stream: &str, group: &str) -> PluginResult<GroupFeed> {
        let topic = self.topic_name(stream)?;
        self.ensure_topic(&topic).await?;
        let (consumer, assignments) = self.group_member(&self.group_id(group), &topic)?;
        let member =
            Arc::new(Member { consumer, topic, group: group.to_owned(), committed: Default::default() });
        let id = self.members.add(&member);
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(pump_member(member, id, assignments, sender));
        Ok(GroupFeed::from_receiver(receiver))
    }

    async fn commit(&self, stream: &str, group: &str, ack_id: &str) -> PluginResult<()> {
        let ack = MemberAck::parse(ack_id)?;
        let (id, partition) = (ack.member, ack.partition);
        let topic = self.topic_name(stream)?;
        let Some(member) = self.members.get(id) else {
            return Err(moved_on(partition, &topic, group));
        };
        if member.topic != topic || member.group != group {
            return Err(PluginError::invalid_argument(format!(
                "ack id '{ack_id}' was handed out for group '{}' on '{}', not group '{group}' on '{topic}'",
                member.group, member.topic
            )));
        }
        let owned = member
            .consumer
            .assignment()
            .map_err(|e| unavailable("cannot read the member's assignment", e))?
            .find_partition(&topic, partition as i32)
            .is_some();
        if !owned {
            return Err(moved_on(partition, &topic, group));
        }
        let next = i64::try_from(ack.next_offset()?).map_err(|_| {
            PluginError::invalid_argument(format!("ack id '{ack_id}' names an offset past any record"))
        })?;
        let mut committed = member.committed.lock().await;
        if committed.get(&partition).is_some_and(|done| *done >= next as u64) {
            return Ok(()); // a later record of this partition was committed already
        }
        let mut position = TopicPartitionList::new();
        position
            .add_partition_offset(&topic, partition as i32, Offset::Offset(next))
            .map_err(|e| unavailable("cannot build the commit", e))?;
        let committer = member.clone();
        match blocking(move || committer.consumer.commit(&position, CommitMode::Sync)).await {
            Ok(()) => {
                committed.insert(partition, next as u64);
                Ok(())
            }
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress,
            )) => Err(moved_on(partition, &topic, group)),
            Err(error) => Err(unavailable(&format!("commit to group '{group}' failed"), error)),
        }
    }

    async fn committed(&self, stream: &str, group: &str) -> PluginResult<Vec<(u32, Option<u64>)>> {
        let topic = self.topic_name(stream)?;
        let count = self.partitions(&topic).await?;
        let reader: BaseConsumer = self
            .client_config()
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| unavailable("cannot create a consumer", e))?;
        let mut query = TopicPartitionList::new();
        for partition in 0..count {
            query.add_partition(&topic, partition as i32);
        }
        let timeout = self.timeout();
        let answer = blocking(move || reader.committed_offsets(query, timeout))
            .await
            .map_err(|e| unavailable(&format!("committed offsets of group '{group}'"), e))?;
        Ok((0..count)
            .map(|partition| {
                let offset = match answer.find_partition(&topic, partition as i32).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) if offset >= 0 => Some(offset as u64),
                    _ => None,
                };
                (partition, offset)
            })
            .collect())
    }
}
