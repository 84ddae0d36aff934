//! pubsub_wildcards: `*` matches exactly one token, a final `>` one or more.

use super::cases;
use super::pubsub_basic::{receive, topic};

cases! {
    async fn star_matches_exactly_one_token(instance, keys) {
        let pubsub = instance.pubsub_basic().expect("pubsub_wildcards needs pubsub_basic");
        let wildcards = instance.pubsub_wildcards().expect("declared pubsub_wildcards");
        let base = topic(keys, "w");
        let mut subscriber = wildcards.subscribe_pattern(&format!("{base}.*.c")).await.unwrap();
        for (suffix, payload) in [("x.c", "yes-1"), ("x.y.c", "no"), ("c", "no"), ("x.d", "no"), ("y.c", "yes-2")] {
            pubsub.publish(&format!("{base}.{suffix}"), payload.as_bytes().to_vec(), Vec::new()).await.unwrap();
        }
        let first = receive(&mut subscriber).await;
        assert_eq!((first.topic, first.payload), (format!("{base}.x.c"), b"yes-1".to_vec()));
        let second = receive(&mut subscriber).await;
        assert_eq!((second.topic, second.payload), (format!("{base}.y.c"), b"yes-2".to_vec()));
    }

    async fn a_final_gt_matches_one_or_more_tokens(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let wildcards = instance.pubsub_wildcards().unwrap();
        let base = topic(keys, "g");
        let mut subscriber = wildcards.subscribe_pattern(&format!("{base}.>")).await.unwrap();
        pubsub.publish(&base, b"no".to_vec(), Vec::new()).await.unwrap();
        pubsub.publish(&format!("{base}.a"), b"one".to_vec(), Vec::new()).await.unwrap();
        pubsub.publish(&format!("{base}.a.b.c"), b"three".to_vec(), Vec::new()).await.unwrap();
        assert_eq!(receive(&mut subscriber).await.payload, b"one".to_vec());
        assert_eq!(receive(&mut subscriber).await.payload, b"three".to_vec());
    }

    async fn a_pattern_without_wildcards_is_an_exact_topic(instance, keys) {
        let pubsub = instance.pubsub_basic().unwrap();
        let wildcards = instance.pubsub_wildcards().unwrap();
        let exact = topic(keys, "exact.topic");
        let mut subscriber = wildcards.subscribe_pattern(&exact).await.unwrap();
        pubsub.publish(&format!("{exact}.longer"), b"no".to_vec(), Vec::new()).await.unwrap();
        pubsub.publish(&exact, b"yes".to_vec(), Vec::new()).await.unwrap();
        assert_eq!(receive(&mut subscriber).await.payload, b"yes".to_vec());
    }
}
