//! stream_basic: appends get dense offsets per partition, reads return a partition in
//! offset order from any offset, a read without follow ends at the end, one with
//! follow waits for new records, and an unknown stream is NOT_FOUND.

use std::time::Duration;

use plugin_abi::{ErrorCode, Feed, NewRecord, RecordFeed, StreamRecord};

use super::cases;

/// A stream name unique to this case, valid on every backend (Kafka's topic rule).
pub(crate) fn stream_name(keys: &super::Keys, name: &str) -> String {
    keys.key(name).chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
}

pub(crate) fn keyed(key: &str, payload: impl Into<Vec<u8>>) -> NewRecord {
    NewRecord { key: Some(key.as_bytes().to_vec()), payload: payload.into(), headers: Vec::new() }
}

/// The next event, failing the case if none comes within `wait`.
pub(crate) async fn next_event<T: Send + 'static>(events: &mut Feed<T>, wait: Duration) -> T {
    match tokio::time::timeout(wait, events.next_batch(1)).await {
        Ok(Some(Ok(mut batch))) => batch.remove(0),
        Ok(Some(Err(error))) => panic!("the feed failed: {error}"),
        Ok(None) => panic!("the feed ended"),
        Err(_) => panic!("nothing arrived within {wait:?}"),
    }
}

pub(crate) async fn next_record(events: &mut RecordFeed) -> StreamRecord {
    next_event(events, Duration::from_secs(10)).await
}

/// Every record until the feed ends (a read without follow), failing after 10 s.
pub(crate) async fn drain(events: &mut RecordFeed) -> Vec<StreamRecord> {
    let mut records = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next_batch(64)).await {
            Ok(Some(Ok(batch))) => records.extend(batch),
            Ok(Some(Err(error))) => panic!("the read failed: {error}"),
            Ok(None) => return records,
            Err(_) => {
                panic!("a read without follow did not end within 10 s ({} records so far)", records.len())
            }
        }
    }
}

cases! {
    async fn offsets_are_dense_and_a_partition_reads_back_in_order(instance, keys) {
        let streams = instance.stream_basic().expect("declared stream_basic");
        let stream = stream_name(keys, "dense");
        let mut appended = Vec::new();
        for i in 0..30u32 {
            let record = NewRecord {
                key: Some(b"one-key".to_vec()),
                payload: i.to_be_bytes().to_vec(),
                headers: vec![("n".into(), i.to_string())],
            };
            appended.push(streams.append(&stream, record).await.unwrap());
        }
        let partition = appended[0].partition;
        for (i, at) in appended.iter().enumerate() {
            assert_eq!(at.partition, partition, "one key went to two partitions");
            assert_eq!(at.offset, appended[0].offset + i as u64, "offsets within a partition must be dense");
        }
        let mut read = streams.read(&stream, partition, appended[0].offset, false).await.unwrap();
        let records = drain(&mut read).await;
        assert_eq!(records.len(), 30);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, appended[i].offset);
            assert_eq!(record.partition, partition);
            assert_eq!(record.payload, (i as u32).to_be_bytes().to_vec());
            assert_eq!(record.key.as_deref(), Some(&b"one-key"[..]));
            assert_eq!(record.headers, vec![("n".to_string(), i.to_string())]);
            assert_eq!(record.timestamp_unix_ms, appended[i].timestamp_unix_ms);
            assert!(record.ack_id.is_empty(), "a plain read carries no ack id");
        }
    }

    async fn a_read_starts_at_the_offset_asked_for(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let stream = stream_name(keys, "from");
        let mut first = None;
        for i in 0..10u8 {
            let at = streams.append(&stream, keyed("k", vec![i])).await.unwrap();
            first.get_or_insert(at);
        }
        let first = first.unwrap();
        let mut read = streams.read(&stream, first.partition, first.offset + 6, false).await.unwrap();
        let payloads: Vec<Vec<u8>> = drain(&mut read).await.into_iter().map(|r| r.payload).collect();
        assert_eq!(payloads, vec![vec![6], vec![7], vec![8], vec![9]]);
    }

    async fn offsets_cover_every_partition_and_every_record(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let stream = stream_name(keys, "offsets");
        for i in 0..12u32 {
            streams.append(&stream, keyed(&format!("key-{i}"), vec![1])).await.unwrap();
        }
        let offsets = streams.offsets(&stream).await.unwrap();
        assert!(!offsets.is_empty());
        for (index, partition) in offsets.iter().enumerate() {
            assert_eq!(partition.partition, index as u32, "partitions must be listed in order");
            assert!(partition.earliest <= partition.next);
        }
        let total: u64 = offsets.iter().map(|p| p.next - p.earliest).sum();
        assert_eq!(total, 12);
    }

    async fn a_following_read_waits_for_new_records(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let stream = stream_name(keys, "follow");
        let at = streams.append(&stream, keyed("k", b"before".to_vec())).await.unwrap();
        let mut read = streams.read(&stream, at.partition, at.offset + 1, true).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), read.next_batch(1)).await;
        assert!(quiet.is_err(), "a following read at the end must wait, not end or repeat");
        for i in 0..3u8 {
            streams.append(&stream, keyed("k", vec![i])).await.unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(next_record(&mut read).await.payload, vec![i]);
        }
    }

    async fn concurrent_appends_are_all_counted_and_read_back(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let stream = stream_name(keys, "concurrent");
        streams.append(&stream, keyed("create", b"-".to_vec())).await.unwrap();
        let streams = &streams;
        let writers = (0..8u32).map(|writer| {
            let stream = stream.clone();
            async move {
                let mut placed = Vec::new();
                for i in 0..50u32 {
                    let record = keyed(&format!("w{writer}-{i}"), i.to_be_bytes().to_vec());
                    let at = streams.append(&stream, record).await.unwrap();
                    placed.push((at.partition, at.offset));
                }
                placed
            }
        });
        let appended: std::collections::HashSet<(u32, u64)> =
            futures::future::join_all(writers).await.into_iter().flatten().collect();
        assert_eq!(appended.len(), 400, "two appends were given the same offset");
        let offsets = streams.offsets(&stream).await.unwrap();
        let total: u64 = offsets.iter().map(|p| p.next - p.earliest).sum();
        assert_eq!(total, 401, "offsets must count every acknowledged append");
        let mut read = std::collections::HashSet::new();
        for partition in &offsets {
            let mut records = streams.read(&stream, partition.partition, 0, false).await.unwrap();
            read.extend(drain(&mut records).await.into_iter().map(|r| (r.partition, r.offset)));
        }
        assert!(appended.is_subset(&read), "a read without follow missed acknowledged records");
    }

    async fn an_unknown_stream_is_not_found(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let stream = stream_name(keys, "never-appended");
        let error = streams.offsets(&stream).await.expect_err("offsets of an unknown stream");
        assert_eq!(error.code(), ErrorCode::NotFound, "{error}");
        let Err(error) = streams.read(&stream, 0, 0, false).await else {
            panic!("reading an unknown stream must fail");
        };
        assert_eq!(error.code(), ErrorCode::NotFound, "{error}");
    }
}
