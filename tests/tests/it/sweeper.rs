//! The claim-check sweeper: objects nothing refers to any more — left by TTL expiry and
//! by overwrites through BatchSet, CompareAndSwap and Mutate, which do not read the old
//! value — are found by a dry run, deleted by `--apply`, and a referenced object is
//! never deleted, also while writes run during the sweep. A claimed queue message acked
//! on another gateway has its object deleted by that Ack. Two gateways share PostgreSQL
//! tables and the `files` object store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prism_acceptance::harness::{backends_available, run_prism, Backend, Server};

use super::observe::{http_get, sample};
use prism_api::*;

const THRESHOLD: usize = 64;
const ORPHANS: usize = 1000;
const KEPT: usize = 200;
const SIZE: usize = 300;

/// Both gateways' config: key-value and queue namespaces in PostgreSQL tables of their
/// own, claimed through the `files` store in `data`; `server` adds `[server]` keys.
fn config(data: &Path, server: &str) -> Option<String> {
    if !backends_available(&[Backend::Postgres]) {
        return None;
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let run = format!("{}_{nanos}", std::process::id());
    let objects = data.join("objects");
    let slot = format!(
        "[namespaces.slots.claim_check]\nplugin = \"files\"\nconfig = {{ path = \"{}\" }}\n",
        objects.display()
    );
    let postgres = |table: &str| {
        format!("{{ url = \"postgres://postgres@127.0.0.1:5432/test\", table = \"prism_sweep_{table}_{run}\", queue_table = \"prism_sweep_{table}_q_{run}\" }}")
    };
    Some(format!(
        "[server]\nclaim_check_threshold_bytes = {THRESHOLD}\nrequest_timeout_ms = 5000\nclaim_check_grace_ms = 5000\n{server}\n\
         [plugins.postgres]\npath = \"{{postgres}}\"\n[plugins.files]\npath = \"{{files}}\"\n\n\
         [[namespaces]]\nname = \"kv\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"postgres\"\nconfig = {}\n{slot}\n\
         [[namespaces]]\nname = \"jobs\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"postgres\"\nconfig = {}\n{slot}",
        postgres("kv"),
        postgres("jobs"),
    ))
}

/// Until `done` holds, for at most 30 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("after 30 s: {what}");
}

