use abi_stable::std_types::RVec;

use super::{headers_from_ffi, headers_to_ffi};
use crate::ffi::{FfiAppended, FfiNewRecord, FfiPartitionOffsets, FfiStreamEvent, FfiStreamRecord};
use crate::{Appended, GroupEvent, NewRecord, PartitionOffsets, StreamRecord};

impl From<NewRecord> for FfiNewRecord {
    fn from(record: NewRecord) -> Self {
        FfiNewRecord {
            key: record.key.map(RVec::from).into(),
            payload: record.payload.into(),
            headers: headers_to_ffi(record.headers),
        }
    }
}

impl From<FfiNewRecord> for NewRecord {
    fn from(record: FfiNewRecord) -> Self {
        NewRecord {
            key: record.key.into_option().map(RVec::into_vec),
            payload: record.payload.into_vec(),
            headers: headers_from_ffi(record.headers),
        }
    }
}

impl From<Appended> for FfiAppended {
    fn from(appended: Appended) -> Self {
        FfiAppended {
            partition: appended.partition,
            offset: appended.offset,
            timestamp_unix_ms: appended.timestamp_unix_ms,
        }
    }
}

impl From<FfiAppended> for Appended {
    fn from(appended: FfiAppended) -> Self {
        Appended {
            partition: appended.partition,
            offset: appended.offset,
            timestamp_unix_ms: appended.timestamp_unix_ms,
        }
    }
}

impl From<StreamRecord> for FfiStreamRecord {
    fn from(record: StreamRecord) -> Self {
        FfiStreamRecord {
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(RVec::from).into(),
            payload: record.payload.into(),
            headers: headers_to_ffi(record.headers),
            timestamp_unix_ms: record.timestamp_unix_ms,
            ack_id: record.ack_id.into(),
        }
    }
}

impl From<FfiStreamRecord> for StreamRecord {
    fn from(record: FfiStreamRecord) -> Self {
        StreamRecord {
            partition: record.partition,
            offset: record.offset,
            key: record.key.into_option().map(RVec::into_vec),
            payload: record.payload.into_vec(),
            headers: headers_from_ffi(record.headers),
            timestamp_unix_ms: record.timestamp_unix_ms,
            ack_id: record.ack_id.into_string(),
        }
    }
}

impl From<PartitionOffsets> for FfiPartitionOffsets {
    fn from(offsets: PartitionOffsets) -> Self {
        FfiPartitionOffsets { partition: offsets.partition, earliest: offsets.earliest, next: offsets.next }
    }
}

impl From<FfiPartitionOffsets> for PartitionOffsets {
    fn from(offsets: FfiPartitionOffsets) -> Self {
        PartitionOffsets { partition: offsets.partition, earliest: offsets.earliest, next: offsets.next }
    }
}

impl From<GroupEvent> for FfiStreamEvent {
    fn from(event: GroupEvent) -> Self {
        match event {
            GroupEvent::Assigned(partitions) => FfiStreamEvent::Assigned(partitions.into()),
            GroupEvent::Record(record) => FfiStreamEvent::Record(record.into()),
        }
    }
}

impl From<FfiStreamEvent> for GroupEvent {
    fn from(event: FfiStreamEvent) -> Self {
        match event {
            FfiStreamEvent::Assigned(partitions) => GroupEvent::Assigned(partitions.into_vec()),
            FfiStreamEvent::Record(record) => GroupEvent::Record(record.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<Vec<u8>>) -> StreamRecord {
        StreamRecord {
            partition: 2,
            offset: 41,
            key,
            payload: b"payload".to_vec(),
            headers: vec![("h".into(), "v".into())],
            timestamp_unix_ms: 1_700_000_000_000,
            ack_id: "member:2:41".into(),
        }
    }

    #[test]
    fn stream_types_round_trip() {
        for key in [Some(b"k".to_vec()), None] {
            let new = NewRecord {
                key: key.clone(),
                payload: b"p".to_vec(),
                headers: vec![("a".into(), "b".into())],
            };
            assert_eq!(NewRecord::from(FfiNewRecord::from(new.clone())), new);
            assert_eq!(StreamRecord::from(FfiStreamRecord::from(record(key.clone()))), record(key));
        }
        let appended = Appended { partition: 1, offset: 7, timestamp_unix_ms: -1 };
        assert_eq!(Appended::from(FfiAppended::from(appended)), appended);
        let offsets = PartitionOffsets { partition: 0, earliest: 3, next: 10 };
        assert_eq!(PartitionOffsets::from(FfiPartitionOffsets::from(offsets)), offsets);
        for event in [GroupEvent::Assigned(vec![0, 2]), GroupEvent::Record(record(None))] {
            assert_eq!(GroupEvent::from(FfiStreamEvent::from(event.clone())), event);
        }
    }
}
