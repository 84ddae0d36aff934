//! Pub/sub through the gateway: fan-out over gRPC streams on memstore and NATS, topic
//! checks, and the slow-subscriber policies that keep host memory bounded.

use std::time::Duration;

use prism_acceptance::harness::{backends_available, Backend, Server};
use prism_api::*;
use tonic::{Code, Streaming};

fn config(server: &str) -> String {
    format!(
        r#"
[server]
{server}

[plugins.memstore]
path = "{{memstore}}"

[plugins.nats]
path = "{{nats}}"

[[namespaces]]
name = "events"
pattern = "pubsub"
[namespaces.slots.broker]
plugin = "memstore"

[[namespaces]]
name = "bus"
pattern = "pubsub"
[namespaces.slots.broker]
plugin = "nats"
config = {{ url = "nats://127.0.0.1:4222", subject_prefix = "prism.e2e.{}." }}
"#,
        std::process::id()
    )
}

fn publish(namespace: &str, topic: &str, payload: Vec<u8>) -> PublishRequest {
    PublishRequest {
        namespace: namespace.into(),
        topic: topic.into(),
        payload: payload.into(),
        metadata: Default::default(),
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<SubscribeResponse>) -> SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a message within 5 s")
        .expect("no stream error")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_memstore_and_nats_receive_in_order_with_wildcards() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let server = Server::start(&config(""));
    for namespace in ["events", "bus"] {
        let mut client = server.pubsub().await;
        let subscribe = |topic: &str| SubscribeRequest {
            namespace: namespace.into(),
            topic: topic.into(),
            ..Default::default()
        };
        let mut exact = client.subscribe(subscribe("orders.created")).await.unwrap().into_inner();
        let mut pattern = client.subscribe(subscribe("orders.*")).await.unwrap().into_inner();
        let mut all = client.subscribe(subscribe("orders.>")).await.unwrap().into_inner();
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("trace".to_owned(), "t-1".to_owned());
        let first = client
            .publish(PublishRequest { metadata, ..publish(namespace, "orders.created", b"o-1".to_vec()) })
            .await
            .unwrap()
            .into_inner()
            .message_id;
        client.publish(publish(namespace, "orders.eu.created", b"o-2".to_vec())).await.unwrap();
        client.publish(publish(namespace, "orders.created", b"o-3".to_vec())).await.unwrap();

        let got = next(&mut exact).await.message.unwrap();
        assert_eq!((got.message_id.as_str(), &got.payload[..]), (first.as_str(), &b"o-1"[..]), "{namespace}");
        assert_eq!(got.metadata.get("trace").map(String::as_str), Some("t-1"));
        assert_eq!(&next(&mut exact).await.message.unwrap().payload[..], b"o-3");
        assert_eq!(&next(&mut pattern).await.message.unwrap().payload[..], b"o-1");
        assert_eq!(
            &next(&mut pattern).await.message.unwrap().payload[..],
            b"o-3",
            "orders.* skips orders.eu.created"
        );
        for expected in [&b"o-1"[..], b"o-2", b"o-3"] {
            let message = next(&mut all).await;
            assert_eq!(&message.message.unwrap().payload[..], expected, "{namespace}");
            assert_eq!(message.dropped_before, 0);
        }
    }
}

