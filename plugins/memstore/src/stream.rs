//! In-process streams: each stream is a fixed number of partitions, each a bounded
//! deque of records (the oldest fall off past `stream_retention`, moving `earliest` on).
//! Readers wait on a watch channel bumped by every append. Consumer groups share a
//! stream's partitions round-robin by join order; a rebalance bumps the group's watch.

use plugin_abi::PluginResult;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use plugin_abi::{
    Appended, GroupEvent, GroupFeed, MemberAck, NewRecord, PartitionOffsets, PluginError, RecordFeed,
    StreamBasic, StreamConsumerGroups, StreamPartitioning, StreamRecord, StreamReplay,
};
use tokio::sync::{mpsc, watch};

use crate::Memstore;

/// Records handed to a reader per wake-up before it checks for rebalances again.
const DELIVERY_CHUNK: usize = 256;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Stored {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    timestamp_unix_ms: i64,
}

#[derive(Default)]
struct Partition {
    earliest: u64,
    records: VecDeque<Stored>,
}

impl Partition {
    fn next(&self) -> u64 {
        self.earliest + self.records.len() as u64
    }

    fn record(&self, partition: u32, offset: u64, ack_id: String) -> Option<StreamRecord> {
        let stored = self.records.get(offset.checked_sub(self.earliest)? as usize)?;
        Some(StreamRecord {
            partition,
            offset,
            key: stored.key.clone(),
            payload: stored.payload.clone(),
            headers: stored.headers.clone(),
            timestamp_unix_ms: stored.timestamp_unix_ms,
            ack_id,
        })
    }
}

struct GroupState {
    /// Members in join order; partition `p` belongs to `members[p % members.len()]`.
    members: Vec<u64>,
    committed: Vec<Option<u64>>,
}

struct Group {
    state: Mutex<GroupState>,
    /// Bumped on every membership change.
    generation: watch::Sender<u64>,
}

impl Group {
    fn owner(state: &GroupState, partition: u32) -> Option<u64> {
        let count = state.members.len();
        (count > 0).then(|| state.members[partition as usize % count])
    }

    fn assignment(state: &GroupState, member: u64) -> Vec<u32> {
        (0..state.committed.len() as u32).filter(|p| Group::owner(state, *p) == Some(member)).collect()
    }

    fn leave(&self, member: u64) {
        lock(&self.state).members.retain(|m| *m != member);
        self.generation.send_modify(|g| *g += 1);
    }
}

struct Log {
    partitions: Vec<Mutex<Partition>>,
    appended: watch::Sender<u64>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    round_robin: AtomicU32,
}

impl Log {
    fn partition(&self, stream: &str, partition: u32) -> PluginResult<&Mutex<Partition>> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            PluginError::invalid_argument(format!(
                "stream '{stream}' has partitions 0..{}; partition {partition} does not exist",
                self.partitions.len()
            ))
        })
    }

    fn group(&self, name: &str) -> Arc<Group> {
        lock(&self.groups)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Group {
                    state: Mutex::new(GroupState {
                        members: Vec::new(),
                        committed: vec![None; self.partitions.len()],
                    }),
                    generation: watch::channel(0).0,
                })
            })
            .clone()
    }
}

pub(crate) struct Streams {
    logs: Mutex<HashMap<String, Arc<Log>>>,
    partitions: u32,
    retention: usize,
    next_member: AtomicU64,
}

impl Streams {
    pub fn new(partitions: u32, retention: usize) -> Self {
        Streams { logs: Mutex::new(HashMap::new()), partitions, retention, next_member: AtomicU64::new(1) }
    }

    fn existing(&self, stream: &str) -> PluginResult<Arc<Log>> {
        lock(&self.logs).get(stream).cloned().ok_or_else(|| {
            PluginError::not_found(format!("stream '{stream}' does not exist (append to it to create it)"))
        })
    }

    fn log(&self, stream: &str) -> Arc<Log> {
        lock(&self.logs)
            .entry(stream.to_owned())
            .or_insert_with(|| {
                Arc::new(Log {
                    partitions: (0..self.partitions).map(|_| Mutex::default()).collect(),
                    appended: watch::channel(0).0,
                    groups: Mutex::default(),
                    round_robin: AtomicU32::new(0),
                })
            })
            .clone()
    }

