//! queue_basic: a dequeued message is invisible until acked (then gone) or nacked
//! (then redelivered); concurrent consumers never receive the same message.

use std::collections::BTreeSet;
use std::time::Duration;

use plugin_abi::ErrorCode;

use super::cases;

cases! {
    async fn messages_come_out_once_in_order_and_ack_removes_them(instance, keys) {
        let queue = instance.queue_basic().expect("declared queue_basic");
        let name = keys.key("q");
        let ids = [
            queue.enqueue(&name, b"one".to_vec()).await.unwrap(),
            queue.enqueue(&name, b"two".to_vec()).await.unwrap(),
            queue.enqueue(&name, b"three".to_vec()).await.unwrap(),
        ];
        let got = queue.dequeue(&name, 10).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids.to_vec());
        assert_eq!(got.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert!(got.iter().all(|m| m.delivery_count == 1));
        assert!(queue.dequeue(&name, 10).await.unwrap().is_empty(), "delivered messages are invisible");
        for message in &got {
            assert!(queue.ack(&name, &message.receipt).await.unwrap());
            assert!(!queue.ack(&name, &message.receipt).await.unwrap(), "a second ack finds nothing");
        }
    }

    async fn an_empty_queue_dequeues_nothing(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        assert!(queue.dequeue(&keys.key("empty"), 5).await.unwrap().is_empty());
    }

    async fn dequeue_respects_max(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let name = keys.key("q");
        for i in 0..5 {
            queue.enqueue(&name, vec![i]).await.unwrap();
        }
        assert_eq!(queue.dequeue(&name, 2).await.unwrap().len(), 2);
        assert_eq!(queue.dequeue(&name, 10).await.unwrap().len(), 3);
    }

    async fn nack_redelivers_with_a_new_receipt(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let name = keys.key("q");
        let id = queue.enqueue(&name, b"retry me".to_vec()).await.unwrap();
        let first = queue.dequeue(&name, 1).await.unwrap().remove(0);
        assert!(queue.nack(&name, &first.receipt, Duration::ZERO).await.unwrap());
        let second = queue.dequeue(&name, 1).await.unwrap().remove(0);
        assert_eq!(second.id, id);
        assert_eq!(second.payload, b"retry me".to_vec());
        assert_eq!(second.delivery_count, 2);
        assert_ne!(second.receipt, first.receipt);
        assert!(!queue.ack(&name, &first.receipt).await.unwrap(), "the old delivery's receipt is stale");
        assert!(queue.ack(&name, &second.receipt).await.unwrap());
    }

    async fn queues_in_a_namespace_are_independent(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        queue.enqueue(&keys.key("a"), b"for a".to_vec()).await.unwrap();
        queue.enqueue(&keys.key("b"), b"for b".to_vec()).await.unwrap();
        let got = queue.dequeue(&keys.key("a"), 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"for a".to_vec());
    }

    async fn a_receipt_from_nowhere_acks_nothing(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let name = keys.key("q");
        queue.enqueue(&name, b"x".to_vec()).await.unwrap();
        for receipt in ["not-a-receipt", "1:forged"] {
            match queue.ack(&name, receipt).await {
                Ok(acked) => assert!(!acked, "{receipt} acked something"),
                Err(error) => assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}"),
            }
        }
        assert_eq!(queue.dequeue(&name, 10).await.unwrap().len(), 1, "the message is still there");
    }

    async fn concurrent_consumers_never_share_a_message(instance, keys) {
        let queue = instance.queue_basic().unwrap();
        let name = keys.key("q");
        let mut sent = BTreeSet::new();
        for i in 0..200u32 {
            sent.insert(queue.enqueue(&name, i.to_be_bytes().to_vec()).await.unwrap());
        }
        let consumers = (0..8).map(|_| {
            let (queue, name) = (&queue, &name);
            async move {
                let mut received = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let batch = queue.dequeue(name, 5).await.unwrap();
                    if batch.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    idle = 0;
                    for message in batch {
                        assert!(queue.ack(name, &message.receipt).await.unwrap());
                        received.push(message.id);
                    }
                }
                received
            }
        });
        let all: Vec<String> = futures::future::join_all(consumers).await.into_iter().flatten().collect();
        let unique: BTreeSet<String> = all.iter().cloned().collect();
        assert_eq!(unique.len(), all.len(), "a message was delivered to two consumers");
        assert_eq!(unique, sent, "every message was delivered");
    }
}
