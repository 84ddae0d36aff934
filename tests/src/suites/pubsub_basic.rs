//! pubsub_basic: fan-out to every current subscriber of a topic, each publisher's order
//! kept, at most once (nothing from before the subscription), other topics not delivered.

use std::time::Duration;

use plugin_abi::Message;

use super::cases;

/// The next message, failing the case if none comes within 5 s.
pub(crate) async fn receive(stream: &mut plugin_abi::Subscription) -> Message {
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(error))) => panic!("the subscription failed: {error}"),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no message within 5 s"),
    }
}

/// A topic unique to this case: the keys prefix as the first token, in characters every
/// backend accepts in a topic name (Kafka's are the fewest).
pub(crate) fn topic(keys: &super::Keys, rest: &str) -> String {
    let first: String =
        keys.key("t").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{first}.{rest}")
}

cases! {
    async fn every_subscriber_gets_every_message(instance, keys) {
        let pubsub = instance.pubsub_basic().expect("declared pubsub_basic");
        let topic = topic(keys, "fanout");
        let mut subscribers = Vec::new();
        for _ in 0..3 {
            subscribers.push(pubsub.subscribe(&topic).await.unwrap());
        }
        for i in 0..10u8 {
            pubsub.publish(&topic, vec![i], Vec::new()).await.unwrap();
        }
        for subscriber in &mut subscribers {
            for i in 0..10u8 {
                assert_eq!(receive(subscriber).await.payload, vec![i]);
            }
        }
    }

    async fn one_publisher_order_is_kept_over_a_thousand_messages(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let topic = topic(keys, "order");
        let mut subscriber = pubsub.subscribe(&topic).await.unwrap();
        let reader = async {
            for i in 0..1000u32 {
                let message = receive(&mut subscriber).await;
                assert_eq!(message.payload, i.to_be_bytes().to_vec(), "message {i} out of order");
            }
        };
        let writer = async {
            for i in 0..1000u32 {
                pubsub.publish(&topic, i.to_be_bytes().to_vec(), Vec::new()).await.unwrap();
            }
        };
        futures::join!(reader, writer);
    }

    async fn messages_carry_topic_payload_metadata_and_id(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let topic = topic(keys, "meta");
        let mut subscriber = pubsub.subscribe(&topic).await.unwrap();
        let metadata = vec![("trace".to_owned(), "abc".to_owned()), ("kind".to_owned(), "test".to_owned())];
        let id = pubsub.publish(&topic, b"payload".to_vec(), metadata.clone()).await.unwrap();
        let message = receive(&mut subscriber).await;
        assert_eq!(message.topic, topic);
        assert_eq!(message.payload, b"payload".to_vec());
        assert_eq!(message.id, id);
        let mut got = message.metadata.clone();
        got.sort();
        let mut want = metadata;
        want.sort();
        assert_eq!(got, want);
        assert!(message.published_at_unix_ms > 0);
    }

    async fn other_topics_and_earlier_messages_are_not_delivered(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let topic_a = topic(keys, "a");
        pubsub.publish(&topic_a, b"before".to_vec(), Vec::new()).await.unwrap();
        let mut subscriber = pubsub.subscribe(&topic_a).await.unwrap();
        pubsub.publish(&topic(keys, "b"), b"elsewhere".to_vec(), Vec::new()).await.unwrap();
        pubsub.publish(&format!("{topic_a}.deeper"), b"deeper".to_vec(), Vec::new()).await.unwrap();
        pubsub.publish(&topic_a, b"after".to_vec(), Vec::new()).await.unwrap();
        assert_eq!(receive(&mut subscriber).await.payload, b"after".to_vec());
    }

    async fn a_dropped_subscription_stops_and_others_carry_on(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let topic = topic(keys, "drop");
        let first = pubsub.subscribe(&topic).await.unwrap();
        let mut second = pubsub.subscribe(&topic).await.unwrap();
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..5u8 {
            pubsub.publish(&topic, vec![i], Vec::new()).await.unwrap();
        }
        for i in 0..5u8 {
            assert_eq!(receive(&mut second).await.payload, vec![i]);
        }
        let mut third = pubsub.subscribe(&topic).await.unwrap();
        pubsub.publish(&topic, b"last".to_vec(), Vec::new()).await.unwrap();
        assert_eq!(receive(&mut third).await.payload, b"last".to_vec());
    }
}
