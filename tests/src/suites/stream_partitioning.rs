//! stream_partitioning: the same key always lands in the same partition with its
//! records in append order, and a record can be put in a partition of the caller's choice.

use std::collections::HashMap;

use plugin_abi::{ErrorCode, NewRecord};

use super::cases;
use super::stream_basic::{drain, keyed, stream_name};

cases! {
    async fn each_key_keeps_to_one_partition_in_append_order(instance, keys) {
        let streams = instance.stream_basic().expect("stream_partitioning needs stream_basic");
        let stream = stream_name(keys, "keys");
        let mut placed: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
        for round in 0..20u32 {
            for key in ["alpha", "bravo", "charlie", "delta"] {
                let at = streams.append(&stream, keyed(key, round.to_be_bytes().to_vec())).await.unwrap();
                placed.entry(key.to_string()).or_default().push((at.partition, at.offset));
            }
        }
        for (key, places) in &placed {
            assert!(places.iter().all(|(p, _)| *p == places[0].0), "key {key} went to several partitions: {places:?}");
            assert!(places.windows(2).all(|w| w[0].1 < w[1].1), "key {key}'s offsets are not increasing");
            let mut read = streams.read(&stream, places[0].0, 0, false).await.unwrap();
            let rounds: Vec<Vec<u8>> = drain(&mut read)
                .await
                .into_iter()
                .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
                .map(|r| r.payload)
                .collect();
            let expected: Vec<Vec<u8>> = (0..20u32).map(|r| r.to_be_bytes().to_vec()).collect();
            assert_eq!(rounds, expected, "key {key} read back out of order");
        }
    }

    async fn a_record_goes_to_the_partition_asked_for(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let partitioning = instance.stream_partitioning().expect("declared stream_partitioning");
        let stream = stream_name(keys, "explicit");
        streams.append(&stream, keyed("create", b"x".to_vec())).await.unwrap();
        let partitions = streams.offsets(&stream).await.unwrap().len() as u32;
        for partition in 0..partitions {
            let record = NewRecord { key: Some(b"same".to_vec()), payload: vec![partition as u8], headers: Vec::new() };
            let at = partitioning.append_to_partition(&stream, partition, record).await.unwrap();
            assert_eq!(at.partition, partition);
            let mut read = streams.read(&stream, partition, at.offset, false).await.unwrap();
            let records = drain(&mut read).await;
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].payload, vec![partition as u8]);
        }
        let record = NewRecord { key: None, payload: b"nowhere".to_vec(), headers: Vec::new() };
        let error = partitioning
            .append_to_partition(&stream, partitions, record)
            .await
            .expect_err("a partition past the last one");
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
    }
}
