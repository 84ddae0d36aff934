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
async fn an_id_from_before_a_restart_or_never_handed_out_is_not_found() {
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
        assert!(matches!(status.code(), Code::NotFound | Code::FailedPrecondition), "{status:?}");
        if (id >> 48) == (ours >> 48) {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert!(status.message().contains("is not open on"), "{}", status.message());
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
