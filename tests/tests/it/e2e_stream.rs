//! Streams through the gateway: append and read back over gRPC, replay from an offset
//! and a timestamp, tail with follow, consumer groups with commits, input checks, and
//! a reader that does not read holding no more than a batch of host memory.

use std::collections::HashSet;
use std::time::Duration;

use prism_acceptance::harness::{backends_available, Backend, Server};
use prism_api::join_group_response::Event;
use prism_api::read_request::Start;
use prism_api::*;
use tonic::{Code, Streaming};

fn config() -> String {
    format!(
        r#"
[plugins.memstore]
path = "{{memstore}}"

[plugins.kafka]
path = "{{kafka}}"

[[namespaces]]
name = "logs"
pattern = "stream"
[namespaces.slots.log]
plugin = "memstore"
config = {{ stream_partitions = 3 }}

[[namespaces]]
name = "kafka-logs"
pattern = "stream"
[namespaces.slots.log]
plugin = "kafka"
config = {{ brokers = "127.0.0.1:9092", topic_prefix = "prism-e2e-{}.", partitions = 3 }}

[[namespaces]]
name = "tiny"
pattern = "stream"
[namespaces.slots.log]
plugin = "memstore"
config = {{ max_bytes = 2500 }}

[[namespaces]]
name = "kv"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"
"#,
        std::process::id()
    )
}

/// The same behaviour is expected of every stream backend.
const STREAM_NAMESPACES: [&str; 2] = ["logs", "kafka-logs"];

