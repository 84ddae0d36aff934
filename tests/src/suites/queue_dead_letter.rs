//! queue_dead_letter: a message that keeps failing moves to the dead-letter list after
//! the plugin's configured number of deliveries; it can be listed and replayed.

use std::time::Duration;

use super::cases;

/// Fails the message until it leaves the queue; returns how many deliveries that took.
async fn fail_until_dead(instance: &plugin_abi::host::Instance, name: &str) -> u32 {
    let queue = instance.queue_basic().expect("queue_dead_letter needs queue_basic");
    let mut deliveries = 0;
    for _ in 0..50 {
        let Some(message) = queue.dequeue(name, 1).await.unwrap().pop() else { return deliveries };
        deliveries = message.delivery_count;
        assert!(queue.nack(name, &message.receipt, Duration::ZERO).await.unwrap());
    }
    panic!("the message was still being delivered after 50 failures");
}

cases! {
    async fn a_message_that_keeps_failing_becomes_a_dead_letter(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let dead = instance.queue_dead_letter().expect("declared queue_dead_letter");
        let name = keys.key("q");
        let id = queue.enqueue(&name, b"poison".to_vec()).await.unwrap();
        let deliveries = fail_until_dead(instance, &name).await;
        assert!(deliveries >= 1);
        let page = dead.dead_letters(&name, None, 10).await.unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].id, id);
        assert_eq!(page.messages[0].payload, b"poison".to_vec());
        assert_eq!(page.messages[0].delivery_count, deliveries);
        assert_eq!(page.next_cursor, None);
    }

    async fn replay_puts_dead_letters_back_with_fresh_counts(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let dead = instance.queue_dead_letter().unwrap();
        let name = keys.key("q");
        let id = queue.enqueue(&name, b"poison".to_vec()).await.unwrap();
        fail_until_dead(instance, &name).await;
        assert_eq!(dead.replay_dead_letters(&name, vec![]).await.unwrap(), 1);
        assert!(dead.dead_letters(&name, None, 10).await.unwrap().messages.is_empty());
        let again = queue.dequeue(&name, 1).await.unwrap().remove(0);
        assert_eq!(again.id, id);
        assert_eq!(again.delivery_count, 1);
        assert!(queue.ack(&name, &again.receipt).await.unwrap());
    }

    async fn dead_letters_page_and_replay_by_id(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let dead = instance.queue_dead_letter().unwrap();
        let name = keys.key("q");
        let mut ids = Vec::new();
        for i in 0..3u8 {
            ids.push(queue.enqueue(&name, vec![i]).await.unwrap());
        }
        for _ in 0..3 {
            fail_until_dead(instance, &name).await;
        }
        let first = dead.dead_letters(&name, None, 2).await.unwrap();
        assert_eq!(first.messages.len(), 2);
        let cursor = first.next_cursor.clone().expect("a second page");
        let second = dead.dead_letters(&name, Some(&cursor), 2).await.unwrap();
        assert_eq!(second.messages.len(), 1);
        let listed: Vec<String> = first.messages.iter().chain(&second.messages).map(|m| m.id.clone()).collect();
        assert_eq!(listed, ids);
        assert_eq!(dead.replay_dead_letters(&name, vec![ids[1].clone()]).await.unwrap(), 1);
        let back = queue.dequeue(&name, 10).await.unwrap();
        assert_eq!(back.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    }
}
