//! End-to-end through the host on PostgreSQL: queues (visibility, dead letters, long
//! polling) and key-value transactions, over gRPC.

use std::time::{Duration, Instant};

use prism_acceptance::harness::{backends_available, Backend, Server};
use prism_api::*;
use tonic::Code;

/// A name unique to this test run, so runs sharing the database never share messages or keys.
fn unique(name: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{}-{nanos}", std::process::id())
    });
    format!("{name}-{run}")
}

fn config() -> String {
    let run = "prism_e2e";
    format!(
        r#"
[plugins.postgres]
path = "{{postgres}}"

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "jobs"
pattern = "queue"
[namespaces.slots.queue]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "{run}_kv", queue_table = "{run}_q", max_deliveries = 2 }}

[[namespaces]]
name = "ledger"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "{run}_kv", queue_table = "{run}_q" }}

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"
"#
    )
}

fn enqueue(queue: &str, payload: &[u8]) -> EnqueueRequest {
    EnqueueRequest {
        namespace: "jobs".into(),
        queue: queue.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

fn dequeue(queue: &str, max: u32, visibility_ms: i64) -> DequeueRequest {
    DequeueRequest {
        namespace: "jobs".into(),
        queue: queue.into(),
        max_messages: max,
        visibility_timeout_ms: visibility_ms,
        wait_ms: 0,
    }
}

fn receipt(queue: &str, receipt: &str) -> AckRequest {
    AckRequest { namespace: "jobs".into(), queue: queue.into(), receipt: receipt.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_delivers_redelivers_and_dead_letters_through_the_gateway() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let server = Server::start(&config());
    let work = unique("work");
    let work = work.as_str();
    let mut queue = server.queue().await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for payload in [b"a", b"b", b"c"] {
            ids.push(queue.enqueue(enqueue(work, payload)).await.unwrap().into_inner().message_id);
        }
        ids
    };
    let batch = queue.dequeue(dequeue(work, 10, 300)).await.unwrap().into_inner().messages;
    assert_eq!(batch.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>(), ids);
    // a: acked. b: nacked (redelivered at once). c: left to lapse.
    assert!(queue.ack(receipt(work, &batch[0].receipt)).await.unwrap().into_inner().acked);
    let nack = NackRequest {
        namespace: "jobs".into(),
        queue: work.into(),
        receipt: batch[1].receipt.clone(),
        delay_ms: 0,
    };
    assert!(queue.nack(nack).await.unwrap().into_inner().requeued);
    let again = queue.dequeue(dequeue(work, 10, 300)).await.unwrap().into_inner().messages;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].message_id.as_str(), again[0].delivery_count), (ids[1].as_str(), 2));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // c's and b's visibility lapsed; b has had its 2 deliveries and becomes a dead letter.
    let later = queue.dequeue(dequeue(work, 10, 30_000)).await.unwrap().into_inner().messages;
    assert_eq!(
        later.iter().map(|m| (m.message_id.clone(), m.delivery_count)).collect::<Vec<_>>(),
        vec![(ids[2].clone(), 2)]
    );
    let dead = queue
        .list_dead_letters(ListDeadLettersRequest {
            namespace: "jobs".into(),
            queue: work.into(),
            limit: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.messages.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    assert_eq!(&dead.messages[0].payload[..], b"b");
    let replayed = queue
        .replay_dead_letters(ReplayDeadLettersRequest {
            namespace: "jobs".into(),
            queue: work.into(),
            message_ids: vec![],
        })
        .await
        .unwrap();
    assert_eq!(replayed.into_inner().replayed, 1);
    let back = queue.dequeue(dequeue(work, 10, 30_000)).await.unwrap().into_inner().messages;
    assert_eq!((back[0].message_id.as_str(), back[0].delivery_count), (ids[1].as_str(), 1));
    // Extending keeps it invisible; a stale receipt acks nothing.
    let extend = ExtendVisibilityRequest {
        namespace: "jobs".into(),
        queue: work.into(),
        receipt: back[0].receipt.clone(),
        visibility_timeout_ms: 60_000,
    };
    assert!(queue.extend_visibility(extend).await.unwrap().into_inner().extended);
    assert!(!queue.ack(receipt(work, &batch[1].receipt)).await.unwrap().into_inner().acked);
    assert!(queue.ack(receipt(work, &back[0].receipt)).await.unwrap().into_inner().acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dequeue_long_polls_and_delayed_messages_wait() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let server = Server::start(&config());
    let (inbox, later) = (unique("inbox"), unique("later"));
    let (inbox, later) = (inbox.as_str(), later.as_str());
    let mut queue = server.queue().await;
    let mut producer = server.queue().await;
    let started = Instant::now();
    let inbox_name = inbox.to_owned();
    let produce = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        producer.enqueue(enqueue(&inbox_name, b"hello")).await.unwrap();
    });
    let waited = queue
        .dequeue(DequeueRequest { wait_ms: 5000, ..dequeue(inbox, 1, 0) })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(waited.len(), 1, "the long poll returned the message enqueued while it waited");
    assert!(started.elapsed() >= Duration::from_millis(350) && started.elapsed() < Duration::from_secs(4));
    produce.await.unwrap();

    queue.enqueue(EnqueueRequest { delay_ms: 700, ..enqueue(later, b"x") }).await.unwrap();
    assert!(queue.dequeue(dequeue(later, 1, 0)).await.unwrap().into_inner().messages.is_empty());
    let waited = queue
        .dequeue(DequeueRequest { wait_ms: 3000, ..dequeue(later, 1, 0) })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(waited.len(), 1);

    let both =
        queue.enqueue(EnqueueRequest { delay_ms: 5, deliver_at_unix_ms: 5, ..enqueue(later, b"x") }).await;
    assert_eq!(both.unwrap_err().code(), Code::InvalidArgument);
    let bad = queue.ack(receipt(later, "")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_mutate_apply_all_or_nothing() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let server = Server::start(&config());
    let mut kv = server.keyvalue().await;
    let ns = || "ledger".to_string();
    let (alice, bob, carol) = (unique("alice"), unique("bob"), unique("carol"));
    let set = |key: &str, value: &[u8], tx: u64| SetRequest {
        namespace: ns(),
        key: key.into(),
        value: value.to_vec().into(),
        transaction_id: tx,
        ..Default::default()
    };
    let get = |key: &str, tx: u64| GetRequest { namespace: ns(), key: key.into(), transaction_id: tx };

    let tx =
        kv.begin_transaction(BeginTransactionRequest { namespace: ns(), timeout_ms: 10_000 }).await.unwrap();
    let tx = tx.into_inner().transaction_id;
    kv.set(set(&alice, b"90", tx)).await.unwrap();
    kv.set(set(&bob, b"110", tx)).await.unwrap();
    assert!(!kv.get(get(&alice, 0)).await.unwrap().into_inner().found, "invisible until commit");
    assert_eq!(&kv.get(get(&alice, tx)).await.unwrap().into_inner().value[..], b"90");
    kv.commit_transaction(CommitTransactionRequest { namespace: ns(), transaction_id: tx }).await.unwrap();
    assert_eq!(&kv.get(get(&bob, 0)).await.unwrap().into_inner().value[..], b"110");
    let again = kv.commit_transaction(CommitTransactionRequest { namespace: ns(), transaction_id: tx }).await;
    assert_eq!(again.unwrap_err().code(), Code::NotFound);

    let tx = kv.begin_transaction(BeginTransactionRequest { namespace: ns(), timeout_ms: 0 }).await.unwrap();
    let tx = tx.into_inner().transaction_id;
    kv.set(set(&alice, b"0", tx)).await.unwrap();
    kv.rollback_transaction(RollbackTransactionRequest { namespace: ns(), transaction_id: tx })
        .await
        .unwrap();
    assert_eq!(&kv.get(get(&alice, 0)).await.unwrap().into_inner().value[..], b"90");

    let mutations = vec![
        Mutation { key: alice.clone(), operation: Some(mutation::Operation::Set(b"50".to_vec().into())) },
        Mutation { key: bob.clone(), operation: Some(mutation::Operation::Delete(true)) },
        Mutation { key: carol.clone(), operation: Some(mutation::Operation::Delete(true)) },
    ];
    let results = kv
        .mutate(MutateRequest { namespace: ns(), mutations, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.iter().map(|r| r.deleted).collect::<Vec<_>>(), vec![false, true, false]);
    assert_eq!(&kv.get(get(&alice, 0)).await.unwrap().into_inner().value[..], b"50");
    assert!(!kv.get(get(&bob, 0)).await.unwrap().into_inner().found);

    let empty = Mutation { key: "x".into(), operation: None };
    let refused = kv
        .mutate(MutateRequest { namespace: ns(), mutations: vec![empty], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    // memstore has no keyvalue_transactional.
    let refused =
        kv.begin_transaction(BeginTransactionRequest { namespace: String::new(), timeout_ms: 0 }).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    assert!(refused.message().contains("keyvalue_transactional"), "{}", refused.message());
}

/// Rows of `prism_e2e_kv` (default schema `public`) with `key`, counted by psql.
fn stored_rows(key: &str) -> String {
    let output = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc"])
        .arg(format!("SELECT count(*) FROM public.prism_e2e_kv WHERE key = convert_to('{key}', 'UTF8')"))
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_key_with_a_ttl_vanishes_at_once_and_its_row_is_reaped_soon_after() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let server = Server::start(&config());
    let mut kv = server.keyvalue().await;
    let key = unique("ttl");
    let set = SetRequest {
        namespace: "ledger".into(),
        key: key.clone(),
        value: b"v".to_vec().into(),
        ttl_ms: 300,
        ..Default::default()
    };
    kv.set(set).await.unwrap();
    let get = || GetRequest { namespace: "ledger".into(), key: key.clone(), ..Default::default() };
    assert!(kv.get(get()).await.unwrap().into_inner().found);
    assert_eq!(stored_rows(&key), "1", "the row is where the count looks");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!kv.get(get()).await.unwrap().into_inner().found, "invisible once expired");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_rows(&key) != "0" {
        assert!(Instant::now() < deadline, "the expired row was never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An instance starting — a gateway, the probe of a reload, a restarted plugin process —
/// while a transaction holds rows of its table neither waits for that transaction nor
/// queues the table's other writers behind it: the schema is checked, and DDL runs only
/// for what is missing (CREATE INDEX locks the table even when the index exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starts_beside_an_open_transaction_without_stalling_the_table() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let plugin =
        plugin_abi::host::Plugin::load(prism_acceptance::harness::plugin_library("prism_postgres")).unwrap();
    let config = "url = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"prism_startup_kv\"\n\
                  queue_table = \"prism_startup_q\"\nstatement_timeout_ms = 3000";
    let running = plugin.create(config).await.expect("the first instance");
    let transactions = running.keyvalue_transactional().unwrap();
    let holding = transactions.begin(Duration::from_secs(60)).await.unwrap();
    transactions.tx_set(holding, &unique("held"), b"v".to_vec()).await.unwrap();
    let other = transactions.begin(Duration::from_secs(60)).await.unwrap();
    let started = plugin.create(config).await.map(|_| ());
    // A writer behind a waiting CREATE INDEX would wait for `holding` too.
    let written = transactions.tx_set(other, &unique("other"), b"w".to_vec()).await;
    transactions.rollback(holding).await.unwrap();
    assert_eq!(started.map_err(|e| e.to_string()), Ok(()), "creating an instance beside an open transaction");
    assert_eq!(written.map_err(|e| e.to_string()), Ok(()), "a write while an instance started");
    transactions.commit(other).await.unwrap();
}
