//! Several gateways over one backend (issue 15): what one gateway hands out must not be
//! mistaken for another's, and what one knows the others must. Transactions: two gateways
//! over one PostgreSQL namespace used to both hand out id 1, and A's transaction used on B
//! silently reached B's. Multicast: presence was per gateway, so a Multicast on A never
//! reached an identity subscribed on B.

use prism_acceptance::harness::{backends_available, Backend, Server};
use prism_api::*;
use tonic::Code;

fn config() -> String {
    r#"
[plugins.postgres]
path = "{postgres}"

[[namespaces]]
name = "ledger"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "postgres"
config = { url = "postgres://postgres@127.0.0.1:5432/test", table = "prism_gateways_kv" }
"#
    .into()
}

fn unique(key: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{key}-{}-{nanos}", std::process::id())
}

async fn begin(
    kv: &mut key_value_service_client::KeyValueServiceClient<tonic::transport::Channel>,
) -> (u64, String) {
    let reply = kv
        .begin_transaction(BeginTransactionRequest { namespace: "ledger".into(), timeout_ms: 10_000 })
        .await
        .unwrap();
    let gateway =
        reply.metadata().get("prism-gateway").expect("the gateway names itself").to_str().unwrap().to_owned();
    (reply.into_inner().transaction_id, gateway)
}

fn set_in(tx: u64, key: &str, value: &[u8]) -> SetRequest {
    SetRequest {
        namespace: "ledger".into(),
        key: key.into(),
        value: value.to_vec().into(),
        transaction_id: tx,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_transaction_id_is_refused_by_every_gateway_but_the_one_that_began_it() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let (a, b) = (Server::start(&config()), Server::start(&config()));
    let (mut on_a, mut on_b) = (a.keyvalue().await, b.keyvalue().await);
    let (tx_a, gateway_a) = begin(&mut on_a).await;
    let (tx_b, _) = begin(&mut on_b).await;
    assert_ne!(tx_a, tx_b, "two gateways hand out different ids");
    let key = unique("k");
    on_a.set(set_in(tx_a, &key, b"from A")).await.unwrap();

    // A's id on B: refused, naming A's tag, for every transactional call.
    let tag = format!("transaction tag {:04x}", tx_a >> 48);
    assert!(gateway_a.contains(&tag), "{gateway_a} / {tag}");
    let get = GetRequest { namespace: "ledger".into(), key: key.clone(), transaction_id: tx_a };
    let refusals = [
        on_b.get(get).await.map(drop).unwrap_err(),
        on_b.set(set_in(tx_a, &key, b"from B")).await.map(drop).unwrap_err(),
        on_b.commit_transaction(CommitTransactionRequest {
            namespace: "ledger".into(),
            transaction_id: tx_a,
        })
        .await
        .map(drop)
        .unwrap_err(),
        on_b.rollback_transaction(RollbackTransactionRequest {
            namespace: "ledger".into(),
            transaction_id: tx_a,
        })
        .await
        .map(drop)
        .unwrap_err(),
    ];
    for status in refusals {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(&format!("another gateway ({tag})")), "{}", status.message());
    }
    // B's own transaction is untouched, and A's commits with A's write only.
    on_b.rollback_transaction(RollbackTransactionRequest {
        namespace: "ledger".into(),
        transaction_id: tx_b,
    })
    .await
    .unwrap();
    on_a.commit_transaction(CommitTransactionRequest { namespace: "ledger".into(), transaction_id: tx_a })
        .await
        .unwrap();
    let reply = on_b.get(GetRequest { namespace: "ledger".into(), key, transaction_id: 0 }).await.unwrap();
    assert_eq!(&reply.into_inner().value[..], b"from A");
}

#[tokio::test]
async fn an_id_from_before_a_restart_or_never_handed_out_is_refused() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let before = Server::start(&config());
    let (tx, _) = begin(&mut before.keyvalue().await).await;
    drop(before);
    let after = Server::start(&config());
    let mut kv = after.keyvalue().await;
    let (ours, _) = begin(&mut kv).await;
    // The same tag as ours but never handed out, and the id from before the restart (a
    // new gateway process has a new tag, unless it drew the same one: then not found).
    let never = (ours & !0xffff_ffff_ffff) | ((ours + 1) & 0xffff_ffff_ffff);
    for id in [never, tx] {
        let status = kv.set(set_in(id, &unique("k"), b"v")).await.unwrap_err();
        if (id >> 48) == (ours >> 48) {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert!(status.message().contains("is not open on"), "{}", status.message());
        } else {
            // The restarted gateway drew a new tag: the old id reads as another gateway's.
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains("before it restarted"), "{}", status.message());
        }
    }
}