fn append(namespace: &str, stream: &str, key: &str, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        namespace: namespace.into(),
        stream: stream.into(),
        key: Some(key.as_bytes().to_vec().into()),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

fn read(namespace: &str, stream: &str, partition: u32, start: Option<Start>, follow: bool) -> ReadRequest {
    ReadRequest {
        namespace: namespace.into(),
        stream: stream.into(),
        partition,
        start,
        follow,
        max_records: 0,
    }
}

async fn all(mut responses: Streaming<ReadResponse>) -> Vec<StreamRecord> {
    let mut records = Vec::new();
    while let Some(response) = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the read ends")
        .unwrap()
    {
        records.push(response.record.unwrap());
    }
    records
}

async fn next_event(events: &mut Streaming<JoinGroupResponse>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .expect("no stream error")
        .expect("the group feed is open")
        .event
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_append_and_read_back_from_an_offset_a_timestamp_and_the_end() {
    if !backends_available(&[Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    for namespace in STREAM_NAMESPACES {
        append_and_read_back(&server, namespace).await;
    }
}

async fn append_and_read_back(server: &Server, ns: &str) {
    let mut client = server.stream().await;
    let mut appended = Vec::new();
    for i in 0..10u8 {
        let mut request = append(ns, "orders", "customer-7", &[i]);
        request.headers.insert("n".into(), i.to_string());
        appended.push(client.append(request).await.unwrap().into_inner());
    }
    let partition = appended[0].partition;
    assert!(appended.windows(2).all(|w| w[1].offset == w[0].offset + 1 && w[1].partition == partition));

    let records =
        all(client.read(read(ns, "orders", partition, None, false)).await.unwrap().into_inner()).await;
    assert_eq!(records.iter().map(|r| r.payload[0]).collect::<Vec<_>>(), (0..10).collect::<Vec<u8>>());
    assert_eq!(records[3].headers.get("n").map(String::as_str), Some("3"));
    assert_eq!(records[3].key.as_deref(), Some(&b"customer-7"[..]));

    let from_offset = read(ns, "orders", partition, Some(Start::FromOffset(appended[7].offset)), false);
    let records = all(client.read(from_offset).await.unwrap().into_inner()).await;
    assert_eq!(records.iter().map(|r| r.payload[0]).collect::<Vec<_>>(), vec![7, 8, 9]);

    let since = appended[9].timestamp_unix_ms + 1;
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.append(append(ns, "orders", "customer-7", b"late")).await.unwrap();
    let from_time = read(ns, "orders", partition, Some(Start::FromTimestampUnixMs(since)), false);
    let records = all(client.read(from_time).await.unwrap().into_inner()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0].payload[..], b"late");

    let mut limited = read(ns, "orders", partition, None, false);
    limited.max_records = 4;
    assert_eq!(all(client.read(limited).await.unwrap().into_inner()).await.len(), 4);

    let mut tail = client
        .read(read(ns, "orders", partition, Some(Start::FromEnd(true)), true))
        .await
        .unwrap()
        .into_inner();
    client.append(append(ns, "orders", "customer-7", b"new")).await.unwrap();
    let record =
        tokio::time::timeout(Duration::from_secs(5), tail.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(&record.record.unwrap().payload[..], b"new");

    let offsets = client
        .get_offsets(GetOffsetsRequest {
            namespace: ns.into(),
            stream: "orders".into(),
            group: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offsets.partitions.len(), 3);
    assert_eq!(offsets.partitions[partition as usize].next, appended[0].offset + 12);
}

fn commit(namespace: &str, ack_id: String) -> CommitRequest {
    CommitRequest { namespace: namespace.into(), stream: "jobs".into(), group: "workers".into(), ack_id }
}

/// Forwards a member's records (tagged with the member) until the call ends.
fn forward(
    member: usize,
    mut events: Streaming<JoinGroupResponse>,
    sink: tokio::sync::mpsc::UnboundedSender<(usize, StreamRecord)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(Some(response)) = events.message().await {
            match response.event.unwrap() {
                Event::Record(record) => {
                    if sink.send((member, record)).is_err() {
                        return;
                    }
                }
                Event::Assignment(assignment) => {
                    panic!("unexpected rebalance to {:?}", assignment.partitions)
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_group_members_over_grpc_share_the_records_and_commits_are_visible() {
    if !backends_available(&[Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    for namespace in STREAM_NAMESPACES {
        two_members_share(&server, namespace).await;
    }
}

async fn two_members_share(server: &Server, ns: &str) {
    let mut client = server.stream().await;
    client.append(append(ns, "jobs", "create", b"-")).await.unwrap();
    let join = || JoinGroupRequest { namespace: ns.into(), stream: "jobs".into(), group: "workers".into() };
    let mut first = client.join_group(join()).await.unwrap().into_inner();
    assert!(matches!(next_event(&mut first).await, Event::Assignment(a) if a.partitions.len() == 3));
    let mut second = client.join_group(join()).await.unwrap().into_inner();
    let Event::Assignment(second_owns) = next_event(&mut second).await else { panic!("assignment first") };
    // The first member may get the first record before it learns of the rebalance.
    let first_owns = loop {
        if let Event::Assignment(assignment) = next_event(&mut first).await {
            break assignment;
        }
    };
    assert_eq!(first_owns.partitions.len() + second_owns.partitions.len(), 3);
    let owns = [first_owns.partitions, second_owns.partitions];

    let (sink, mut records) = tokio::sync::mpsc::unbounded_channel();
    let readers = [forward(0, first, sink.clone()), forward(1, second, sink)];
    for i in 0..30u32 {
        client.append(append(ns, "jobs", &format!("job-{i}"), &i.to_be_bytes())).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 30 {
        let (member, record) = tokio::time::timeout(Duration::from_secs(10), records.recv())
            .await
            .expect("records keep coming")
            .unwrap();
        assert!(
            owns[member].contains(&record.partition),
            "member {member} got partition {}",
            record.partition
        );
        if &record.payload[..] == b"-" {
            continue; // redelivered to its partition's new owner: at least once
        }
        client.commit(commit(ns, record.ack_id.clone())).await.unwrap();
        assert!(seen.insert(record.payload.to_vec()), "record {} delivered twice", record.offset);
    }
    let offsets = client
        .get_offsets(GetOffsetsRequest {
            namespace: ns.into(),
            stream: "jobs".into(),
            group: "workers".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(offsets.partitions.iter().any(|p| p.committed.is_some()), "commits show in GetOffsets");
    for reader in readers {
        reader.abort();
    }
}

#[tokio::test]
async fn bad_requests_get_statuses_a_person_can_act_on() {
    if !backends_available(&[Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    let mut client = server.stream().await;
    let status = client.append(append("logs", "bad/name", "k", b"x")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("letters, digits"), "{}", status.message());

    let status = client.read(read("logs", "never-written", 0, None, false)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());

    client.append(append("logs", "small", "k", b"x")).await.unwrap();
    let status = client.read(read("logs", "small", 9, None, false)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    let mut wrong_pattern = append("logs", "s", "k", b"x");
    wrong_pattern.namespace = "kv".into();
    let status = client.append(wrong_pattern).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());

    // Stream records count against memstore's max_bytes like any other data.
    let big = |n: u8| AppendRequest {
        namespace: "tiny".into(),
        stream: "s".into(),
        payload: vec![n; 1000].into(),
        ..Default::default()
    };
    client.append(big(1)).await.unwrap();
    client.append(big(2)).await.unwrap();
    let status = client.append(big(3)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("max_bytes"), "{}", status.message());

    let commit = CommitRequest {
        namespace: "logs".into(),
        stream: "small".into(),
        group: "g".into(),
        ack_id: "forged".into(),
    };
    let status = client.commit(commit).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_holds_little_host_memory() {
    if !backends_available(&[Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    let mut client = server.stream().await;
    let payload = vec![7u8; 16384];
    let writes = (0..12_500u32).map(|_| append("logs", "big", "one-key", &payload));
    for request in writes {
        client.append(request).await.unwrap();
    }
    let offsets = client
        .get_offsets(GetOffsetsRequest {
            namespace: "logs".into(),
            stream: "big".into(),
            group: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let partition = offsets.partitions.iter().find(|p| p.next > 0).unwrap().partition;
    let before = server.rss_bytes();
    let mut slow = client.read(read("logs", "big", partition, None, false)).await.unwrap().into_inner();
    slow.message().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = server.rss_bytes().saturating_sub(before);
    // 12 500 × 16 KiB = 200 MiB of log; a reader may pin a few batches of it, no more.
    assert!(
        grown < 32 * 1024 * 1024,
        "host memory grew by {} MiB for one idle reader",
        grown / (1024 * 1024)
    );
    let mut rest = 1;
    while let Some(response) = slow.message().await.unwrap() {
        assert_eq!(response.record.unwrap().payload.len(), 16384);
        rest += 1;
    }
    assert_eq!(rest, 12_500, "the slow reader still gets every record");
}
