//! stream_replay: the offset for a timestamp is the first record at or after it, so a
//! read can replay from a point in time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cases;
use super::stream_basic::{drain, keyed, stream_name};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

cases! {
    async fn a_read_replays_from_a_timestamp(instance, keys) {
        let streams = instance.stream_basic().expect("stream_replay needs stream_basic");
        let replay = instance.stream_replay().expect("declared stream_replay");
        let stream = stream_name(keys, "replay");
        let mut first = None;
        for i in 0..5u8 {
            let at = streams.append(&stream, keyed("k", vec![i])).await.unwrap();
            first.get_or_insert(at);
        }
        let first = first.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let since = now_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut later = Vec::new();
        for i in 5..10u8 {
            later.push(streams.append(&stream, keyed("k", vec![i])).await.unwrap());
        }
        let partition = first.partition;
        let offset = replay.offset_for_timestamp(&stream, partition, since).await.unwrap();
        assert_eq!(offset, later[0].offset, "the first record at or after the timestamp");
        let mut read = streams.read(&stream, partition, offset, false).await.unwrap();
        let payloads: Vec<Vec<u8>> = drain(&mut read).await.into_iter().map(|r| r.payload).collect();
        assert_eq!(payloads, (5..10u8).map(|i| vec![i]).collect::<Vec<_>>());

        let start = replay.offset_for_timestamp(&stream, partition, first.timestamp_unix_ms - 60_000).await.unwrap();
        assert_eq!(start, first.offset, "a time before every record replays from the start");
        let end = replay.offset_for_timestamp(&stream, partition, now_ms() + 60_000).await.unwrap();
        assert_eq!(end, later[4].offset + 1, "a time after every record is the partition's end");
    }
}