fn multicast_config(run: &str) -> String {
    format!(
        r#"
[plugins.redis]
path = "{{redis}}"
[plugins.nats]
path = "{{nats}}"

[[namespaces]]
name = "devices"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "redis"
config = {{ url = "redis://127.0.0.1:6379", key_prefix = "prism-gw-{run}:" }}
[namespaces.slots.messaging]
plugin = "nats"
config = {{ url = "nats://127.0.0.1:4222", subject_prefix = "prism.gw{run}." }}
"#
    )
}

async fn multicast_to_all(
    client: &mut multicast_registry_service_client::MulticastRegistryServiceClient<tonic::transport::Channel>,
    payload: &[u8],
) -> MulticastResponse {
    let request = MulticastRequest {
        namespace: "devices".into(),
        filter: String::new(),
        payload: payload.to_vec().into(),
        headers: Default::default(),
    };
    client.multicast(request).await.unwrap().into_inner()
}

fn status_of(response: &MulticastResponse, identity: &str) -> i32 {
    response
        .deliveries
        .iter()
        .find(|delivery| delivery.identity == identity)
        .expect("a delivery per target")
        .status
}

/// Gateways sharing a registry (Redis) and a messaging backend (NATS): a Multicast on A
/// reaches identities subscribed on B, and stops counting them once they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_on_one_gateway_reaches_identities_subscribed_on_another() {
    if !backends_available(&[Backend::Redis, Backend::Nats]) {
        return;
    }
    let run = format!("{}{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_millis());
    let (a, b) = (Server::start(&multicast_config(&run)), Server::start(&multicast_config(&run)));
    let channel_a = a.channel().await;
    let mut on_a = multicast_registry_service_client::MulticastRegistryServiceClient::new(channel_a);
    let mut on_b = multicast_registry_service_client::MulticastRegistryServiceClient::new(b.channel().await);
    for identity in ["here", "there"] {
        let request =
            RegisterRequest { namespace: "devices".into(), identity: identity.into(), ..Default::default() };
        on_a.register(request).await.unwrap();
    }
    let subscribe =
        |identity: &str| MulticastSubscribeRequest { namespace: "devices".into(), identity: identity.into() };
    let mut here = on_a.subscribe(subscribe("here")).await.unwrap().into_inner();
    let mut there = on_b.subscribe(subscribe("there")).await.unwrap().into_inner();

    let sent = multicast_to_all(&mut on_a, b"to both").await;
    assert_eq!(sent.targets, 2);
    assert_eq!(sent.delivered, 2, "{sent:?}");
    for stream in [&mut here, &mut there] {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("delivered within 10 s")
            .unwrap()
            .expect("a message");
        assert_eq!(&message.payload[..], b"to both");
    }

    // Gone from B: no longer counted as delivered (without a durability slot, not delivered).
    drop(there);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sent = multicast_to_all(&mut on_a, b"after").await;
        if status_of(&sent, "there") == DeliveryStatus::NotDelivered as i32 {
            assert_eq!(status_of(&sent, "here"), DeliveryStatus::Delivered as i32);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B's subscription was never withdrawn: {sent:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// PostgreSQL with several hosts: the gateway connects to the first that accepts and is
/// writable (`target_session_attrs=read-write`), so a list naming every node of a
/// primary/standby pair finds the primary — here the first host refuses connections.
#[tokio::test]
async fn postgres_with_several_hosts_connects_to_the_writable_one() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let dead = prism_acceptance::harness::free_port();
    let server = Server::start(&format!(
        r#"
[plugins.postgres]
path = "{{postgres}}"

[[namespaces]]
name = "ledger"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:{dead},127.0.0.1:5432/test?target_session_attrs=read-write", table = "prism_gateways_kv" }}
"#
    ));
    let mut kv = server.keyvalue().await;
    let key = unique("multi-host");
    kv.set(SetRequest {
        namespace: "ledger".into(),
        key: key.clone(),
        value: b"v".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let reply = kv.get(GetRequest { namespace: "ledger".into(), key, transaction_id: 0 }).await.unwrap();
    assert_eq!(&reply.into_inner().value[..], b"v");
}

/// Three nats-server nodes routed into one cluster on free ports, killed on drop.
struct NatsCluster {
    ports: Vec<u16>,
    routes: Vec<u16>,
    nodes: Vec<Option<std::process::Child>>,
}

impl NatsCluster {
    fn start() -> NatsCluster {
        use prism_acceptance::harness::free_port;
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut cluster = NatsCluster { ports, routes, nodes: vec![None, None, None] };
        for node in 0..3 {
            cluster.run(node);
        }
        // Routes form a moment after the ports open.
        std::thread::sleep(std::time::Duration::from_millis(500));
        cluster
    }

    /// Starts (or restarts) `node` on its ports, routed to the other two.
    fn run(&mut self, node: usize) {
        let others: Vec<String> = (0..3)
            .filter(|other| *other != node)
            .map(|other| format!("nats://127.0.0.1:{}", self.routes[other]))
            .collect();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.ports[node].to_string()])
            .args([
                "--cluster_name",
                "prism-test",
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.routes[node]),
            ])
            .args(["--routes", &others.join(",")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs");
        self.nodes[node] = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.ports[node])).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start on {}",
                self.ports[node]
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn urls(&self) -> String {
        self.ports.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// A NATS cluster of three: the gateway keeps publishing and delivering to an open
/// subscription while nodes are killed under it, without a restart. (Messages sent while it reconnects may be lost: NATS core pub/sub
/// is at most once; JetStream durable subscriptions are not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_on_a_nats_cluster_survives_losing_the_node_it_is_connected_to() {
    if !prism_acceptance::harness::program_available("nats-server") {
        return;
    }
    let mut cluster = NatsCluster::start();
    let server = Server::start(&format!(
        "[plugins.nats]\npath = \"{{nats}}\"\n\n[[namespaces]]\nname = \"events\"\npattern = \"pubsub\"\n\
         [namespaces.slots.broker]\nplugin = \"nats\"\nconfig = {{ url = \"{}\" }}\n",
        cluster.urls()
    ));
    let mut pubsub = server.pubsub().await;
    let mut subscription = pubsub
        .subscribe(SubscribeRequest {
            namespace: "events".into(),
            topic: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Nodes 0 and 1 go, so the gateway ends up on node 2 whichever it started on; then
    // node 0 comes back and node 2 goes, so it must move at least once.
    for (killed, restarted) in [(None, None), (Some(0), None), (Some(1), None), (Some(2), Some(0))] {
        if let Some(node) = restarted {
            cluster.run(node);
        }
        if let Some(node) = killed {
            cluster.kill(node);
        }
        // Publish until one arrives: during a reconnect publishes fail or vanish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut attempt = 0u32;
        'delivered: loop {
            assert!(std::time::Instant::now() < deadline, "nothing delivered after killing node {killed:?}");
            attempt += 1;
            let payload = format!("{killed:?}/{attempt}").into_bytes();
            let publish = PublishRequest {
                namespace: "events".into(),
                topic: "orders".into(),
                payload: payload.clone().into(),
                ..Default::default()
            };
            if pubsub.publish(publish).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            let wait = tokio::time::sleep(std::time::Duration::from_millis(500));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    event = subscription.message() => {
                        let message = event.expect("the subscription stays open").expect("not ended").message.unwrap();
                        if message.payload[..] == payload[..] {
                            break 'delivered;
                        }
                    }
                    () = &mut wait => break,
                }
            }
        }
    }
}

/// Three gateways over one PostgreSQL database, clients spread over them: a key written
/// through one reads back through the others, and a queue drained by a consumer on each
/// gateway hands every message out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_keys_and_split_a_queue_without_duplicates() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let run = format!("{}_{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_millis());
    let config = config()
        + r#"
[[namespaces]]
name = "jobs"
pattern = "queue"
[namespaces.slots.queue]
plugin = "postgres"
config = { url = "postgres://postgres@127.0.0.1:5432/test", table = "prism_gateways_kv", queue_table = "prism_gateways_q" }
"#;
    let gateways: Vec<Server> = (0..3).map(|_| Server::start(&config)).collect();
    writes_are_read_through_every_gateway(&gateways, "ledger").await;
    queue_is_split_without_duplicates(&gateways, "jobs", &format!("q{run}"), 300).await;
}