    /// Appends; returns where, and the bytes of a record retention dropped to make room.
    fn append_at(
        &self,
        log: &Log,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<(Appended, u64)> {
        let mut slot = lock(log.partition(stream, partition)?);
        let now = plugin_abi::unix_millis();
        // Timestamps never go backwards within a partition, so time lookups can bisect.
        let timestamp_unix_ms = slot.records.back().map_or(now, |last| now.max(last.timestamp_unix_ms));
        let offset = slot.next();
        slot.records.push_back(Stored {
            key: record.key,
            payload: record.payload,
            headers: record.headers,
            timestamp_unix_ms,
        });
        let mut dropped = 0;
        if slot.records.len() > self.retention {
            dropped =
                slot.records.pop_front().map_or(0, |old| record_bytes(&old.key, &old.payload, &old.headers));
            slot.earliest += 1;
        }
        drop(slot);
        log.appended.send_modify(|n| *n += 1);
        Ok((Appended { partition, offset, timestamp_unix_ms }, dropped))
    }
}

/// What a stored record counts against the store's `max_bytes`.
fn record_bytes(key: &Option<Vec<u8>>, payload: &[u8], headers: &[(String, String)]) -> u64 {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (key.as_ref().map_or(0, Vec::len) + payload.len() + headers) as u64
}

impl Memstore {
    /// Appends within the store's `max_bytes`, like every other write.
    fn append_counted(
        &self,
        log: &Log,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended> {
        let bytes = record_bytes(&record.key, &record.payload, &record.headers);
        self.inner.reserve(0, bytes as i64)?;
        match self.streams.append_at(log, stream, partition, record) {
            Ok((appended, dropped)) => {
                self.inner.release(0, dropped);
                Ok(appended)
            }
            Err(error) => {
                self.inner.release(0, bytes);
                Err(error)
            }
        }
    }
}

/// FNV-1a of the key: the same key always lands in the same partition.
fn key_partition(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u32
}

impl StreamBasic for Memstore {
    async fn append(&self, stream: &str, record: NewRecord) -> PluginResult<Appended> {
        let log = self.streams.log(stream);
        let partition = match &record.key {
            Some(key) => key_partition(key, self.streams.partitions),
            None => log.round_robin.fetch_add(1, Ordering::Relaxed) % self.streams.partitions,
        };
        self.append_counted(&log, stream, partition, record)
    }

    async fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> PluginResult<RecordFeed> {
        let log = self.streams.existing(stream)?;
        log.partition(stream, partition)?;
        let until = (!follow).then(|| lock(&log.partitions[partition as usize]).next());
        let (sender, receiver) = mpsc::channel(DELIVERY_CHUNK);
        tokio::spawn(pump_partition(log, partition, from_offset, until, sender));
        Ok(RecordFeed::from_receiver(receiver))
    }

    async fn offsets(&self, stream: &str) -> PluginResult<Vec<PartitionOffsets>> {
        let log = self.streams.existing(stream)?;
        Ok(log
            .partitions
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let slot = lock(slot);
                PartitionOffsets { partition: index as u32, earliest: slot.earliest, next: slot.next() }
            })
            .collect())
    }
}

/// Sends one partition's records from `from` on, waiting for appends, until `until`
/// (exclusive) or until the reader goes away.
async fn pump_partition(
    log: Arc<Log>,
    partition: u32,
    from: u64,
    until: Option<u64>,
    sender: mpsc::Sender<PluginResult<StreamRecord>>,
) {
    let mut appended = log.appended.subscribe();
    let mut position = from;
    loop {
        let chunk: Vec<StreamRecord> = {
            let slot = lock(&log.partitions[partition as usize]);
            position = position.max(slot.earliest);
            let end = until.unwrap_or(u64::MAX).min(slot.next());
            (position..end)
                .take(DELIVERY_CHUNK)
                .filter_map(|offset| slot.record(partition, offset, String::new()))
                .collect()
        };
        if until.is_some_and(|until| position >= until) {
            return;
        }
        if chunk.is_empty() {
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
            }
            continue;
        }
        for record in chunk {
            position = record.offset + 1;
            if sender.send(Ok(record)).await.is_err() {
                return;
            }
        }
    }
}

impl StreamPartitioning for Memstore {
    async fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended> {
        let log = self.streams.log(stream);
        self.append_counted(&log, stream, partition, record)
    }
}

