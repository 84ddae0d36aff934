//! queue_visibility: a message whose visibility timeout lapses is redelivered; extending
//! the timeout keeps it invisible.

use std::time::Duration;

use super::cases;

const SHORT: Duration = Duration::from_millis(400);
const AFTER_SHORT: Duration = Duration::from_millis(1000);

cases! {
    async fn a_lapsed_visibility_timeout_redelivers_the_message(instance, keys) {
        let queue = instance.queue_basic().expect("queue_visibility needs queue_basic");
        let visibility = instance.queue_visibility().expect("declared queue_visibility");
        let name = keys.key("q");
        let id = queue.enqueue(&name, b"work".to_vec()).await.unwrap();
        let first = visibility.dequeue_with_visibility(&name, 1, SHORT).await.unwrap().remove(0);
        assert!(visibility.dequeue_with_visibility(&name, 1, SHORT).await.unwrap().is_empty());
        tokio::time::sleep(AFTER_SHORT).await;
        let second = visibility.dequeue_with_visibility(&name, 1, Duration::from_secs(30)).await.unwrap().remove(0);
        assert_eq!(second.id, id);
        assert_eq!(second.delivery_count, first.delivery_count + 1);
        assert!(!queue.ack(&name, &first.receipt).await.unwrap(), "the lapsed delivery cannot ack");
        assert!(queue.ack(&name, &second.receipt).await.unwrap());
    }

    async fn extending_the_timeout_keeps_the_message_invisible(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let visibility = instance.queue_visibility().unwrap();
        let name = keys.key("q");
        queue.enqueue(&name, b"slow work".to_vec()).await.unwrap();
        let message = visibility.dequeue_with_visibility(&name, 1, SHORT).await.unwrap().remove(0);
        assert!(visibility.extend_visibility(&name, &message.receipt, Duration::from_secs(30)).await.unwrap());
        tokio::time::sleep(AFTER_SHORT).await;
        assert!(visibility.dequeue_with_visibility(&name, 1, SHORT).await.unwrap().is_empty());
        assert!(queue.ack(&name, &message.receipt).await.unwrap());
    }

    async fn a_stale_receipt_cannot_extend(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let visibility = instance.queue_visibility().unwrap();
        let name = keys.key("q");
        queue.enqueue(&name, b"x".to_vec()).await.unwrap();
        let message = visibility.dequeue_with_visibility(&name, 1, SHORT).await.unwrap().remove(0);
        assert!(queue.ack(&name, &message.receipt).await.unwrap());
        assert!(!visibility.extend_visibility(&name, &message.receipt, SHORT).await.unwrap());
    }
}
