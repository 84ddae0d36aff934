//! queue_delayed: a message enqueued for a later time stays invisible until then.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cases;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

cases! {
    async fn a_delayed_message_waits_for_its_time(instance, keys) {
        let queue = instance.queue_basic().expect("queue_delayed needs queue_basic");
        let delayed = instance.queue_delayed().expect("declared queue_delayed");
        let name = keys.key("q");
        let id = delayed.enqueue_at(&name, b"later".to_vec(), now_ms() + 800).await.unwrap();
        assert!(queue.dequeue(&name, 1).await.unwrap().is_empty(), "not before its time");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let message = queue.dequeue(&name, 1).await.unwrap().remove(0);
        assert_eq!(message.id, id);
        assert_eq!(message.payload, b"later".to_vec());
    }

    async fn a_time_in_the_past_delivers_at_once(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let delayed = instance.queue_delayed().unwrap();
        let name = keys.key("q");
        delayed.enqueue_at(&name, b"now".to_vec(), now_ms() - 60_000).await.unwrap();
        assert_eq!(queue.dequeue(&name, 1).await.unwrap().len(), 1);
    }

    async fn delayed_messages_do_not_block_ready_ones(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let delayed = instance.queue_delayed().unwrap();
        let name = keys.key("q");
        delayed.enqueue_at(&name, b"later".to_vec(), now_ms() + 60_000).await.unwrap();
        queue.enqueue(&name, b"ready".to_vec()).await.unwrap();
        let got = queue.dequeue(&name, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"ready".to_vec());
    }
}