impl StreamReplay for Memstore {
    async fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> PluginResult<u64> {
        let log = self.streams.existing(stream)?;
        let slot = lock(log.partition(stream, partition)?);
        let index = slot.records.partition_point(|r| r.timestamp_unix_ms < timestamp_unix_ms);
        Ok(slot.earliest + index as u64)
    }
}

impl StreamConsumerGroups for Memstore {
    async fn join(&self, stream: &str, group: &str) -> PluginResult<GroupFeed> {
        // Like Kafka with topic creation on: joining a group on a new stream creates it.
        let log = self.streams.log(stream);
        let handle = log.group(group);
        let member = self.streams.next_member.fetch_add(1, Ordering::Relaxed);
        lock(&handle.state).members.push(member);
        handle.generation.send_modify(|g| *g += 1);
        let (sender, receiver) = mpsc::channel(DELIVERY_CHUNK);
        tokio::spawn(pump_member(log, handle, member, sender));
        Ok(GroupFeed::from_receiver(receiver))
    }

    async fn commit(&self, stream: &str, group: &str, ack_id: &str) -> PluginResult<()> {
        let ack = MemberAck::parse(ack_id)?;
        let (member, partition, next) = (ack.member, ack.partition, ack.next_offset()?);
        let log = self.streams.existing(stream)?;
        let handle = log.group(group);
        let mut state = lock(&handle.state);
        if partition as usize >= state.committed.len() {
            return Err(PluginError::invalid_argument(format!(
                "ack id '{ack_id}' names a partition stream '{stream}' does not have"
            )));
        }
        if Group::owner(&state, partition) != Some(member) {
            return Err(PluginError::failed_precondition(format!(
                "partition {partition} of stream '{stream}' has moved to another member of group '{group}' \
                 since this record was delivered; the new owner receives it again"
            )));
        }
        let committed = &mut state.committed[partition as usize];
        *committed = Some(committed.unwrap_or(0).max(next));
        Ok(())
    }

    async fn committed(&self, stream: &str, group: &str) -> PluginResult<Vec<(u32, Option<u64>)>> {
        let log = self.streams.existing(stream)?;
        let handle = log.group(group);
        let state = lock(&handle.state);
        Ok(state.committed.iter().enumerate().map(|(p, c)| (p as u32, *c)).collect())
    }
}

/// Leaves the group when the member's pump ends, however it ends.
struct Membership {
    group: Arc<Group>,
    member: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.group.leave(self.member);
    }
}

/// Delivers a member's assignment and then its partitions' records, starting over from
/// the committed offsets whenever the group rebalances.
async fn pump_member(
    log: Arc<Log>,
    group: Arc<Group>,
    member: u64,
    sender: mpsc::Sender<PluginResult<GroupEvent>>,
) {
    let membership = Membership { group, member };
    let group = &membership.group;
    let mut appended = log.appended.subscribe();
    let mut generations = group.generation.subscribe();
    let mut seen_generation = None;
    let mut positions: Vec<(u32, u64)> = Vec::new();
    loop {
        let generation = *generations.borrow_and_update();
        if seen_generation != Some(generation) {
            seen_generation = Some(generation);
            let assigned = {
                let state = lock(&group.state);
                let assigned = Group::assignment(&state, member);
                positions =
                    assigned.iter().map(|p| (*p, state.committed[*p as usize].unwrap_or(0))).collect();
                assigned
            };
            if sender.send(Ok(GroupEvent::Assigned(assigned))).await.is_err() {
                return;
            }
            continue;
        }
        let mut delivered = 0;
        for (partition, position) in positions.iter_mut() {
            let chunk: Vec<StreamRecord> = {
                let slot = lock(&log.partitions[*partition as usize]);
                *position = (*position).max(slot.earliest);
                (*position..slot.next())
                    .take(DELIVERY_CHUNK)
                    .filter_map(|offset| {
                        slot.record(
                            *partition,
                            offset,
                            MemberAck { member, partition: *partition, offset }.encode(),
                        )
                    })
                    .collect()
            };
            for record in chunk {
                *position = record.offset + 1;
                delivered += 1;
                if sender.send(Ok(GroupEvent::Record(record))).await.is_err() {
                    return;
                }
            }
            if generations.has_changed().unwrap_or(true) {
                break;
            }
        }
        if delivered == 0 {
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return },
                changed = generations.changed() => if changed.is_err() { return },
                () = sender.closed() => return,
            }
        }
    }
}