/// Each gateway writes a key; every other gateway reads it back.
async fn writes_are_read_through_every_gateway(gateways: &[Server], namespace: &str) {
    let run = unique("shared");
    for (writer, gateway) in gateways.iter().enumerate() {
        let key = format!("{run}/{writer}");
        let request = SetRequest {
            namespace: namespace.into(),
            key: key.clone(),
            value: key.clone().into_bytes().into(),
            ..Default::default()
        };
        gateway.keyvalue().await.set(request).await.unwrap();
        for (reader, other) in gateways.iter().enumerate().filter(|(reader, _)| *reader != writer) {
            let request = GetRequest { namespace: namespace.into(), key: key.clone(), transaction_id: 0 };
            let reply = other.keyvalue().await.get(request).await.unwrap().into_inner();
            assert_eq!(reply.value[..], *key.as_bytes(), "gateway {reader} reads gateway {writer}'s write");
        }
    }
}

/// `total` messages enqueued round-robin through the gateways, drained by a consumer on
/// each: every message handed out exactly once, consumers on several gateways busy.
async fn queue_is_split_without_duplicates(gateways: &[Server], namespace: &str, queue: &str, total: usize) {
    for (n, gateway) in (0..total).zip(gateways.iter().cycle()) {
        let enqueue = EnqueueRequest {
            namespace: namespace.into(),
            queue: queue.into(),
            payload: format!("{n}").into_bytes().into(),
            ..Default::default()
        };
        gateway.queue().await.enqueue(enqueue).await.unwrap();
    }
    let mut consumers = Vec::new();
    for gateway in gateways {
        let (mut client, namespace, queue) = (gateway.queue().await, namespace.to_owned(), queue.to_owned());
        consumers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let request = DequeueRequest {
                    namespace: namespace.clone(),
                    queue: queue.clone(),
                    max_messages: 7,
                    visibility_timeout_ms: 60_000,
                    wait_ms: 300,
                };
                let messages = client.dequeue(request).await.unwrap().into_inner().messages;
                if messages.is_empty() {
                    return taken;
                }
                for message in messages {
                    let ack = AckRequest {
                        namespace: namespace.clone(),
                        queue: queue.clone(),
                        receipt: message.receipt,
                    };
                    assert!(client.ack(ack).await.unwrap().into_inner().acked);
                    taken.push(String::from_utf8(message.payload.to_vec()).unwrap());
                }
            }
        }));
    }
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let mut per_gateway = Vec::new();
    for consumer in consumers {
        let taken = consumer.await.unwrap();
        per_gateway.push(taken.len());
        for payload in taken {
            *seen.entry(payload).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), total, "every message was delivered");
    assert!(seen.values().all(|count| *count == 1), "a message was delivered twice: {seen:?}");
    assert!(
        per_gateway.iter().filter(|taken| **taken > 0).count() >= 2,
        "consumers on several gateways took messages: {per_gateway:?}"
    );
}

