//! Idempotency tokens: a write retried with its token applies once and answers as the
//! first call did — after a client gave up mid-call, and across a gateway restart when
//! the records live in a durable `idempotency` slot; different tokens apply twice; a
//! token reused for another request, a malformed one and one past the window are refused.

use std::time::Duration;

use prism_acceptance::harness::{plugin_library, Server};
use prism_api::*;
use tonic::Code;

fn token(tag: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("{now}-{tag}{:08x}", std::process::id())
}

/// Key-value, queue and stream namespaces; `durable` adds an `idempotency` slot on
/// SQLite to each (otherwise the records stay in the gateway's memory).
fn config(data: &std::path::Path, durable: bool) -> String {
    let idempotency = |name: &str| {
        if durable {
            format!(
                "[namespaces.slots.idempotency]\nplugin = \"sqlite\"\nconfig = {{ path = \"{}\" }}\n",
                data.join(format!("{name}-tokens.db")).display()
            )
        } else {
            String::new()
        }
    };
    format!(
        r#"
[plugins.sqlite]
path = "{sqlite}"

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "sqlite"
config = {{ path = "{kv}" }}
{kv_tokens}
[[namespaces]]
name = "jobs"
pattern = "queue"
[namespaces.slots.queue]
plugin = "sqlite"
config = {{ path = "{jobs}" }}
{jobs_tokens}
[[namespaces]]
name = "logs"
pattern = "stream"
[namespaces.slots.log]
plugin = "memstore"
{logs_tokens}
[[namespaces]]
name = "events"
pattern = "pubsub"
[namespaces.slots.broker]
plugin = "memstore"
"#,
        sqlite = plugin_library("prism_sqlite").display(),
        kv = data.join("kv.db").display(),
        jobs = data.join("jobs.db").display(),
        kv_tokens = idempotency("kv"),
        jobs_tokens = idempotency("jobs"),
        logs_tokens = idempotency("logs"),
    )
}

