//! pubsub_persistent: a durable subscription keeps messages while nobody listens,
//! redelivers what was not acked after its ack wait, and never redelivers what was.

use std::time::Duration;

use super::cases;
use super::pubsub_basic::{receive, topic};

/// A durable name unique to this case (letters, digits, `_`).
fn durable(keys: &super::Keys) -> String {
    keys.key("d").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

cases! {
    async fn messages_published_while_away_are_kept(instance, keys) {
        let basic = instance.pubsub_basic().expect("pubsub_persistent needs pubsub_basic");
        let persistent = instance.pubsub_persistent().expect("declared pubsub_persistent");
        let (name, topic) = (durable(keys), topic(keys, "away"));
        drop(persistent.subscribe_durable(&name, &topic, Duration::from_secs(30)).await.unwrap());
        // Dropping a subscription cancels it in the backend, not at once: "away" starts
        // once the cancellation got there (a plugin in its own process is one hop further).
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..3u8 {
            basic.publish(&topic, vec![i], Vec::new()).await.unwrap();
        }
        let mut subscription = persistent.subscribe_durable(&name, &topic, Duration::from_secs(30)).await.unwrap();
        for i in 0..3u8 {
            let message = receive(&mut subscription).await;
            assert_eq!(message.payload, vec![i]);
            assert_eq!(message.delivery_count, 1);
            assert!(!message.ack_id.is_empty());
            persistent.ack(&name, &message.ack_id).await.unwrap();
        }
    }

    async fn an_unacked_message_is_redelivered_after_the_ack_wait(instance, keys) {
        let basic = instance.pubsub_basic().unwrap();
        let persistent = instance.pubsub_persistent().unwrap();
        let (name, topic) = (durable(keys), topic(keys, "redeliver"));
        let wait = Duration::from_secs(1);
        let mut first = persistent.subscribe_durable(&name, &topic, wait).await.unwrap();
        basic.publish(&topic, b"work".to_vec(), Vec::new()).await.unwrap();
        let delivered = receive(&mut first).await;
        assert_eq!(delivered.delivery_count, 1);
        drop(first); // the subscriber dies without acking
        let mut second = persistent.subscribe_durable(&name, &topic, wait).await.unwrap();
        let again = receive(&mut second).await;
        assert_eq!(again.payload, b"work".to_vec());
        assert_eq!(again.id, delivered.id);
        assert_eq!(again.delivery_count, 2);
        persistent.ack(&name, &again.ack_id).await.unwrap();
    }

    async fn an_acked_message_is_not_redelivered(instance, keys) {
        let basic = instance.pubsub_basic().unwrap();
        let persistent = instance.pubsub_persistent().unwrap();
        let (name, topic) = (durable(keys), topic(keys, "acked"));
        let wait = Duration::from_secs(1);
        let mut subscription = persistent.subscribe_durable(&name, &topic, wait).await.unwrap();
        basic.publish(&topic, b"once".to_vec(), Vec::new()).await.unwrap();
        let message = receive(&mut subscription).await;
        persistent.ack(&name, &message.ack_id).await.unwrap();
        tokio::time::sleep(wait * 2).await;
        basic.publish(&topic, b"next".to_vec(), Vec::new()).await.unwrap();
        let next = receive(&mut subscription).await;
        assert_eq!(next.payload, b"next".to_vec(), "the acked message came back");
        persistent.ack(&name, &next.ack_id).await.unwrap();
    }

    async fn a_live_subscriber_gets_an_unacked_message_again_after_the_ack_wait(instance, keys) {
        let basic = instance.pubsub_basic().unwrap();
        let persistent = instance.pubsub_persistent().unwrap();
        let (name, topic) = (durable(keys), topic(keys, "again"));
        let wait = Duration::from_secs(1);
        let mut subscription = persistent.subscribe_durable(&name, &topic, wait).await.unwrap();
        basic.publish(&topic, b"slow".to_vec(), Vec::new()).await.unwrap();
        let first = receive(&mut subscription).await;
        assert_eq!(first.delivery_count, 1);
        let again = receive(&mut subscription).await; // not acked: it comes back
        assert_eq!((again.id.as_str(), again.payload.as_slice()), (first.id.as_str(), &b"slow"[..]));
        assert_eq!(again.delivery_count, 2);
        persistent.ack(&name, &again.ack_id).await.unwrap();
    }
}
