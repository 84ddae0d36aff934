//! keyvalue_cas: versions are at least 1, grow on every write and are never reused for a
//! key (not even after a delete); compare-and-swap and versioned delete succeed only on
//! a matching version (0 = absent).

use plugin_abi::CasResult;

use super::cases;

cases! {
    async fn versions_grow_on_every_write(instance, keys) {
        let kv = instance.keyvalue_basic().expect("keyvalue_cas needs keyvalue_basic");
        let cas = instance.keyvalue_cas().expect("declared keyvalue_cas");
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap(), None);
        kv.set(&keys.key("k"), b"a".to_vec()).await.unwrap();
        let first = cas.get_versioned(&keys.key("k")).await.unwrap().unwrap();
        assert_eq!(first.value, b"a".to_vec());
        assert!(first.version >= 1, "0 means absent");
        kv.set(&keys.key("k"), b"b".to_vec()).await.unwrap();
        assert!(cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().version > first.version);
    }

    async fn a_key_written_again_after_a_delete_never_gets_an_old_version_back(instance, keys) {
        // A client holding a version from before the delete must not be able to
        // compare-and-swap over the new value once a counter catches up (ABA).
        let kv = instance.keyvalue_basic().unwrap();
        let cas = instance.keyvalue_cas().unwrap();
        let key = keys.key("k");
        let mut seen = Vec::new();
        for round in 0..3 {
            for write in 0..3 {
                kv.set(&key, format!("{round}/{write}").into_bytes()).await.unwrap();
                seen.push(cas.get_versioned(&key).await.unwrap().unwrap().version);
            }
            assert!(kv.delete(&key).await.unwrap());
        }
        assert!(seen.windows(2).all(|pair| pair[1] > pair[0]), "versions went back after a delete: {seen:?}");
        kv.set(&key, b"new".to_vec()).await.unwrap();
        for old in &seen {
            assert!(
                matches!(cas.compare_and_swap(&key, *old, b"stale".to_vec(), None).await.unwrap(), CasResult::Conflict { .. }),
                "version {old} from before the delete still matched"
            );
        }
    }

    async fn expected_version_zero_creates_only_if_absent(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        let CasResult::Swapped { version } =
            cas.compare_and_swap(&keys.key("k"), 0, b"first".to_vec(), None).await.unwrap()
        else {
            panic!("creating an absent key with expected version 0 must swap")
        };
        assert!(version >= 1);
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), 0, b"second".to_vec(), None).await.unwrap(),
            CasResult::Conflict { current_version: version }
        );
        assert_eq!(cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().value, b"first".to_vec());
    }

    async fn a_matching_version_swaps_and_a_stale_one_conflicts(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        let CasResult::Swapped { version: v1 } =
            cas.compare_and_swap(&keys.key("k"), 0, b"v1".to_vec(), None).await.unwrap()
        else {
            panic!("create must swap")
        };
        let CasResult::Swapped { version: v2 } =
            cas.compare_and_swap(&keys.key("k"), v1, b"v2".to_vec(), None).await.unwrap()
        else {
            panic!("the current version must swap")
        };
        assert!(v2 > v1);
        assert_eq!(
            cas.compare_and_swap(&keys.key("k"), v1, b"stale".to_vec(), None).await.unwrap(),
            CasResult::Conflict { current_version: v2 }
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
        let old = cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().version;
        kv.set(&keys.key("k"), b"b".to_vec()).await.unwrap();
        let current = cas.get_versioned(&keys.key("k")).await.unwrap().unwrap().version;
        assert_eq!(
            cas.delete_if_version(&keys.key("k"), old).await.unwrap(),
            CasResult::Conflict { current_version: current }
        );
        assert!(kv.exists(&keys.key("k")).await.unwrap());
        assert!(matches!(cas.delete_if_version(&keys.key("k"), current).await.unwrap(), CasResult::Swapped { .. }));
        assert!(!kv.exists(&keys.key("k")).await.unwrap());
    }

    async fn concurrent_increments_never_lose_an_update(instance, keys) {
        let cas = instance.keyvalue_cas().unwrap();
        let key = keys.key("counter");
        let CasResult::Swapped { version: start } = cas.compare_and_swap(&key, 0, b"0".to_vec(), None).await.unwrap()
        else {
            panic!("create must swap")
        };
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
        assert_eq!(String::from_utf8(last.value).unwrap(), "160", "no increment was lost");
        assert!(last.version >= start + 160, "each of the 160 swaps took a new version");
    }
}
