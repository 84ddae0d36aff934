//! Large payloads: the `claim_check` slot on keyvalue, queue and pubsub namespaces
//! (payloads above `server.claim_check_threshold_bytes` go to an S3-compatible store,
//! a reference through the backend) — against the s3s-fs server `cargo xtask test` starts.

use std::path::PathBuf;
use std::time::Duration;

use prism_acceptance::harness::{backends_available, Backend, Server, S3_CONFIG};
use prism_api::*;
use tokio_stream::StreamExt;

const THRESHOLD: usize = 1024;

/// Where s3s-fs (started by `cargo xtask test`) keeps the test bucket's objects.
fn bucket_dir() -> PathBuf {
    std::env::temp_dir().join("prism-s3").join("prism-test")
}

/// A prefix of the bucket no other test uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("claim-{test}-{}-{nanos}", std::process::id())
}

/// The objects stored under `prefix` (files; s3s-fs keeps its own metadata beside them).
fn objects(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(bucket_dir().join(prefix)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn claim_check_slot(prefix: &str) -> String {
    format!("[namespaces.slots.claim_check]\nplugin = \"s3\"\n[namespaces.slots.claim_check.config]\n{S3_CONFIG}\nprefix = \"{prefix}\"\n")
}

/// A keyvalue namespace `big` with a claim check, `plain` without, a queue `jobs` and a
/// pub/sub namespace `events` with one; extra `[server]` lines first.
fn config(prefix: &str, server: &str, data: &std::path::Path) -> String {
    let slot = claim_check_slot(prefix);
    format!(
        "[server]\nclaim_check_threshold_bytes = {THRESHOLD}\n{server}\n\
         [plugins.memstore]\npath = \"{{memstore}}\"\n[plugins.s3]\npath = \"{{s3}}\"\n[plugins.sqlite]\npath = \"{{sqlite}}\"\n\n\
         [[namespaces]]\nname = \"big\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n{slot}\n\
         [[namespaces]]\nname = \"plain\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n\n\
         [[namespaces]]\nname = \"jobs\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\" }}\n{slot}\n\
         [[namespaces]]\nname = \"events\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"memstore\"\n{slot}",
        data.join("jobs.db").display()
    )
}

struct Setup {
    server: Server,
    prefix: String,
    _data: tempfile::TempDir,
}

fn start(test: &str, server_settings: &str) -> Option<Setup> {
    if !backends_available(&[Backend::S3]) {
        return None;
    }
    let prefix = unique_prefix(test);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(&prefix, server_settings, data.path()));
    Some(Setup { server, prefix, _data: data })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 13) as u8)).collect()
}

fn set(namespace: &str, key: &str, value: Vec<u8>) -> SetRequest {
    SetRequest { namespace: namespace.into(), key: key.into(), value: value.into(), ..Default::default() }
}

fn get(namespace: &str, key: &str) -> GetRequest {
    GetRequest { namespace: namespace.into(), key: key.into(), ..Default::default() }
}

