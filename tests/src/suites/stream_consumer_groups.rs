//! stream_consumer_groups: two members split a stream's partitions and together get
//! every record exactly once when they commit; a member that joins later resumes after
//! the group's committed offsets, receiving again what the previous member left uncommitted.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use plugin_abi::{GroupEvent, GroupFeed};

use super::cases;
use super::stream_basic::{keyed, next_event, stream_name};

/// Rebalances can take a broker several seconds.
const REBALANCE_WAIT: Duration = Duration::from_secs(30);

async fn assignment(events: &mut GroupFeed) -> Vec<u32> {
    match next_event(events, REBALANCE_WAIT).await {
        GroupEvent::Assigned(partitions) => partitions,
        GroupEvent::Record(record) => {
            panic!("expected an assignment, got record {}:{}", record.partition, record.offset)
        }
    }
}

/// What one member received: (partition, offset, payload), committing each record.
async fn consume(
    groups: &plugin_abi::host::StreamConsumerGroupsHandle<'_>,
    events: &mut GroupFeed,
    stream: &str,
    group: &str,
    owned: &[u32],
    until: impl Fn() -> bool,
    received: &std::sync::Mutex<Vec<(u32, u64)>>,
) {
    while !until() {
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), events.next_batch(64)).await
        else {
            continue;
        };
        for event in batch.expect("the group feed failed") {
            match event {
                GroupEvent::Record(record) => {
                    assert!(
                        owned.contains(&record.partition),
                        "record of partition {} reached a member owning {owned:?}",
                        record.partition
                    );
                    groups.commit(stream, group, &record.ack_id).await.unwrap();
                    received.lock().unwrap().push((record.partition, record.offset));
                }
                GroupEvent::Assigned(partitions) => {
                    panic!("unexpected rebalance to {partitions:?} while consuming")
                }
            }
        }
    }
}

cases! {
    async fn two_members_split_the_partitions_and_get_every_record_once(instance, keys) {
        let streams = instance.stream_basic().expect("stream_consumer_groups needs stream_basic");
        let groups = instance.stream_consumer_groups().expect("declared stream_consumer_groups");
        let stream = stream_name(keys, "split");
        let group = stream_name(keys, "g");
        streams.append(&stream, keyed("create", b"first".to_vec())).await.unwrap();
        let partitions = streams.offsets(&stream).await.unwrap().len() as u32;
        assert!(partitions >= 2, "this case needs a stream of at least 2 partitions (configure the plugin so)");

        let mut first = groups.join(&stream, &group).await.unwrap();
        let alone = assignment(&mut first).await;
        assert_eq!(alone.len() as u32, partitions, "a single member owns every partition");
        let mut second = groups.join(&stream, &group).await.unwrap();
        let second_owns = assignment(&mut second).await;
        // The first member may see its records of the first record, then its new assignment.
        let first_owns = loop {
            match next_event(&mut first, REBALANCE_WAIT).await {
                GroupEvent::Assigned(partitions) => break partitions,
                GroupEvent::Record(record) => {
                    groups.commit(&stream, &group, &record.ack_id).await.ok();
                }
            }
        };
        let a: BTreeSet<u32> = first_owns.iter().copied().collect();
        let b: BTreeSet<u32> = second_owns.iter().copied().collect();
        assert!(a.is_disjoint(&b), "both members own some partition: {a:?} / {b:?}");
        assert_eq!(a.len() + b.len(), partitions as usize, "some partition has no owner: {a:?} / {b:?}");
        assert!(!a.is_empty() && !b.is_empty(), "one member got nothing: {a:?} / {b:?}");

        let before = streams.offsets(&stream).await.unwrap();
        let mut expected = HashSet::new();
        for i in 0..60u32 {
            let at = streams.append(&stream, keyed(&format!("key-{i}"), i.to_be_bytes().to_vec())).await.unwrap();
            expected.insert((at.partition, at.offset));
        }
        // The record appended before the join was delivered (and committed) already, or is
        // delivered now: count only what was appended after the rebalance.
        let appended_before = |p: u32, o: u64| before.iter().any(|b| b.partition == p && o < b.next);
        let received = std::sync::Mutex::new(Vec::new());
        let done = || {
            received.lock().unwrap().iter().filter(|(p, o)| !appended_before(*p, *o)).count() >= expected.len()
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            futures::join!(
                consume(&groups, &mut first, &stream, &group, &first_owns, done, &received),
                consume(&groups, &mut second, &stream, &group, &second_owns, done, &received),
            )
        })
        .await
        .expect("the two members did not receive all 60 records within 60 s");
        let received: Vec<(u32, u64)> =
            received.into_inner().unwrap().into_iter().filter(|(p, o)| !appended_before(*p, *o)).collect();
        let unique: HashSet<(u32, u64)> = received.iter().copied().collect();
        assert_eq!(unique.len(), received.len(), "some record was delivered twice");
        assert_eq!(unique, expected, "the members did not receive exactly what was appended");
    }

    async fn a_later_member_resumes_after_the_committed_offset(instance, keys) {
        let streams = instance.stream_basic().unwrap();
        let groups = instance.stream_consumer_groups().unwrap();
        let stream = stream_name(keys, "resume");
        let group = stream_name(keys, "g");
        let mut appended = Vec::new();
        for i in 0..10u8 {
            appended.push(streams.append(&stream, keyed("one-key", vec![i])).await.unwrap());
        }
        let partition = appended[0].partition;

        let mut first = groups.join(&stream, &group).await.unwrap();
        assignment(&mut first).await;
        let mut seen = Vec::new();
        while seen.len() < 6 {
            match next_event(&mut first, REBALANCE_WAIT).await {
                GroupEvent::Record(record) if record.partition == partition => seen.push(record),
                GroupEvent::Record(_) => {}
                GroupEvent::Assigned(partitions) => panic!("unexpected rebalance to {partitions:?}"),
            }
        }
        assert_eq!(seen.iter().map(|r| r.payload[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        // Received six, committed four: the last two are not done.
        groups.commit(&stream, &group, &seen[3].ack_id).await.unwrap();
        // A late commit of an earlier record does not move the group back.
        groups.commit(&stream, &group, &seen[1].ack_id).await.unwrap();
        let committed = groups.committed(&stream, &group).await.unwrap();
        let position = committed.iter().find(|(p, _)| *p == partition).and_then(|(_, c)| *c);
        assert_eq!(position, Some(appended[4].offset), "the committed position is the next offset to consume");
        drop(first);

        let mut second = groups.join(&stream, &group).await.unwrap();
        assignment(&mut second).await;
        let mut resumed = Vec::new();
        while resumed.len() < 6 {
            match next_event(&mut second, REBALANCE_WAIT).await {
                GroupEvent::Record(record) if record.partition == partition => resumed.push(record),
                GroupEvent::Record(_) => {}
                // The first member's departure may still be settling.
                GroupEvent::Assigned(_) => {}
            }
        }
        assert_eq!(
            resumed.iter().map(|r| r.payload[0]).collect::<Vec<_>>(),
            vec![4, 5, 6, 7, 8, 9],
            "the new member must start right after the committed offset"
        );
        assert_eq!(resumed[0].offset, appended[4].offset);
    }
}
