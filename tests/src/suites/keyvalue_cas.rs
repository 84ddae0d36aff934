//! keyvalue_cas: versions start at 1 and grow on every write; compare-and-swap and
//! versioned delete succeed only on a matching version (0 = absent).

use plugin_abi::CasResult;

use super::cases;

cases! {
    async fn versions_start_at_one_and_grow_on_every_write(instance, keys) {
        let kv = instance.keyvalue_basic().expect("keyvalue_cas needs keyvalue_basic");
        let cas = instance.keyvalue_cas().expect("declared keyvalue_cas");
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap(), None);
        kv.set(&keys.key("k"), b"a".to_vec()).await.unwrap();
        let first = cas.get_versioned(&keys.key("k")).await.unwrap().unwrap();
        assert_eq!((first.value.as_slice(), first.version), (&b"a"[..], 1));
        kv.set(&keys.key("k"), b"b".to_vec()).await.unwrap();
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().version, 2);
    }

    async fn expected_version_zero_creates_only_if_absent(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), 0, b"first".to_vec(), None).await.unwrap(),
            CasResult::Swapped { version: 1 }
        );
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), 0, b"second".to_vec(), None).await.unwrap(),
            CasResult::Conflict { current_version: 1 }
        );
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().value, b"first".to_vec());
    }

    async fn a_matching_version_swaps_and_a_stale_one_conflicts(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        cas.compare_and_swap(&keys.key("k"), 0, b"v1".to_vec(), None).await.unwrap();
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), 1, b"v2".to_vec(), None).await.unwrap(),
            CasResult::Swapped { version: 2 }
        );
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), 1, b"stale".to_vec(), None).await.unwrap(),
            CasResult::Conflict { current_version: 2 }
        );
        assert_eq!(
            cas.compare_and_swap(&keys.key("absent"), 3, b"x".to_vec(), None).await.unwrap(),
            CasResult::Conflict { current_version: 0 }
        );
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().value, b"v2".to_vec());
    }

    async fn versioned_delete_needs_the_current_version(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let cas = instance.keyvalue_cas().unwrap();
        kv.set(&keys.key("k"), b"a".to_vec()).await.unwrap();
        kv.set(&keys.key("k"), b"b".to_vec()).await.unwrap();
        assert_eq!(
            cas.delete_if_version(&keys.key("k"), 1).await.unwrap(),
            CasResult::Conflict { current_version: 2 }
        );
        assert!(kv.exists(&keys.key("k")).await.unwrap());
        assert!(matches!(cas.delete_if_version(&keys.key("k"), 2).await.unwrap(), CasResult::Swapped { .. }));
        assert!(!kv.exists(&keys.key("k")).await.unwrap());
    }

    async fn concurrent_increments_never_lose_an_update(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        let key = keys.key("counter");
        cas.compare_and_swap(&key, 0, b"0".to_vec(), None).await.unwrap();
        let workers = (0..8).map(|_| {
            let cas = &cas;
            let key = &key;
            async move {
                let mut done = 0;
                while done < 20 {
                    let current = cas.get_versioned(key).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(current.value).unwrap().parse().unwrap();
                    let next = (n + 1).to_string().into_bytes();
                    if let CasResult::Swapped { .. } = cas.compare_and_swap(key, current.version, next, None).await.unwrap() {
                        done += 1;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        futures::future::join_all(workers).await;
        let last = cas.get_versioned(&key).await.unwrap().unwrap();
        assert_eq!(String::from_utf8(last.value).unwrap(), "160");
        assert_eq!(last.version, 161);
    }
}