#[tokio::test]
async fn a_value_above_the_threshold_goes_to_the_object_store_and_comes_back_whole() {
    let Some(setup) = start("kv", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    let small = pattern(THRESHOLD, 1);
    kv.set(set("big", "small", small.clone())).await.unwrap();
    assert!(objects(&setup.prefix).is_empty(), "a value at the threshold stays in the backend");

    let large = pattern(512 * 1024, 2);
    kv.set(set("big", "large", large.clone())).await.unwrap();
    assert_eq!(objects(&setup.prefix).len(), 1, "the large value is one object");
    let reply = kv.get(get("big", "large")).await.unwrap().into_inner();
    assert!(reply.found);
    assert_eq!(reply.value.len(), large.len());
    assert!(reply.value[..] == large[..], "the payload comes back byte for byte");
    assert_eq!(&kv.get(get("big", "small")).await.unwrap().into_inner().value[..], &small[..]);

    // Overwriting replaces the object; a small value leaves none behind; Delete removes it.
    let larger = pattern(700 * 1024, 3);
    kv.set(set("big", "large", larger.clone())).await.unwrap();
    assert_eq!(objects(&setup.prefix).len(), 1, "the old object is deleted on overwrite");
    assert!(kv.get(get("big", "large")).await.unwrap().into_inner().value[..] == larger[..]);
    kv.set(set("big", "large", b"tiny".to_vec())).await.unwrap();
    assert!(objects(&setup.prefix).is_empty(), "overwritten by a small value, the object is deleted");
    kv.set(set("big", "large", larger.clone())).await.unwrap();
    let deleted = kv
        .delete(DeleteRequest { namespace: "big".into(), key: "large".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(objects(&setup.prefix).is_empty(), "the object is deleted with its key");
    assert!(!kv.get(get("big", "large")).await.unwrap().into_inner().found);
}

#[tokio::test]
async fn scans_and_batches_return_claimed_values_resolved() {
    let Some(setup) = start("scan", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    let large = pattern(300 * 1024, 4);
    kv.set(set("big", "s/1", large.clone())).await.unwrap();
    kv.set(set("big", "s/2", b"small".to_vec())).await.unwrap();
    let page = kv
        .scan(ScanRequest { namespace: "big".into(), prefix: "s/".into(), limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 2);
    assert!(page.entries[0].value[..] == large[..], "Scan returns the payload, not the reference");
    assert_eq!(&page.entries[1].value[..], b"small");
    let batch = kv
        .batch_get(BatchGetRequest { namespace: "big".into(), keys: vec!["s/1".into(), "s/2".into()] })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.results[0].value[..] == large[..], "BatchGet returns the payload");
    let mut streamed = kv
        .scan_stream(ScanStreamRequest { namespace: "big".into(), prefix: "s/".into() })
        .await
        .unwrap()
        .into_inner();
    let first = streamed.next().await.unwrap().unwrap();
    assert!(first.value[..] == large[..], "ScanStream returns the payload");
}

#[tokio::test]
async fn a_value_that_looks_like_a_reference_is_stored_safely() {
    let Some(setup) = start("marker", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    let mut marked = b"\0prism-claim-check\0v1 5 ".to_vec();
    marked.extend_from_slice(&[b'0'; 64]);
    marked.extend_from_slice(b" other/namespace-object");
    kv.set(set("big", "m", marked.clone())).await.unwrap();
    assert_eq!(objects(&setup.prefix).len(), 1, "a marked value is always claimed");
    assert_eq!(&kv.get(get("big", "m")).await.unwrap().into_inner().value[..], &marked[..]);
    let status = kv
        .batch_set(BatchSetRequest {
            namespace: "big".into(),
            entries: vec![KeyValue { key: "b".into(), value: marked.into() }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("claim-check marker"), "{}", status.message());
}

#[tokio::test]
async fn a_damaged_object_is_data_loss_not_wrong_bytes() {
    let Some(setup) = start("damaged", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    kv.set(set("big", "k", pattern(64 * 1024, 5))).await.unwrap();
    let stored = objects(&setup.prefix);
    assert_eq!(stored.len(), 1);
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&stored[0], &bytes).unwrap();
    let status = kv.get(get("big", "k")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(status.message().contains("does not match its reference"), "{}", status.message());

    std::fs::remove_file(&stored[0]).unwrap();
    let status = kv.get(get("big", "k")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss);
    assert!(status.message().contains("gone from the claim-check store"), "{}", status.message());
}

#[tokio::test]
async fn a_claimed_queue_message_is_delivered_whole_and_its_object_deleted_on_ack() {
    let Some(setup) = start("queue", "") else { return };
    let mut queue = setup.server.queue().await;
    let payload = pattern(200 * 1024, 7);
    let enqueue = EnqueueRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        payload: payload.clone().into(),
        ..Default::default()
    };
    queue.enqueue(enqueue).await.unwrap();
    queue
        .enqueue(EnqueueRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            payload: b"small".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(objects(&setup.prefix).len(), 1);
    let delivered = queue
        .dequeue(DequeueRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            max_messages: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(delivered.len(), 2);
    assert!(delivered[0].payload[..] == payload[..], "the consumer gets the payload");
    assert_eq!(&delivered[1].payload[..], b"small");
    assert_eq!(objects(&setup.prefix).len(), 1, "the object stays until the message is acked");
    for message in &delivered {
        let ack =
            AckRequest { namespace: "jobs".into(), queue: "q".into(), receipt: message.receipt.clone() };
        assert!(queue.ack(ack).await.unwrap().into_inner().acked);
    }
    assert!(objects(&setup.prefix).is_empty(), "acked, the object is deleted");
}

#[tokio::test]
async fn subscribers_receive_claimed_pubsub_payloads_whole() {
    let Some(setup) = start("pubsub", "") else { return };
    let mut pubsub = setup.server.pubsub().await;
    let mut subscription = pubsub
        .subscribe(SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let payload = pattern(256 * 1024, 8);
    for body in [payload.clone(), b"small".to_vec()] {
        let publish = PublishRequest {
            namespace: "events".into(),
            topic: "t".into(),
            payload: body.into(),
            ..Default::default()
        };
        pubsub.publish(publish).await.unwrap();
    }
    let mut received = Vec::new();
    while received.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received.push(event.message.expect("a message").payload);
    }
    assert!(received[0][..] == payload[..], "the subscriber gets the payload");
    assert_eq!(&received[1][..], b"small");
    assert_eq!(objects(&setup.prefix).len(), 1, "pub/sub objects are left to the bucket's lifecycle");
}