#[tokio::test]
async fn bad_topics_are_invalid_arguments() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let server = Server::start(&config(""));
    let mut client = server.pubsub().await;
    for topic in ["", "a..b", "orders.*"] {
        let status = client.publish(publish("events", topic, b"x".to_vec())).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{topic:?}: {}", status.message());
    }
    for topic in ["a.>.b", "a.b*"] {
        let status = client
            .subscribe(SubscribeRequest {
                namespace: "events".into(),
                topic: topic.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(status.unwrap_err().code(), Code::InvalidArgument, "{topic:?}");
    }
}

/// Starts a gateway with a 16-message subscriber buffer and `policy`, subscribes, then
/// publishes 500 messages of 8 KiB (far more than HTTP/2 flow control lets the server push
/// to a client that is not reading) while the subscriber sleeps.
async fn flooded_subscriber(policy: &str) -> (Server, Streaming<SubscribeResponse>) {
    let server = Server::start(&config(&format!("subscriber_buffer = 16\nslow_subscriber = \"{policy}\"")));
    let mut client = server.pubsub().await;
    let subscribe =
        SubscribeRequest { namespace: "events".into(), topic: "flood".into(), ..Default::default() };
    let slow = client.subscribe(subscribe).await.unwrap().into_inner();
    for i in 0..500u32 {
        let mut payload = vec![0u8; 8192];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        client.publish(publish("events", "flood", payload)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    (server, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_loses_the_oldest_messages_and_is_told_how_many() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let (_server, mut slow) = flooded_subscriber("drop_oldest").await;
    let (mut received, mut dropped, mut last) = (0u64, 0u64, 0u32);
    while received + dropped < 500 {
        let event = next(&mut slow).await;
        let payload = event.message.unwrap().payload;
        let index = u32::from_be_bytes(payload[..4].try_into().unwrap());
        assert!(received == 0 || index > last, "order kept: {index} after {last}");
        last = index;
        received += 1;
        dropped += event.dropped_before;
    }
    assert_eq!(received + dropped, 500, "every message is either delivered or counted as dropped");
    assert!(dropped > 0, "the buffer of 16 overflowed");
    assert_eq!(last, 499, "the newest message is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_disconnected_with_resource_exhausted() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let (server, mut slow) = flooded_subscriber("disconnect").await;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.message()).await.expect("an event within 5 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("subscriber_buffer"), "{}", status.message());
    // The host keeps serving.
    server.pubsub().await.publish(publish("events", "after", b"x".to_vec())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_redelivers_what_a_dead_subscriber_did_not_ack() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let server = Server::start(&config(""));
    let mut client = server.pubsub().await;
    let name = format!("e2e-{}", std::process::id());
    let durable = || SubscribeRequest {
        namespace: "bus".into(),
        topic: "jobs.>".into(),
        durable_name: name.clone(),
        ack_wait_ms: 1000,
    };
    let mut first = client.subscribe(durable()).await.unwrap().into_inner();
    client.publish(publish("bus", "jobs.resize", b"image-1".to_vec())).await.unwrap();
    let delivered = next(&mut first).await.message.unwrap();
    assert_eq!((&delivered.payload[..], delivered.delivery_count), (&b"image-1"[..], 1));
    drop(first); // the subscriber dies without acking

    let mut second = client.subscribe(durable()).await.unwrap().into_inner();
    let again = next(&mut second).await.message.unwrap();
    assert_eq!(again.message_id, delivered.message_id);
    assert_eq!(again.delivery_count, 2);
    let ack = PubSubAckRequest {
        namespace: "bus".into(),
        durable_name: name.clone(),
        ack_id: again.ack_id.clone(),
    };
    client.ack(ack).await.unwrap();

    // memstore has no pubsub_persistent.
    let refused = client
        .subscribe(SubscribeRequest {
            namespace: "events".into(),
            topic: "x".into(),
            durable_name: "d".into(),
            ack_wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    assert!(refused.message().contains("pubsub_persistent"), "{}", refused.message());
    let forged =
        PubSubAckRequest { namespace: "bus".into(), durable_name: name, ack_id: "orders.created".into() };
    assert_eq!(client.ack(forged).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_publishes_in_order_and_stops_at_the_first_bad_message() {
    if !backends_available(&[Backend::Nats]) {
        return;
    }
    let server = Server::start(&config(""));
    let mut client = server.pubsub().await;
    let mut subscriber = client
        .subscribe(SubscribeRequest {
            namespace: "events".into(),
            topic: "stream.in".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let requests: Vec<PublishRequest> =
        (0..100u32).map(|i| publish("events", "stream.in", i.to_be_bytes().to_vec())).collect();
    let reply = client.publish_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    assert_eq!(reply.published, 100);
    for i in 0..100u32 {
        let message = next(&mut subscriber).await.message.unwrap();
        assert_eq!(message.payload[..], i.to_be_bytes());
        if i == 99 {
            assert_eq!(message.message_id, reply.last_message_id);
        }
    }
    let mixed = vec![
        publish("events", "stream.in", b"ok".to_vec()),
        publish("events", "bad..topic", b"no".to_vec()),
        publish("events", "stream.in", b"never".to_vec()),
    ];
    let status = client.publish_stream(tokio_stream::iter(mixed)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("after 1 messages were published"), "{}", status.message());
    assert_eq!(&next(&mut subscriber).await.message.unwrap().payload[..], b"ok");
}