/// The issue's multi-gateway test: three gateways over the Redis Cluster (key-value and
/// the multicast registry), a NATS cluster (multicast messaging) and PostgreSQL (queue).
/// Writes read back through every gateway; a queue drained on all three hands each
/// message out once; a Multicast from A reaches identities subscribed on B and C, all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_over_clustered_backends_behave_as_one() {
    if !backends_available(&[Backend::RedisCluster, Backend::Postgres])
        || !prism_acceptance::harness::program_available("nats-server")
    {
        return;
    }
    let nats = NatsCluster::start();
    let run = format!("{}{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_millis());
    let redis = "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003";
    let config = format!(
        r#"
[plugins.redis]
path = "{{redis}}"
[plugins.nats]
path = "{{nats}}"
[plugins.postgres]
path = "{{postgres}}"

[[namespaces]]
name = "ledger"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "redis"
config = {{ url = "{redis}", cluster = true, key_prefix = "gw-{run}-kv:" }}

[[namespaces]]
name = "jobs"
pattern = "queue"
[namespaces.slots.queue]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "prism_gateways_kv", queue_table = "prism_gateways_q" }}

[[namespaces]]
name = "devices"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "redis"
config = {{ url = "{redis}", cluster = true, key_prefix = "gw-{run}-mc:" }}
[namespaces.slots.messaging]
plugin = "nats"
config = {{ url = "{}", subject_prefix = "prism.gw{run}." }}
"#,
        nats.urls()
    );
    let gateways: Vec<Server> = (0..3).map(|_| Server::start(&config)).collect();
    writes_are_read_through_every_gateway(&gateways, "ledger").await;
    queue_is_split_without_duplicates(&gateways, "jobs", &format!("q{run}"), 150).await;

    let mut clients = Vec::new();
    for gateway in &gateways {
        clients.push(multicast_registry_service_client::MulticastRegistryServiceClient::new(
            gateway.channel().await,
        ));
    }
    let mut streams = Vec::new();
    for (gateway, identity) in [(1, "on-b"), (2, "on-c")] {
        let register =
            RegisterRequest { namespace: "devices".into(), identity: identity.into(), ..Default::default() };
        clients[0].register(register).await.unwrap();
        let subscribe = MulticastSubscribeRequest { namespace: "devices".into(), identity: identity.into() };
        streams.push(clients[gateway].subscribe(subscribe).await.unwrap().into_inner());
    }
    let sent = multicast_to_all(&mut clients[0], b"to every gateway").await;
    assert_eq!((sent.targets, sent.delivered), (2, 2), "{sent:?}");
    for stream in &mut streams {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("delivered within 10 s")
            .unwrap()
            .expect("a message");
        assert_eq!(&message.payload[..], b"to every gateway");
    }
}