/// How many objects namespace `namespace` has in the `files` store.
fn objects_of(data: &Path, namespace: &str) -> usize {
    let prefix = format!("{namespace}%2F");
    std::fs::read_dir(data.join("objects"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

fn large(key: &str, generation: u32) -> Vec<u8> {
    let seed = format!("{key}:{generation}:");
    seed.bytes().cycle().take(SIZE).collect()
}

fn set(key: &str, value: Vec<u8>, ttl_ms: i64) -> SetRequest {
    SetRequest { namespace: "kv".into(), key: key.into(), value: value.into(), ttl_ms, ..Default::default() }
}

/// Runs `each` for every index below `count`, 16 at a time.
async fn for_each<F, Fut>(count: usize, each: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(0..count).for_each_concurrent(16, each).await;
}

/// 1000 objects orphaned each way; returns what the kept keys hold.
async fn orphan_objects(server: &Server) -> BTreeMap<String, Vec<u8>> {
    let kv = server.keyvalue().await;
    let mut kept = BTreeMap::new();
    for i in 0..KEPT {
        let key = format!("kept-{i}");
        kv.clone().set(set(&key, large(&key, 0), 0)).await.unwrap();
        kept.insert(key.clone(), large(&key, 0));
    }
    for_each(ORPHANS, |i| {
        let mut kv = kv.clone();
        async move {
            let key = format!("ttl-{i}");
            kv.set(set(&key, large(&key, 0), 300)).await.unwrap();
            for kind in ["batch", "cas", "mutate"] {
                let key = format!("{kind}-{i}");
                kv.set(set(&key, large(&key, 0), 0)).await.unwrap();
            }
            let version = kv
                .get(GetRequest { namespace: "kv".into(), key: format!("cas-{i}"), ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .version;
            let cas = CompareAndSwapRequest {
                namespace: "kv".into(),
                key: format!("cas-{i}"),
                expected_version: version,
                value: b"small".to_vec().into(),
                ..Default::default()
            };
            assert!(kv.compare_and_swap(cas).await.unwrap().into_inner().version > version);
        }
    })
    .await;
    let mut kv = kv;
    for batch in (0..ORPHANS).collect::<Vec<_>>().chunks(100) {
        let entries = batch
            .iter()
            .map(|i| KeyValue { key: format!("batch-{i}"), value: b"small".to_vec().into() })
            .collect();
        kv.batch_set(BatchSetRequest { namespace: "kv".into(), entries }).await.unwrap();
        let mutations = batch
            .iter()
            .map(|i| Mutation {
                key: format!("mutate-{i}"),
                operation: Some(mutation::Operation::Set(b"small".to_vec().into())),
            })
            .collect();
        let request = MutateRequest { namespace: "kv".into(), mutations, ..Default::default() };
        kv.mutate(request).await.unwrap();
    }
    kept
}

async fn sweep(server: &Server, apply: bool) -> ClaimCheckSweep {
    let request = SweepClaimChecksRequest { namespace: "kv".into(), apply };
    let reply = server.admin().await.sweep_claim_checks(request).await.unwrap().into_inner();
    assert_eq!(reply.namespaces.len(), 1, "{reply:?}");
    reply.namespaces.into_iter().next().unwrap()
}

/// Keeps overwriting and reading back 20 keys until `stop`; any read that is not the
/// value last written (a deleted object reads as DATA_LOSS) fails the test.
async fn write_and_read_until(server: &Server, stop: Arc<AtomicBool>) -> u32 {
    let mut kv = server.keyvalue().await;
    let mut generation = 1;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..20 {
            let key = format!("live-{i}");
            kv.set(set(&key, large(&key, generation), 0)).await.unwrap();
            let read =
                kv.get(GetRequest { namespace: "kv".into(), key: key.clone(), ..Default::default() }).await;
            let read = read.unwrap_or_else(|status| panic!("Get {key} during the sweep: {status:?}"));
            assert!(read.get_ref().value[..] == large(&key, generation)[..], "Get {key} during the sweep");
        }
        generation += 1;
    }
    generation
}

#[tokio::test]
async fn orphans_of_every_kind_are_reclaimed_and_no_referenced_object_is_deleted() {
    let data = tempfile::tempdir().unwrap();
    let Some(config) = config(data.path(), "claim_check_sweep_interval_ms = 0") else { return };
    let first = Server::start(&config);
    let second = Server::start(&config);
    let kept = orphan_objects(&first).await;
    let orphans = 4 * ORPHANS;
    assert_eq!(objects_of(data.path(), "kv"), KEPT + orphans, "every large value became one object");

    tokio::time::sleep(Duration::from_millis(5200)).await;

    let dry = sweep(&first, false).await;
    assert_eq!(
        (dry.unreferenced, dry.unreferenced_bytes),
        (orphans as u64, (orphans * SIZE) as u64),
        "{dry:?}"
    );
    assert_eq!((dry.reclaimed, dry.error.as_str()), (0, ""), "a dry run deletes nothing: {dry:?}");
    assert_eq!(objects_of(data.path(), "kv"), KEPT + orphans);
    let (code, out, err) = run_prism(&["claim-check", "sweep", "--server", &second.url()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("kv (references): {orphans} of ")), "{out}");
    assert!(out.contains("dry run: nothing was deleted; run again with --apply"), "{out}");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (&second, stop.clone());
        async move { write_and_read_until(server, stop).await }
    };
    let sweeping = async {
        let swept = sweep(&first, true).await;
        stop.store(true, Ordering::Relaxed);
        swept
    };
    let (swept, generations) = tokio::join!(sweeping, writer);
    assert!(generations > 1, "the writer ran during the sweep");
    assert_eq!(
        (swept.reclaimed, swept.reclaimed_bytes),
        (orphans as u64, (orphans * SIZE) as u64),
        "{swept:?}"
    );
    assert_eq!(objects_of(data.path(), "kv"), KEPT + 20, "the kept and the live keys' objects remain");
    let mut kv = second.keyvalue().await;
    for (key, value) in kept {
        let read =
            kv.get(GetRequest { namespace: "kv".into(), key: key.clone(), ..Default::default() }).await;
        assert!(read.unwrap().get_ref().value[..] == value[..], "{key} after the sweep");
    }
    // Orphaned just now, younger than the grace period: not yet unreferenced.
    for i in 0..10 {
        let key = format!("young-{i}");
        kv.set(set(&key, large(&key, 0), 0)).await.unwrap();
    }
    let entries =
        (0..10).map(|i| KeyValue { key: format!("young-{i}"), value: b"small".to_vec().into() }).collect();
    kv.batch_set(BatchSetRequest { namespace: "kv".into(), entries }).await.unwrap();
    assert_eq!(sweep(&first, false).await.unreferenced, 0, "objects younger than the grace period");
    let (code, out, err) = run_prism(&["claim-check", "sweep", "--apply", "--server", &first.url()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kv (references): 0 of "), "a second sweep finds nothing old: {out}");
    assert!(
        out.contains("jobs (none): 0 of 0") && out.contains("set server.claim_check_message_retention_ms"),
        "{out}"
    );
}

#[tokio::test]
async fn a_claimed_message_acked_on_another_gateway_has_its_object_deleted() {
    let data = tempfile::tempdir().unwrap();
    let Some(config) = config(data.path(), "claim_check_sweep_interval_ms = 0") else { return };
    let first = Server::start(&config);
    let second = Server::start(&config);
    let (mut producer, mut consumer, mut acker) =
        (first.queue().await, first.queue().await, second.queue().await);
    for i in 0..ORPHANS {
        let payload = large(&format!("job-{i}"), 0);
        let request = EnqueueRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            payload: payload.into(),
            ..Default::default()
        };
        producer.enqueue(request).await.unwrap();
    }
    assert_eq!(objects_of(data.path(), "jobs"), ORPHANS);
    let mut acked = 0;
    while acked < ORPHANS {
        let request = DequeueRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            max_messages: 100,
            ..Default::default()
        };
        let delivered = consumer.dequeue(request).await.unwrap().into_inner().messages;
        assert!(!delivered.is_empty(), "{acked} of {ORPHANS} acked, then nothing was delivered");
        for message in delivered {
            let request =
                AckRequest { namespace: "jobs".into(), queue: "q".into(), receipt: message.receipt };
            assert!(acker.ack(request).await.unwrap().into_inner().acked, "Ack on the other gateway");
            acked += 1;
        }
    }
    assert_eq!(objects_of(data.path(), "jobs"), 0, "each Ack on the other gateway deleted its object");
    // A receipt naming an object is honoured only with the plugin's receipt of a delivery.
    let forged = AckRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        receipt: "prism-claim:0123456789abcdef0123456789abcdef:no-such-receipt".into(),
    };
    let answer = acker.ack(forged).await;
    assert!(!matches!(&answer, Ok(reply) if reply.get_ref().acked), "a forged receipt: {answer:?}");
}

#[tokio::test]
async fn the_scheduled_sweep_deletes_message_payloads_past_their_retention_and_counts_what_it_reclaims() {
    let data = tempfile::tempdir().unwrap();
    let server = "claim_check_sweep_interval_ms = 500\nclaim_check_message_retention_ms = 4000\n";
    let Some(config) = config(data.path(), server) else { return };
    let server = Server::start(&format!("{config}\n[admin]\nlisten = \"127.0.0.1:0\"\n"));
    let (mut kv, mut queue) = (server.keyvalue().await, server.queue().await);
    kv.set(set("kept", large("kept", 0), 0)).await.unwrap();
    kv.set(set("expiring", large("expiring", 0), 300)).await.unwrap();
    let enqueue = |i: usize| EnqueueRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        payload: large(&format!("job-{i}"), 0).into(),
        ..Default::default()
    };
    for i in 0..20 {
        queue.enqueue(enqueue(i)).await.unwrap();
    }
    wait_until("the sweeper deleted the expired value's object and the old messages' payloads", || {
        objects_of(data.path(), "kv") == 1 && objects_of(data.path(), "jobs") == 0
    })
    .await;
    let mut kv = server.keyvalue().await;
    let kept = kv.get(GetRequest { namespace: "kv".into(), key: "kept".into(), ..Default::default() }).await;
    assert!(
        kept.unwrap().get_ref().value[..] == large("kept", 0)[..],
        "the referenced value survives every sweep"
    );

    // Younger than the retention: several sweeps pass them by.
    for i in 0..5 {
        queue.enqueue(enqueue(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(objects_of(data.path(), "jobs"), 5, "payloads younger than the retention stay");

    let (_, metrics) = http_get(server.admin_address.as_ref().unwrap(), "/metrics", &[]).await;
    let counted =
        |name: &str, namespace: &str| sample(&metrics, &format!("{name}{{namespace=\"{namespace}\"}}"));
    assert_eq!(counted("prism_claim_check_reclaimed_objects_total", "jobs"), Some(20.0), "{metrics}");
    assert_eq!(counted("prism_claim_check_reclaimed_bytes_total", "jobs"), Some((20 * SIZE) as f64));
    assert_eq!(counted("prism_claim_check_reclaimed_objects_total", "kv"), Some(1.0));
}

#[test]
fn a_namespace_whose_plugins_cannot_list_or_scan_is_reported_not_swept() {
    let data = tempfile::tempdir().unwrap();
    let files = format!("{{ path = \"{}\" }}", data.path().display());
    let server = Server::start(&format!(
        "[plugins.memstore]\npath = \"{{memstore}}\"\n[plugins.files]\npath = \"{{files}}\"\n\
         [plugins.old_kv]\npath = \"{{abi_1_1}}\"\n[plugins.old_objects]\npath = \"{{abi_1_2}}\"\n\
         [[namespaces]]\nname = \"unscannable\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"old_kv\"\n\
         [namespaces.slots.claim_check]\nplugin = \"files\"\nconfig = {files}\n\
         [[namespaces]]\nname = \"unlistable\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n\
         [namespaces.slots.claim_check]\nplugin = \"old_objects\"\n"
    ));
    let (code, out, err) = run_prism(&["claim-check", "sweep", "--server", &server.url()]);
    assert_eq!(code, 1, "a namespace that cannot be swept fails the command: {out}{err}");
    assert!(out.contains("error: its store slot's plugin lacks keyvalue_scan"), "{out}");
    assert!(out.contains("error: cannot list the claim-check store") && out.contains("`list`"), "{out}");
}
