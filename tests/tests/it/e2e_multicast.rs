//! The multicast-registry pattern over gRPC, on three slot bindings: memstore + memstore,
//! redis + nats, and postgres + kafka with postgres durability. Every operation, TTLs,
//! filters, pagination, delivery to subscribers, queueing for absent identities.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prism_acceptance::harness::{backends_available, Backend, Server};
use prism_api::multicast_registry_service_client::MulticastRegistryServiceClient;
use prism_api::*;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn config() -> String {
    let run = std::process::id();
    format!(
        r#"
[plugins.memstore]
path = "{{memstore}}"
[plugins.redis]
path = "{{redis}}"
[plugins.nats]
path = "{{nats}}"
[plugins.postgres]
path = "{{postgres}}"
[plugins.kafka]
path = "{{kafka}}"

[[namespaces]]
name = "mem"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "memstore"
[namespaces.slots.messaging]
plugin = "memstore"

[[namespaces]]
name = "redis-nats"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "redis"
config = {{ url = "redis://127.0.0.1:6379", key_prefix = "prism-mc-{run}:" }}
[namespaces.slots.messaging]
plugin = "nats"
config = {{ url = "nats://127.0.0.1:4222", subject_prefix = "prism.mc{run}." }}

[[namespaces]]
name = "pg-kafka"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "prism_mc_e2e", queue_table = "prism_mc_e2e_queue" }}
[namespaces.slots.messaging]
plugin = "kafka"
config = {{ brokers = "127.0.0.1:9092", topic_prefix = "prism-mc-{run}." }}
[namespaces.slots.durability]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "prism_mc_e2e", queue_table = "prism_mc_e2e_queue" }}
"#
    )
}

/// Identities and a metadata field unique to this run, so shared backends are safe.
fn who(name: &str) -> String {
    format!("r{}-{name}", std::process::id())
}

fn run_filter(extra: &str) -> String {
    let run = format!("run = \"{}\"", std::process::id());
    if extra.is_empty() {
        run
    } else {
        format!("{run} and ({extra})")
    }
}

async fn register(
    client: &mut MulticastRegistryServiceClient<Channel>,
    namespace: &str,
    name: &str,
    metadata: &[(&str, &str)],
    ttl_ms: i64,
) {
    let mut metadata: BTreeMap<String, String> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    metadata.insert("run".into(), std::process::id().to_string());
    let request = RegisterRequest {
        namespace: namespace.into(),
        identity: who(name),
        metadata,
        ttl_ms,
        replace: false,
    };
    client.register(request).await.unwrap_or_else(|s| panic!("{namespace}: register {name}: {s}"));
}

async fn enumerate(
    client: &mut MulticastRegistryServiceClient<Channel>,
    namespace: &str,
    filter: &str,
) -> BTreeSet<String> {
    let request =
        EnumerateRequest { namespace: namespace.into(), filter: run_filter(filter), ..Default::default() };
    let reply = client.enumerate(request).await.unwrap().into_inner();
    assert!(reply.next_cursor.is_empty() || reply.identities.len() == 100);
    reply.identities.into_iter().map(|i| i.identity).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| who(name)).collect()
}

async fn next(stream: &mut Streaming<MulticastMessage>) -> MulticastMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("no stream error")
        .expect("the stream is open")
}

async fn subscribe(
    client: &mut MulticastRegistryServiceClient<Channel>,
    namespace: &str,
    name: &str,
) -> Streaming<MulticastMessage> {
    let request = MulticastSubscribeRequest { namespace: namespace.into(), identity: who(name) };
    client
        .subscribe(request)
        .await
        .unwrap_or_else(|s| panic!("{namespace}: subscribe {name}: {s}"))
        .into_inner()
}