/// One of three gateways is killed (SIGKILL) under load: only calls on that gateway fail,
/// each with a status a client retries on (it then goes to the next gateway), and every
/// write a gateway acknowledged reads back through the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_gateway_under_load_fails_only_its_own_calls_and_loses_no_acknowledged_write() {
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    let mut gateways: Vec<Option<Server>> = (0..3).map(|_| Some(Server::start(&config()))).collect();
    let mut clients = Vec::new();
    for gateway in gateways.iter().flatten() {
        clients.push(gateway.keyvalue().await);
    }
    let run = unique("killed");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let (mut clients, run, stop) = (clients.clone(), run.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failures) = (Vec::new(), Vec::new());
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("{run}/{worker}/{n}");
                    let mut target = (worker + n) % 3;
                    loop {
                        let request = SetRequest {
                            namespace: "ledger".into(),
                            key: key.clone(),
                            value: key.clone().into_bytes().into(),
                            ..Default::default()
                        };
                        match clients[target].set(request).await {
                            Ok(_) => break acknowledged.push(key),
                            Err(status) => {
                                failures.push((target, status.code()));
                                target = (target + 1) % 3;
                            }
                        }
                    }
                }
                (acknowledged, failures)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    drop(gateways[1].take()); // SIGKILL, mid-load
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut failures) = (Vec::new(), Vec::new());
    for worker in workers {
        let (keys, failed) = worker.await.unwrap();
        acknowledged.extend(keys);
        failures.extend(failed);
    }
    assert!(!failures.is_empty(), "the load went on past the kill, so calls reached the dead gateway");
    for (target, code) in &failures {
        assert_eq!(*target, 1, "a call on a surviving gateway failed: {code:?}");
        assert!(matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled), "{code:?}");
    }
    let mut survivor = clients.swap_remove(0);
    for key in acknowledged {
        let reply = survivor
            .get(GetRequest { namespace: "ledger".into(), key: key.clone(), transaction_id: 0 })
            .await;
        assert_eq!(reply.unwrap().into_inner().value[..], *key.as_bytes(), "acknowledged {key} is lost");
    }
    eprintln!("{} calls failed on the killed gateway and were retried elsewhere", failures.len());
}

/// A private Redis Cluster of three masters with a replica each, on free ports.
struct FailoverCluster {
    ports: Vec<u16>,
    nodes: Vec<Option<std::process::Child>>,
    _dir: tempfile::TempDir,
}