fn enqueue(payload: &str, token: &str) -> EnqueueRequest {
    EnqueueRequest {
        namespace: "jobs".into(),
        queue: "work".into(),
        payload: payload.as_bytes().to_vec().into(),
        idempotency_token: token.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_token_applies_once_and_gets_the_first_answer() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(data.path(), false));

    let mut queue = server.queue().await;
    let same = token("same");
    let first = queue.enqueue(enqueue("once", &same)).await.unwrap().into_inner().message_id;
    let again = queue.enqueue(enqueue("once", &same)).await.unwrap().into_inner().message_id;
    assert_eq!(first, again, "the retry is answered with the first call's message id");
    queue.enqueue(enqueue("twice", &token("other-a"))).await.unwrap();
    queue.enqueue(enqueue("twice", &token("other-b"))).await.unwrap();
    let payloads: Vec<Vec<u8>> =
        server.drain_queue("jobs", "work").await.into_iter().map(|m| m.payload.to_vec()).collect();
    assert_eq!(payloads.iter().filter(|p| p.as_slice() == b"once").count(), 1, "{payloads:?}");
    assert_eq!(
        payloads.iter().filter(|p| p.as_slice() == b"twice").count(),
        2,
        "different tokens apply twice"
    );

    let mut kv = server.keyvalue().await;
    let set = |token: &str| SetRequest {
        key: "counter".into(),
        value: b"v".to_vec().into(),
        idempotency_token: token.into(),
        ..Default::default()
    };
    let same = token("set");
    kv.set(set(&same)).await.unwrap();
    let version = kv
        .get(GetRequest { key: "counter".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .version;
    kv.set(set(&same)).await.unwrap();
    let after = kv
        .get(GetRequest { key: "counter".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(version, after, "a retried Set does not write again (the version would grow)");

    let mut stream = server.stream().await;
    let append = |token: &str| AppendRequest {
        namespace: "logs".into(),
        stream: "audit".into(),
        payload: b"entry".to_vec().into(),
        idempotency_token: token.into(),
        ..Default::default()
    };
    let same = token("append");
    let first = stream.append(append(&same)).await.unwrap().into_inner();
    let again = stream.append(append(&same)).await.unwrap().into_inner();
    assert_eq!((first.partition, first.offset), (again.partition, again.offset));
    let offsets = stream
        .get_offsets(GetOffsetsRequest {
            namespace: "logs".into(),
            stream: "audit".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let records: u64 = offsets.partitions.iter().map(|p| p.next - p.earliest).sum();
    assert_eq!(records, 1, "the retried Append added no record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_the_client_gave_up_mid_call_applies_once() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(data.path(), false));
    let mut queue = server.queue().await;
    let mut timed_out = 0;
    for attempt in 0..40u64 {
        let token = token(&format!("cut{attempt:02}"));
        // Gives up after 0-3 ms: some calls are cut before, some during, some after the write.
        let cut = Duration::from_micros(attempt % 4 * 1000);
        if tokio::time::timeout(cut, queue.enqueue(enqueue(&format!("m{attempt}"), &token))).await.is_err() {
            timed_out += 1;
        }
        let retried = queue.enqueue(enqueue(&format!("m{attempt}"), &token)).await;
        retried.unwrap_or_else(|status| panic!("the retry of attempt {attempt} failed: {status}"));
    }
    assert!(timed_out > 0, "no call was cut short; the test proved nothing");
    let mut payloads: Vec<String> = server
        .drain_queue("jobs", "work")
        .await
        .into_iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    payloads.sort();
    let mut expected: Vec<String> = (0..40).map(|n| format!("m{n}")).collect();
    expected.sort();
    assert_eq!(payloads, expected, "each token's message is in the queue exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_durable_idempotency_slot_a_retry_after_a_restart_applies_once() {
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path(), true);
    let same = token("restart");
    let first = {
        let server = Server::start(&config);
        server.queue().await.enqueue(enqueue("durable", &same)).await.unwrap().into_inner().message_id
    };
    let server = Server::start(&config);
    let again =
        server.queue().await.enqueue(enqueue("durable", &same)).await.unwrap().into_inner().message_id;
    assert_eq!(first, again);
    let messages = server.drain_queue("jobs", "work").await;
    assert_eq!(messages.len(), 1, "{messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misused_malformed_and_expired_tokens_are_refused_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(data.path(), false));
    let mut queue = server.queue().await;

    let same = token("reuse");
    queue.enqueue(enqueue("first", &same)).await.unwrap();
    let reused = queue.enqueue(enqueue("different", &same)).await.unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition, "{reused:?}");
    assert!(reused.message().contains("different request"), "{}", reused.message());

    let malformed = queue.enqueue(enqueue("x", "not-a-token")).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("{unix_ms}-{random}"), "{}", malformed.message());

    let two_hours_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() - 7_200_000;
    let expired = queue.enqueue(enqueue("x", &format!("{two_hours_ago}-abcdefgh12"))).await.unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(expired.message().contains("idempotency_window_ms"), "{}", expired.message());

    let mut kv = server.keyvalue().await;
    let begun = kv.begin_transaction(BeginTransactionRequest::default()).await.unwrap().into_inner();
    let in_transaction = SetRequest {
        key: "k".into(),
        value: b"v".to_vec().into(),
        transaction_id: begun.transaction_id,
        idempotency_token: token("tx"),
        ..Default::default()
    };
    let refused = kv.set(in_transaction).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("transaction"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_token_that_hangs_is_cut_at_the_request_timeout() {
    let server = Server::start(
        r#"
[server]
request_timeout_ms = 300

[plugins.panicking]
path = "{panicking}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "panicking" }
"#,
    );
    let mut kv = server.keyvalue().await;
    let hanging = SetRequest {
        key: "sleep:1500".into(),
        value: b"late".to_vec().into(),
        idempotency_token: token("hang"),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let status = kv.set(hanging).await.expect_err("the write outlives the request timeout");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(1200));
    // Past the plugin's sleep: a write left running would have stored the key by now.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let exists = ExistsRequest { key: "sleep:1500".into(), ..Default::default() };
    assert!(
        !kv.exists(exists).await.unwrap().into_inner().exists,
        "the hung write kept running after the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_mutate_publish_and_publish_stream_retried_with_their_token_apply_once() {
    use prism_api::mutation::Operation;

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(data.path(), false));
    let mut kv = server.keyvalue().await;

    // Without a token, repeating this create-if-absent would conflict.
    let cas = |token: &str| CompareAndSwapRequest {
        key: "doc".into(),
        expected_version: 0,
        value: b"v1".to_vec().into(),
        idempotency_token: token.into(),
        ..Default::default()
    };
    let same = token("cas");
    let first = kv.compare_and_swap(cas(&same)).await.unwrap().into_inner().version;
    let again = kv.compare_and_swap(cas(&same)).await.unwrap().into_inner().version;
    assert_eq!(first, again, "the retry is answered with the first swap's version");
    let other = kv.compare_and_swap(cas(&token("cas-new"))).await.unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition, "a new token is a new write, which conflicts");

    let mutate = |token: &str| MutateRequest {
        mutations: vec![
            Mutation { key: "a".into(), operation: Some(Operation::Set(b"1".to_vec().into())) },
            Mutation { key: "doc".into(), operation: Some(Operation::Delete(true)) },
        ],
        idempotency_token: token.into(),
        ..Default::default()
    };
    let same = token("mutate");
    assert!(kv.mutate(mutate(&same)).await.unwrap().into_inner().results[1].deleted);
    let again = kv.mutate(mutate(&same)).await.unwrap().into_inner().results;
    assert!(again[1].deleted, "the retry is answered as the first call was");
    let applied_again = kv.mutate(mutate(&token("mutate-new"))).await.unwrap().into_inner().results;
    assert!(!applied_again[1].deleted, "a new token applies again, and doc is already gone");

    let mut pubsub = server.pubsub().await;
    let subscribe = SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() };
    let mut messages = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    let publish = |payload: &str, token: &str| PublishRequest {
        namespace: "events".into(),
        topic: "t".into(),
        payload: payload.as_bytes().to_vec().into(),
        idempotency_token: token.into(),
        ..Default::default()
    };
    let unary = token("publish");
    let first = pubsub.publish(publish("a", &unary)).await.unwrap().into_inner().message_id;
    let again = pubsub.publish(publish("a", &unary)).await.unwrap().into_inner().message_id;
    assert_eq!(first, again);
    let streamed = token("stream");
    let batch = vec![publish("b", &streamed), publish("b", &streamed), publish("c", &token("stream-c"))];
    pubsub.publish_stream(tokio_stream::iter(batch)).await.unwrap();
    let mut received = Vec::new();
    while let Ok(Ok(Some(response))) =
        tokio::time::timeout(Duration::from_millis(500), messages.message()).await
    {
        received.push(String::from_utf8(response.message.unwrap().payload.to_vec()).unwrap());
    }
    assert_eq!(received, ["a", "b", "c"], "each token's message was published once");
}

/// SetStream's first message: `key` with `token`, then `chunks` one per message.
async fn set_stream(
    server: &Server,
    key: &str,
    token: &str,
    chunks: &[&[u8]],
) -> Result<SetStreamResponse, tonic::Status> {
    let messages: Vec<SetStreamRequest> = chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| match index {
            0 => SetStreamRequest {
                key: key.into(),
                idempotency_token: token.into(),
                chunk: chunk.to_vec().into(),
                ..Default::default()
            },
            _ => SetStreamRequest { chunk: chunk.to_vec().into(), ..Default::default() },
        })
        .collect();
    server.keyvalue().await.set_stream(futures::stream::iter(messages)).await.map(|reply| reply.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_stream_retried_with_its_token_stores_once_and_answers_as_the_first() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&config(data.path(), false));
    let same = token("upload");
    let first =
        set_stream(&server, "streamed", &same, &[b"first ", b"upload"]).await.expect("the first upload");
    assert_eq!(first.size, 12);
    // The retry's bytes differ (a client that rebuilt its value): it is not stored again.
    let again = set_stream(&server, "streamed", &same, &[b"a different upload"]).await.expect("the retry");
    assert_eq!((again.size, &again.sha256), (first.size, &first.sha256), "the retry gets the first answer");
    let stored =
        server.keyvalue().await.get(GetRequest { key: "streamed".into(), ..Default::default() }).await;
    assert_eq!(stored.unwrap().into_inner().value.as_ref(), b"first upload", "stored once, by the first");

    let other_key =
        set_stream(&server, "elsewhere", &same, &[b"x"]).await.expect_err("the token for another key");
    assert_eq!(other_key.code(), Code::FailedPrecondition, "{other_key:?}");
    let late = vec![
        SetStreamRequest { key: "late".into(), chunk: b"a".to_vec().into(), ..Default::default() },
        SetStreamRequest {
            idempotency_token: token("late"),
            chunk: b"b".to_vec().into(),
            ..Default::default()
        },
    ];
    let status =
        server.keyvalue().await.set_stream(futures::stream::iter(late)).await.expect_err("a late token");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("idempotency_token"), "{status:?}");
}