async fn exercise(server: &Server, namespace: &str, durable: bool) {
    let mut client = MulticastRegistryServiceClient::new(server.channel().await);
    register(&mut client, namespace, "ann", &[("tier", "gold"), ("region", "eu-west"), ("age", "34")], 0)
        .await;
    register(&mut client, namespace, "bob", &[("tier", "gold"), ("region", "us-east"), ("age", "17")], 0)
        .await;
    register(&mut client, namespace, "cat", &[("tier", "silver"), ("region", "eu-north"), ("age", "51")], 0)
        .await;
    register(&mut client, namespace, "dan", &[("tier", "bronze")], 0).await;
    register(&mut client, namespace, "eve", &[("tier", "gold"), ("region", "eu-south")], 1500).await;

    // Registering a live identity again needs `replace`.
    let again = RegisterRequest {
        namespace: namespace.into(),
        identity: who("dan"),
        replace: false,
        ..Default::default()
    };
    assert_eq!(client.register(again.clone()).await.unwrap_err().code(), Code::AlreadyExists, "{namespace}");
    let mut replace = again;
    replace.replace = true;
    replace.metadata =
        [("tier".to_string(), "bronze".to_string()), ("run".to_string(), std::process::id().to_string())]
            .into();
    assert!(client.register(replace).await.unwrap().into_inner().replaced, "{namespace}");

    assert_eq!(
        enumerate(&mut client, namespace, "").await,
        names(&["ann", "bob", "cat", "dan", "eve"]),
        "{namespace}"
    );
    assert_eq!(
        enumerate(&mut client, namespace, "tier = gold").await,
        names(&["ann", "bob", "eve"]),
        "{namespace}"
    );
    assert_eq!(
        enumerate(&mut client, namespace, "region ^= eu and (age >= 18 or not exists(age))").await,
        names(&["ann", "cat", "eve"]),
        "{namespace}"
    );
    assert_eq!(
        enumerate(&mut client, namespace, "tier in (silver, bronze)").await,
        names(&["cat", "dan"]),
        "{namespace}"
    );

    // Pages of 2 cover everything once.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let request = EnumerateRequest {
            namespace: namespace.into(),
            filter: run_filter(""),
            page_size: 2,
            cursor,
            ..Default::default()
        };
        let reply = client.enumerate(request).await.unwrap().into_inner();
        assert!(reply.identities.len() <= 2, "{namespace}: a page holds at most page_size");
        paged.extend(reply.identities.into_iter().map(|i| i.identity));
        if reply.next_cursor.is_empty() {
            break;
        }
        cursor = reply.next_cursor;
    }
    assert_eq!(paged.len(), 5, "{namespace}: {paged:?}");
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), names(&["ann", "bob", "cat", "dan", "eve"]));

    let bad =
        EnumerateRequest { namespace: namespace.into(), filter: "tier = ".into(), ..Default::default() };
    let status = client.enumerate(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("position 7") && status.message().contains("expected a value"),
        "{}",
        status.message()
    );

    // ann and bob listen; cat does not.
    let mut ann = subscribe(&mut client, namespace, "ann").await;
    let mut bob = subscribe(&mut client, namespace, "bob").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request = MulticastRequest {
        namespace: namespace.into(),
        filter: run_filter("tier in (gold, silver) and not region ^= \"eu-s\""),
        payload: b"hello".to_vec().into(),
        headers: [("kind".to_string(), "greeting".to_string())].into(),
    };
    let reply = client.multicast(request).await.unwrap().into_inner();
    assert_eq!(reply.targets, 3, "{namespace}: {reply:?}");
    assert_eq!(reply.delivered, 2, "{namespace}: {reply:?}");
    let cat = reply.deliveries.iter().find(|d| d.identity == who("cat")).unwrap();
    let expected = if durable { DeliveryStatus::Queued } else { DeliveryStatus::NotDelivered };
    assert_eq!(cat.status, expected as i32, "{namespace}: {cat:?}");
    assert_eq!(reply.queued, u32::from(durable));
    for stream in [&mut ann, &mut bob] {
        let message = next(stream).await;
        assert_eq!(&message.payload[..], b"hello");
        assert_eq!(message.headers.get("kind").map(String::as_str), Some("greeting"));
        assert_eq!(message.message_id, reply.message_id);
        assert!(!message.from_queue);
    }
    if durable {
        let mut late = subscribe(&mut client, namespace, "cat").await;
        let message = next(&mut late).await;
        assert_eq!((&message.payload[..], message.from_queue), (&b"hello"[..], true), "{namespace}");
    }

    // eve's registration lapses.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        enumerate(&mut client, namespace, "tier = gold").await,
        names(&["ann", "bob"]),
        "{namespace}: TTL"
    );

    let gone = DeregisterRequest { namespace: namespace.into(), identity: who("dan") };
    assert!(client.deregister(gone.clone()).await.unwrap().into_inner().deregistered);
    assert!(!client.deregister(gone).await.unwrap().into_inner().deregistered, "{namespace}: twice");
    assert!(!enumerate(&mut client, namespace, "").await.contains(&who("dan")));

    let request = MulticastSubscribeRequest { namespace: namespace.into(), identity: who("nobody") };
    assert_eq!(client.subscribe(request).await.unwrap_err().code(), Code::NotFound);
    let forever = RegisterRequest {
        namespace: namespace.into(),
        identity: who("zed"),
        ttl_ms: i64::MAX,
        ..Default::default()
    };
    assert_eq!(
        client.register(forever).await.unwrap_err().code(),
        Code::InvalidArgument,
        "{namespace}: huge TTL"
    );
    let request = MulticastSubscribeRequest { namespace: namespace.into(), identity: "no spaces".into() };
    assert_eq!(client.subscribe(request).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memstore_registry_with_memstore_messaging() {
    if !backends_available(&[Backend::Redis, Backend::Nats, Backend::Postgres, Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    exercise(&server, "mem", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_with_nats_messaging() {
    if !backends_available(&[Backend::Redis, Backend::Nats, Backend::Postgres, Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    exercise(&server, "redis-nats", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_registry_with_kafka_messaging_and_postgres_durability() {
    if !backends_available(&[Backend::Redis, Backend::Nats, Backend::Postgres, Backend::Kafka]) {
        return;
    }
    let server = Server::start(&config());
    exercise(&server, "pg-kafka", true).await;
}