impl FailoverCluster {
    fn start() -> FailoverCluster {
        let dir = tempfile::tempdir().unwrap();
        // A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
        let ports: Vec<u16> = (0..6)
            .map(|_| loop {
                let port = prism_acceptance::harness::free_port();
                let bus_free =
                    port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok();
                if bus_free {
                    break port;
                }
            })
            .collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let child = std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                    .args(["--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"])
                    // Replicas sync at once (the default waits 5 s for more of them).
                    .args(["--repl-diskless-sync-delay", "0"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server runs");
                Some(child)
            })
            .collect();
        for port in &ports {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start on {port}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let created = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        let cluster = FailoverCluster { ports, nodes, _dir: dir };
        cluster.wait_until_ok(cluster.ports[0]);
        // A replica that never synced may not take over: wait until every one has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for port in &cluster.ports {
            loop {
                let replication = Self::cli(*port, &["info", "replication"]);
                if replication.contains("role:master") || replication.contains("master_link_status:up") {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the replica on {port} never synced");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        cluster
    }

    fn cli(port: u16, args: &[&str]) -> String {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn wait_until_ok(&self, port: u16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !Self::cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
            assert!(std::time::Instant::now() < deadline, "the cluster never reached cluster_state:ok");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The port of the master serving `key`'s slot.
    fn master_of(&self, key: &str) -> u16 {
        let slot: u32 = Self::cli(self.ports[0], &["cluster", "keyslot", key]).trim().parse().unwrap();
        for line in Self::cli(self.ports[0], &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((from, to)) => {
                    (from.parse().unwrap_or(u32::MAX)..=to.parse().unwrap_or(0)).contains(&slot)
                }
                None => range.parse() == Ok(slot),
            });
            if serves {
                let address = fields[1].split('@').next().unwrap();
                return address.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("no master serves slot {slot}");
    }

    fn kill(&mut self, port: u16) {
        let node = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FailoverCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// The master holding a namespace's keys is killed (SIGKILL) under a gateway: calls fail
/// with UNAVAILABLE while the cluster promotes its replica, then succeed again without a
/// gateway restart. What is lost: at most the writes acknowledged in the moment before
/// the kill that had not reached the replica yet (replication is asynchronous); writes
/// acknowledged a second earlier are all there, and that is what is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_costs_calls_only_while_the_replica_is_promoted() {
    if !prism_acceptance::harness::program_available("redis-server") {
        return;
    }
    let mut cluster = FailoverCluster::start();
    let seeds: Vec<String> = cluster.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect();
    let server = Server::start(&format!(
        "[plugins.redis]\npath = \"{{redis}}\"\n\n[[namespaces]]\nname = \"ledger\"\npattern = \"keyvalue\"\n\
         [namespaces.slots.store]\nplugin = \"redis\"\nconfig = {{ url = \"{}\", cluster = true, key_prefix = \"failover:\" }}\n",
        seeds.join(",")
    ));
    let mut kv = server.keyvalue().await;
    let set = |key: String| SetRequest {
        namespace: "ledger".into(),
        key: key.clone(),
        value: key.into_bytes().into(),
        ..Default::default()
    };
    let before: Vec<String> = (0..200).map(|n| format!("before/{n}")).collect();
    for key in &before {
        kv.set(set(key.clone())).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await; // replicated by now
    let master = cluster.master_of("{failover:}i");
    cluster.kill(master);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut failed = 0;
    let mut last = None;
    for n in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "calls never recovered after the failover: {last:?}\n{}",
            FailoverCluster::cli(
                cluster.ports.iter().copied().find(|p| *p != master).unwrap(),
                &["cluster", "nodes"]
            )
        );
        match kv.set(set(format!("after/{n}"))).await {
            Ok(_) if n > 0 || failed > 0 => break,
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                last = Some(status.message().to_owned());
                failed += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert!(failed > 0, "calls to a killed master cannot all succeed before its replica takes over");
    assert_ne!(cluster.master_of("{failover:}i"), master, "a replica took over the slot");
    for key in &before {
        let reply =
            kv.get(GetRequest { namespace: "ledger".into(), key: key.clone(), transaction_id: 0 }).await;
        assert_eq!(reply.unwrap().into_inner().value[..], *key.as_bytes(), "{key} was lost in the failover");
    }
    eprintln!("{failed} calls failed with UNAVAILABLE during the failover");
}

/// Pub/sub on a Redis Cluster whose first seed node is down: the subscription is made on
/// the next seed that answers (a cluster forwards every PUBLISH to every node).
#[tokio::test]
async fn redis_cluster_pubsub_subscribes_on_a_seed_that_answers() {
    if !backends_available(&[Backend::RedisCluster]) {
        return;
    }
    let dead = prism_acceptance::harness::free_port();
    let server = Server::start(&format!(
        "[plugins.redis]\npath = \"{{redis}}\"\n\n[[namespaces]]\nname = \"events\"\npattern = \"pubsub\"\n\
         [namespaces.slots.broker]\nplugin = \"redis\"\nconfig = {{ url = \"redis://127.0.0.1:{dead},redis://127.0.0.1:7001,redis://127.0.0.1:7002\", cluster = true, key_prefix = \"{}:\" }}\n",
        unique("seeds")
    ));
    let mut pubsub = server.pubsub().await;
    let mut subscription = pubsub
        .subscribe(SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() })
        .await
        .expect("subscribed on a live seed")
        .into_inner();
    let publish = PublishRequest {
        namespace: "events".into(),
        topic: "t".into(),
        payload: b"hi".to_vec().into(),
        ..Default::default()
    };
    pubsub.publish(publish).await.unwrap();
    let event =
        tokio::time::timeout(std::time::Duration::from_secs(10), subscription.message()).await.unwrap();
    assert_eq!(&event.unwrap().unwrap().message.unwrap().payload[..], b"hi");
}
