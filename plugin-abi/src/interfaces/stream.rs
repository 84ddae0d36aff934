//! The stream family: append-only logs, partitions, replay by time, consumer groups.
//! Declarations only; `#[interface]` generates the rest.

use crate::{interface, Appended, Driver, GroupFeed, NewRecord, PartitionOffsets, PluginResult, RecordFeed};

/// `stream_basic`: append-only logs, named within a namespace. A stream has one or more
/// partitions; each partition's offsets start at 0 and grow by one per record, and a
/// partition is read in offset order. Appending to a new stream creates it.
#[interface]
pub trait StreamBasic: Driver {
    /// Appends one record; a keyed record goes to its key's partition.
    async fn append(&self, stream: &str, record: NewRecord) -> PluginResult<Appended>;
    /// The records of `partition` from `from_offset` on. With `follow` the feed waits for
    /// new records until dropped; without it, it ends at the partition's end as of the call.
    /// An unknown stream is `NotFound`; a partition it does not have is `InvalidArgument`.
    async fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> PluginResult<RecordFeed>;
    /// Every partition's offsets, in partition order. An unknown stream is `NotFound`.
    async fn offsets(&self, stream: &str) -> PluginResult<Vec<PartitionOffsets>>;
}

/// `stream_partitioning`: a stream's partitions are visible and addressable, and the
/// same key always maps to the same partition.
#[interface]
pub trait StreamPartitioning: Driver {
    async fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended>;
}

/// `stream_replay`: find where to replay from by time.
#[interface]
pub trait StreamReplay: Driver {
    /// The first offset in `partition` whose record's timestamp is at or after
    /// `timestamp_unix_ms`; the partition's end when there is none.
    async fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> PluginResult<u64>;
}

/// `stream_consumer_groups`: the members of a group share a stream's partitions, each
/// partition owned by one member at a time. A new group starts at the earliest records.
/// Delivery is at least once: a record not committed when its partition changes owner
/// (or its owner leaves) is delivered again to the new owner.
#[interface]
pub trait StreamConsumerGroups: Driver {
    /// Joins `group`. The feed starts with an `Assigned` event, then records of the
    /// assigned partitions after the group's committed offsets; every rebalance sends a
    /// new `Assigned`. Dropping the feed leaves the group.
    async fn join(&self, stream: &str, group: &str) -> PluginResult<GroupFeed>;
    /// Marks the record `ack_id` names, and every earlier record of its partition, as
    /// done for the group. A record whose partition has moved on to another member is
    /// `FailedPrecondition` (the new owner will receive it).
    async fn commit(&self, stream: &str, group: &str, ack_id: &str) -> PluginResult<()>;
    /// The group's committed position per partition: the next offset it will consume
    /// (`None` where it has committed nothing).
    async fn committed(&self, stream: &str, group: &str) -> PluginResult<Vec<(u32, Option<u64>)>>;
}
