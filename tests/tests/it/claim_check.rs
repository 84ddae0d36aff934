//! Large payloads: the `claim_check` slot on keyvalue, queue and pubsub namespaces
//! (payloads above `server.claim_check_threshold_bytes` go to an S3-compatible store,
//! a reference through the backend), and SetStream/GetStream for values larger than one
//! message — against the s3s-fs server `cargo xtask test` starts.

use std::path::PathBuf;
use std::time::Duration;

use prism_acceptance::harness::{backends_available, Backend, Server, S3_CONFIG};
use prism_api::*;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

const THRESHOLD: usize = 1024;
const MIB: usize = 1024 * 1024;

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
         [[namespaces]]\nname = \"jobs\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\", max_deliveries = 1, visibility_timeout_ms = 300 }}\n{slot}\n\
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

/// A reader racing a writer on one key: the object a reader's reference names may be
/// deleted by the overwrite before the reader fetches it. The reader must then read the
/// key again — never answer DATA_LOSS for a value that is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_overwrites_get_a_whole_value_never_data_loss() {
    let Some(setup) = start("race", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    let values: Vec<Vec<u8>> = (0..4u8).map(|seed| pattern(4096, seed)).collect();
    kv.set(set("big", "hot", values[0].clone())).await.unwrap();
    let mut writer = kv.clone();
    let written = values.clone();
    let writes = tokio::spawn(async move {
        for round in 0..400 {
            writer.set(set("big", "hot", written[round % written.len()].clone())).await.unwrap();
        }
    });
    // Eight readers on two cores: a reader is often descheduled between reading the
    // reference and fetching its object, which is when an overwrite deletes it.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (mut kv, values) = (kv.clone(), values.clone());
            tokio::spawn(async move {
                let mut reads = 0u32;
                for _ in 0..300 {
                    let reply = kv.get(get("big", "hot")).await.expect("a read racing an overwrite succeeds");
                    let value = reply.into_inner().value;
                    assert!(
                        values.iter().any(|written| written[..] == value[..]),
                        "a read returned bytes never written"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    writes.await.unwrap();
    assert_eq!(reads, 8 * 300);
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
    // Pages are cut by the payloads' sizes, not their references': two 300 KiB payloads
    // do not fit in 400 KiB.
    let cut = ScanRequest {
        namespace: "big".into(),
        prefix: "s/".into(),
        limit: 10,
        max_page_bytes: 400 * 1024,
        ..Default::default()
    };
    kv.set(set("big", "s/0", large.clone())).await.unwrap();
    let page = kv.scan(cut).await.unwrap().into_inner();
    assert_eq!(page.entries.len(), 1, "a page of claimed values is cut by their payloads' sizes");
    assert!(!page.next_cursor.is_empty());
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

/// Two namespaces over one database, only one with a claim check: a reference written
/// through the other cannot make the claim check read past its own namespace's objects.
#[tokio::test]
async fn a_reference_to_another_namespaces_object_is_refused() {
    if !backends_available(&[Backend::S3]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("shared.db");
    let prefix = unique_prefix("forged");
    let mut config = format!(
        "[plugins.sqlite]\npath = \"{{sqlite}}\"\n[plugins.s3]\npath = \"{{s3}}\"\n\n\
         [[namespaces]]\nname = \"victim\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\" }}\n{}\n\
         [[namespaces]]\nname = \"writer\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\" }}\n",
        data.path().join("victim.db").display(),
        claim_check_slot(&prefix),
        database.display(),
    );
    config += &format!(
        "\n[[namespaces]]\nname = \"reader\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\" }}\n{}",
        database.display(),
        claim_check_slot(&prefix),
    );
    let server = Server::start(&config);
    let mut kv = server.keyvalue().await;
    let secret = pattern(300 * 1024, 9); // above the default threshold of 256 KiB
    kv.set(set("victim", "secret", secret)).await.unwrap();
    let stored = objects(&prefix);
    assert_eq!(stored.len(), 1);
    // The object's name as the reference holds it: `{namespace}/{random}`.
    let name = stored[0].file_name().unwrap().to_string_lossy().replace("%2F", "/");
    assert!(name.starts_with("victim/"), "{name}");
    let mut forged = b"\0prism-claim-check\0v1 307200 ".to_vec();
    forged.extend_from_slice(format!("{} {name}", "0".repeat(64)).as_bytes());
    kv.set(set("writer", "forged", forged)).await.unwrap();
    let status = kv.get(get("reader", "forged")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("another namespace"), "{}", status.message());
}

/// A write the backend refuses stored nothing: the object uploaded for it is deleted.
#[tokio::test]
async fn a_refused_write_leaves_no_object_behind() {
    if !backends_available(&[Backend::S3]) {
        return;
    }
    let prefix = unique_prefix("refused");
    let server = Server::start(&format!(
        "[plugins.panicking]\npath = \"{{panicking}}\"\n[plugins.s3]\npath = \"{{s3}}\"\n\n\
         [[namespaces]]\nname = \"basic\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"panicking\"\n{}",
        claim_check_slot(&prefix)
    ));
    let mut kv = server.keyvalue().await;
    // The fixture has no keyvalue_ttl: a Set with a TTL is refused after the upload.
    let request = SetRequest { ttl_ms: 60_000, ..set("basic", "k", pattern(300 * 1024, 11)) };
    let status = kv.set(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(objects(&prefix).is_empty(), "the refused write's object was left behind");
    kv.set(set("basic", "k", pattern(300 * 1024, 11))).await.unwrap();
    assert_eq!(objects(&prefix).len(), 1);
}

/// A bucket that does not exist: the namespace reports NOT_SERVING naming it (a HEAD
/// would have said "no such object" and looked healthy). No write is tried: s3s-fs,
/// unlike S3, creates a missing bucket on the first PUT.
#[tokio::test]
async fn a_missing_bucket_is_unhealthy_and_named() {
    if !backends_available(&[Backend::S3]) {
        return;
    }
    let slot =
        claim_check_slot("missing").replace("bucket = \"prism-test\"", "bucket = \"prism-no-such-bucket\"");
    let server = Server::start(&format!(
        "[server]\nhealth_interval_ms = 200\n[plugins.memstore]\npath = \"{{memstore}}\"\n[plugins.s3]\npath = \"{{s3}}\"\n\n\
         [[namespaces]]\nname = \"big\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n{slot}"
    ));
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = tonic_health::pb::HealthCheckRequest { service: "big".into() };
        let status = health.check(request).await.map(|reply| reply.into_inner().status).ok();
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::NotServing as i32) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the namespace never became NOT_SERVING: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.stderr().contains("bucket prism-no-such-bucket"), "{}", server.stderr());
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

/// Sends `total` bytes of `pattern` to SetStream in `chunk`-sized messages, without
/// ever holding more than one chunk; returns the response or the status.
async fn set_stream(
    kv: &mut key_value_service_client::KeyValueServiceClient<tonic::transport::Channel>,
    namespace: &str,
    key: &str,
    total: usize,
    chunk: usize,
) -> Result<SetStreamResponse, tonic::Status> {
    let (namespace, key) = (namespace.to_owned(), key.to_owned());
    let messages = futures::stream::iter((0..total.div_ceil(chunk)).map(move |index| {
        let len = chunk.min(total - index * chunk);
        let bytes = block(index, len);
        let (namespace, key) = if index == 0 { (namespace.clone(), key.clone()) } else { Default::default() };
        SetStreamRequest { namespace, key, chunk: bytes.into(), ..Default::default() }
    }));
    kv.set_stream(messages).await.map(|response| response.into_inner())
}

/// The bytes of block `index` of a streamed test value: cheap to make, never repeating.
fn block(index: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for (offset, word) in bytes.chunks_mut(8).enumerate() {
        let value = ((index as u64) << 32 | offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        word.copy_from_slice(&value.to_le_bytes()[..word.len()]);
    }
    bytes
}

fn expected_sha256(total: usize, chunk: usize) -> String {
    let mut hasher = Sha256::new();
    for index in 0..total.div_ceil(chunk) {
        hasher.update(block(index, chunk.min(total - index * chunk)));
    }
    hex::encode(hasher.finalize())
}

/// Reads a GetStream to its end: (size announced, bytes read, sha256, largest message).
async fn get_stream(
    kv: &mut key_value_service_client::KeyValueServiceClient<tonic::transport::Channel>,
    namespace: &str,
    key: &str,
) -> Result<(u64, u64, String, usize), tonic::Status> {
    let mut stream =
        kv.get_stream(GetStreamRequest { namespace: namespace.into(), key: key.into() }).await?.into_inner();
    let mut hasher = Sha256::new();
    let (mut size, mut read, mut largest) = (None, 0u64, 0usize);
    while let Some(message) = stream.next().await {
        let message = message?;
        size.get_or_insert(message.size);
        read += message.chunk.len() as u64;
        largest = largest.max(message.chunk.len());
        hasher.update(&message.chunk);
    }
    Ok((size.unwrap_or_default(), read, hex::encode(hasher.finalize()), largest))
}

#[tokio::test]
async fn set_stream_and_get_stream_carry_values_larger_than_one_message() {
    let Some(setup) = start("stream", "max_object_bytes = 41943040") else { return };
    let mut kv = setup.server.keyvalue().await;
    let total = 24 * MIB + 123;
    let stored = set_stream(&mut kv, "big", "v", total, MIB).await.unwrap();
    assert_eq!(stored.size, total as u64);
    assert_eq!(stored.sha256, expected_sha256(total, MIB));
    let (size, read, sha256, largest) = get_stream(&mut kv, "big", "v").await.unwrap();
    assert_eq!((size, read), (total as u64, total as u64));
    assert_eq!(sha256, stored.sha256, "the value reads back byte for byte");
    assert!(largest <= MIB, "messages are at most 1 MiB, got {largest}");

    // A value this large is refused by the unary Get, naming the streaming call.
    let status = kv.get(get("big", "v")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("GetStream"), "{}", status.message());

    // Streamed small values and the unary Set's values read back through GetStream too.
    kv.set(set("big", "unary", pattern(5000, 6))).await.unwrap();
    let (size, read, _, _) = get_stream(&mut kv, "big", "unary").await.unwrap();
    assert_eq!((size, read), (5000, 5000));
    let empty = set_stream(&mut kv, "big", "empty", 0, MIB).await;
    assert!(empty.is_err(), "a SetStream with no message at all names nothing");
    let missing = get_stream(&mut kv, "big", "absent").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn set_stream_limits_are_enforced_and_leave_nothing_behind() {
    let Some(setup) = start("limits", "max_object_bytes = 7340032") else { return };
    let mut kv = setup.server.keyvalue().await;
    // Past one 5 MiB part: the multipart upload already started is aborted.
    let status = set_stream(&mut kv, "big", "too-big", 8 * MIB, MIB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("server.max_object_bytes"), "{}", status.message());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(objects(&setup.prefix).is_empty(), "the refused upload left an object behind");
    assert!(!kv.get(get("big", "too-big")).await.unwrap().into_inner().found);

    let status = set_stream(&mut kv, "big", "chunky", 3 * MIB, 2 * MIB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("at most 1048576"), "{}", status.message());

    // Without a claim check the value is assembled in memory, so max_value_bytes bounds it.
    let stored = set_stream(&mut kv, "plain", "fits", 900 * 1024, 64 * 1024).await.unwrap();
    assert_eq!(stored.size, 900 * 1024);
    let (_, read, sha256, _) = get_stream(&mut kv, "plain", "fits").await.unwrap();
    assert_eq!((read, sha256), (900 * 1024, stored.sha256));
    let status = set_stream(&mut kv, "plain", "too-big", 2 * MIB, MIB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("claim_check"), "{}", status.message());
}

#[tokio::test]
async fn uploads_and_downloads_may_outlast_request_timeout_ms() {
    let Some(setup) = start("slow", "request_timeout_ms = 1000") else { return };
    let mut kv = setup.server.keyvalue().await;
    // Ten chunks 250 ms apart: 2.5 s of upload against a 1 s server limit.
    let messages = futures::stream::unfold(0usize, |index| async move {
        if index == 10 {
            return None;
        }
        if index > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (namespace, key) = if index == 0 { ("big".into(), "slow".into()) } else { Default::default() };
        Some((
            SetStreamRequest { namespace, key, chunk: block(index, 4096).into(), ..Default::default() },
            index + 1,
        ))
    });
    let stored = kv.set_stream(messages).await.expect("an upload is bounded by the client's deadline only");
    assert_eq!(stored.into_inner().size, 10 * 4096);
    // A download read slowly outlasts it too: 4 MiB, one message every 400 ms. (The
    // deadline layer never cut response streams; this keeps it that way.)
    set_stream(&mut kv, "big", "slow-read", 4 * MIB, MIB).await.unwrap();
    let mut stream = kv
        .get_stream(GetStreamRequest { namespace: "big".into(), key: "slow-read".into() })
        .await
        .unwrap()
        .into_inner();
    let mut read = 0;
    while let Some(message) = stream.next().await {
        read += message.expect("a download is bounded by the client's deadline only").chunk.len();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(read, 4 * MIB);

    // But a client that stops sending is not waited for longer than request_timeout_ms.
    let stalled = futures::stream::unfold(0usize, |index| async move {
        match index {
            0 => Some((
                SetStreamRequest {
                    namespace: "big".into(),
                    key: "stalled".into(),
                    chunk: block(0, 4096).into(),
                    ..Default::default()
                },
                1,
            )),
            1 => {
                tokio::time::sleep(Duration::from_millis(3000)).await;
                Some((SetStreamRequest { chunk: block(1, 4096).into(), ..Default::default() }, 2))
            }
            _ => None,
        }
    });
    let status = kv.set_stream(stalled).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("request_timeout_ms"), "{}", status.message());
    assert!(!kv.get(get("big", "stalled")).await.unwrap().into_inner().found);
}

/// A reload that removes the claim check while a SetStream uploads: the value is not
/// stored as a reference the namespace can no longer read, and its object is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_claim_check_is_reloaded_away_is_aborted() {
    if !backends_available(&[Backend::S3]) {
        return;
    }
    let prefix = unique_prefix("reloaded");
    let without = "[plugins.memstore]\npath = \"{memstore}\"\n[plugins.s3]\npath = \"{s3}\"\n\n\
                   [[namespaces]]\nname = \"big\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n";
    let server = Server::start(&format!("{without}{}", claim_check_slot(&prefix)));
    let mut kv = server.keyvalue().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let upload =
        tokio::spawn(
            async move { kv.set_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)).await },
        );
    let first = SetStreamRequest {
        namespace: "big".into(),
        key: "k".into(),
        chunk: block(0, MIB).into(),
        ..Default::default()
    };
    sender.send(first).await.unwrap();
    sender.send(SetStreamRequest { chunk: block(1, MIB).into(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(server.config_path(), prism_acceptance::harness::with_plugin_paths(without)).unwrap();
    let reply = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert!(reply.outcome.as_ref().is_some_and(|outcome| outcome.ok), "{reply:?}");
    sender.send(SetStreamRequest { chunk: block(2, MIB).into(), ..Default::default() }).await.unwrap();
    drop(sender);
    let status = upload.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(status.message().contains("claim_check slot changed"), "{}", status.message());
    let mut kv = server.keyvalue().await;
    assert!(!kv.get(get("big", "k")).await.unwrap().into_inner().found);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(objects(&prefix).is_empty(), "the aborted upload's object was left behind");
}

type QueueClient = queue_service_client::QueueServiceClient<tonic::transport::Channel>;

/// Enqueues `payload` on queue `q` of the `jobs` namespace.
async fn enqueue(queue: &mut QueueClient, payload: Vec<u8>) {
    let request = EnqueueRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        payload: payload.into(),
        ..Default::default()
    };
    queue.enqueue(request).await.unwrap();
}

/// Up to ten messages of queue `q` of the `jobs` namespace.
async fn dequeue(queue: &mut QueueClient) -> Vec<QueueMessage> {
    let request = DequeueRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        max_messages: 10,
        ..Default::default()
    };
    queue.dequeue(request).await.unwrap().into_inner().messages
}

async fn ack(queue: &mut QueueClient, receipt: &str) -> bool {
    let request = AckRequest { namespace: "jobs".into(), queue: "q".into(), receipt: receipt.into() };
    queue.ack(request).await.unwrap().into_inner().acked
}

#[tokio::test]
async fn a_claimed_queue_message_is_delivered_whole_and_its_object_deleted_on_ack() {
    let Some(setup) = start("queue", "") else { return };
    let mut queue = setup.server.queue().await;
    let payload = pattern(200 * 1024, 7);
    enqueue(&mut queue, payload.clone()).await;
    enqueue(&mut queue, b"small".to_vec()).await;
    assert_eq!(objects(&setup.prefix).len(), 1);
    let delivered = dequeue(&mut queue).await;
    assert_eq!(delivered.len(), 2);
    assert!(delivered[0].payload[..] == payload[..], "the consumer gets the payload");
    assert_eq!(&delivered[1].payload[..], b"small");
    assert_eq!(objects(&setup.prefix).len(), 1, "the object stays until the message is acked");
    for message in &delivered {
        assert!(ack(&mut queue, &message.receipt).await);
    }
    assert!(objects(&setup.prefix).is_empty(), "acked, the object is deleted");
}

#[tokio::test]
async fn a_queue_message_whose_object_is_gone_does_not_hold_back_the_others() {
    let Some(setup) = start("queue-lost", "") else { return };
    let mut queue = setup.server.queue().await;
    for payload in [pattern(100 * 1024, 10), b"small".to_vec()] {
        enqueue(&mut queue, payload).await;
    }
    for object in objects(&setup.prefix) {
        std::fs::remove_file(object).unwrap();
    }
    let delivered = dequeue(&mut queue).await;
    let payloads: Vec<&[u8]> = delivered.iter().map(|message| &message.payload[..]).collect();
    assert_eq!(payloads, [b"small"], "the readable message is delivered, the lost one skipped");
    assert!(setup.server.stderr().contains("skipped a claimed message"), "{}", setup.server.stderr());

    assert!(ack(&mut queue, &delivered[0].receipt).await);
    // Past its visibility timeout and its one delivery, it is a dead letter, listed with
    // an empty payload rather than failing the listing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(dequeue(&mut queue).await.is_empty());
    let dead = queue
        .list_dead_letters(ListDeadLettersRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            ..Default::default()
        })
        .await
        .expect("a lost payload does not fail the listing")
        .into_inner()
        .messages;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].payload.is_empty());
}

/// Two pub/sub namespaces on the same NATS subjects, only the reader with a claim check:
/// a marked payload it cannot resolve is skipped and the subscription goes on.
#[tokio::test]
async fn a_subscriber_skips_a_payload_it_cannot_resolve_and_keeps_receiving() {
    let Some(server) = writer_and_claiming_reader("lost", "") else { return };
    let mut pubsub = server.pubsub().await;
    let mut subscription = pubsub
        .subscribe(SubscribeRequest { namespace: "reader".into(), topic: "t".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    publish_unreadable_then_after(&mut pubsub).await;
    let event =
        tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(&event.message.unwrap().payload[..], b"after", "the unreadable message is skipped");
}

/// Pub/sub namespaces on NATS: `writer` without a claim check, so a forged reference
/// travels as is, and `reader` with one; `server` lines first.
fn writer_and_claiming_reader(test: &str, server: &str) -> Option<Server> {
    if !backends_available(&[Backend::S3, Backend::Nats]) {
        return None;
    }
    let prefix = unique_prefix(&format!("pubsub-{test}"));
    let subjects = format!("prism.{test}.{}.", std::process::id());
    let nats = format!("config = {{ url = \"nats://127.0.0.1:4222\", subject_prefix = \"{subjects}\" }}");
    Some(Server::start(&format!(
        "{server}\n[plugins.nats]\npath = \"{{nats}}\"\n[plugins.s3]\npath = \"{{s3}}\"\n\n\
         [[namespaces]]\nname = \"writer\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"nats\"\n{nats}\n\n\
         [[namespaces]]\nname = \"reader\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"nats\"\n{nats}\n{}",
        claim_check_slot(&prefix)
    )))
}

/// Publishes on `t` through `writer`: a reference to an object that does not exist,
/// then `after`.
async fn publish_unreadable_then_after(
    pubsub: &mut pub_sub_service_client::PubSubServiceClient<tonic::transport::Channel>,
) {
    let mut forged = b"\0prism-claim-check\0v1 5 ".to_vec();
    forged.extend_from_slice(format!("{} reader/missing", "0".repeat(64)).as_bytes());
    for payload in [forged, b"after".to_vec()] {
        let publish = PublishRequest {
            namespace: "writer".into(),
            topic: "t".into(),
            payload: payload.into(),
            ..Default::default()
        };
        pubsub.publish(publish).await.unwrap();
    }
}

#[tokio::test]
async fn a_durable_subscriber_gives_up_on_an_unreadable_payload_after_its_deliveries() {
    let server_lines = "[server]\nclaim_check_max_deliveries = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let Some(server) = writer_and_claiming_reader("giveup", server_lines) else { return };
    let mut pubsub = server.pubsub().await;
    let durable = SubscribeRequest {
        namespace: "reader".into(),
        topic: "t".into(),
        durable_name: format!("giveup{}", std::process::id()),
        ack_wait_ms: 300,
    };
    let mut subscription = pubsub.subscribe(durable).await.unwrap().into_inner();
    publish_unreadable_then_after(&mut pubsub).await;
    let event =
        tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap().unwrap().unwrap();
    let message = event.message.unwrap();
    assert_eq!(&message.payload[..], b"after", "the unreadable message is skipped");
    let ack = PubSubAckRequest {
        namespace: "reader".into(),
        durable_name: format!("giveup{}", std::process::id()),
        ack_id: message.ack_id,
    };
    pubsub.ack(ack).await.unwrap();
    // Redelivered after each ack_wait, it is acknowledged at its second delivery.
    let admin = server.admin_address.clone().unwrap();
    let acked = "prism_unreadable_messages_total{namespace=\"reader\",outcome=\"acked\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = super::observe::http_get(&admin, "/metrics", &[]).await;
        if super::observe::sample(&metrics, acked) == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never acknowledged: {acked} in\n{metrics}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.stderr().contains("it will not be delivered again"), "{}", server.stderr());
    // Acknowledged, it does not come back: the metric stays at 1 past two more ack waits.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, metrics) = super::observe::http_get(&admin, "/metrics", &[]).await;
    assert_eq!(super::observe::sample(&metrics, acked), Some(1.0), "{metrics}");
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

/// The bound: a 1 GiB value written and read through the gateway grows the
/// host's resident memory by less than 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_through_with_bounded_memory() {
    let Some(setup) = start("gib", "") else { return };
    let mut kv = setup.server.keyvalue().await;
    // Warm up (connections, buffers, the plugin's runtime) before the baseline.
    set_stream(&mut kv, "big", "warm", 20 * MIB, MIB).await.unwrap();
    get_stream(&mut kv, "big", "warm").await.unwrap();
    let baseline = setup.server.rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let pid = setup.server.pid();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (peak, watching) = (peak.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let total = 1 << 30;
    let stored = set_stream(&mut kv, "big", "gib", total, MIB).await.unwrap();
    assert_eq!(stored.size, total as u64);
    let (size, read, sha256, _) = get_stream(&mut kv, "big", "gib").await.unwrap();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!((size, read), (total as u64, total as u64));
    assert_eq!(sha256, stored.sha256);
    assert_eq!(sha256, expected_sha256(total, MIB));
    let grown = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("host RSS grew by {} KiB over a 1 GiB SetStream + GetStream", grown / 1024);
    assert!(grown < 64 * MIB as u64, "the host's RSS grew by {} MiB", grown / MIB as u64);
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
