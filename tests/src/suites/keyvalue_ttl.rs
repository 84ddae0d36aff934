//! keyvalue_ttl: expiry on set, expire, get_ttl, persist. Expired keys are never
//! returned, counted or scanned.

use std::time::Duration;

use plugin_abi::KeyTtl;

use super::cases;

const SHORT: Duration = Duration::from_millis(300);
/// Long enough after SHORT for any backend's expiry to have happened.
const AFTER_SHORT: Duration = Duration::from_millis(900);

cases! {
    async fn a_key_set_with_a_ttl_expires(instance, keys) {
        let kv = instance.keyvalue_basic().expect("keyvalue_ttl needs keyvalue_basic");
        let ttl = instance.keyvalue_ttl().expect("declared keyvalue_ttl");
        ttl.set_with_ttl(&keys.key("k"), b"v".to_vec(), SHORT).await.unwrap();
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), Some(b"v".to_vec()));
        tokio::time::sleep(AFTER_SHORT).await;
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), None);
        assert!(!kv.exists(&keys.key("k")).await.unwrap());
    }

    async fn get_ttl_reports_missing_none_and_remaining(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let ttl = instance.keyvalue_ttl().unwrap();
        assert_eq!(ttl.get_ttl(&keys.key("absent")).await.unwrap(), KeyTtl::Missing);
        kv.set(&keys.key("forever"), b"v".to_vec()).await.unwrap();
        assert_eq!(ttl.get_ttl(&keys.key("forever")).await.unwrap(), KeyTtl::NoExpiry);
        ttl.set_with_ttl(&keys.key("ten"), b"v".to_vec(), Duration::from_secs(10)).await.unwrap();
        match ttl.get_ttl(&keys.key("ten")).await.unwrap() {
            KeyTtl::ExpiresIn(left) => {
                assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(8), "left: {left:?}")
            }
            other => panic!("expected ExpiresIn, got {other:?}"),
        }
    }

    async fn expire_sets_a_ttl_on_an_existing_key_only(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let ttl = instance.keyvalue_ttl().unwrap();
        assert!(!ttl.expire(&keys.key("absent"), SHORT).await.unwrap());
        kv.set(&keys.key("k"), b"v".to_vec()).await.unwrap();
        assert!(ttl.expire(&keys.key("k"), SHORT).await.unwrap());
        tokio::time::sleep(AFTER_SHORT).await;
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), None);
    }

    async fn persist_removes_a_ttl(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let ttl = instance.keyvalue_ttl().unwrap();
        ttl.set_with_ttl(&keys.key("k"), b"v".to_vec(), SHORT).await.unwrap();
        assert!(ttl.persist(&keys.key("k")).await.unwrap());
        assert!(!ttl.persist(&keys.key("k")).await.unwrap(), "a second persist has nothing to remove");
        tokio::time::sleep(AFTER_SHORT).await;
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(ttl.get_ttl(&keys.key("k")).await.unwrap(), KeyTtl::NoExpiry);
        assert!(!ttl.persist(&keys.key("absent")).await.unwrap());
    }

    async fn a_plain_set_replaces_the_ttl(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let ttl = instance.keyvalue_ttl().unwrap();
        ttl.set_with_ttl(&keys.key("k"), b"old".to_vec(), SHORT).await.unwrap();
        kv.set(&keys.key("k"), b"new".to_vec()).await.unwrap();
        assert_eq!(ttl.get_ttl(&keys.key("k")).await.unwrap(), KeyTtl::NoExpiry);
        tokio::time::sleep(AFTER_SHORT).await;
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), Some(b"new".to_vec()));
    }

    async fn set_with_ttl_replaces_an_earlier_ttl(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let ttl = instance.keyvalue_ttl().unwrap();
        ttl.set_with_ttl(&keys.key("k"), b"v1".to_vec(), SHORT).await.unwrap();
        ttl.set_with_ttl(&keys.key("k"), b"v2".to_vec(), Duration::from_secs(30)).await.unwrap();
        tokio::time::sleep(AFTER_SHORT).await;
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), Some(b"v2".to_vec()));
    }

    async fn expired_keys_are_not_counted_or_scanned(instance, keys) {
        let ttl = instance.keyvalue_ttl().unwrap();
        let kv = instance.keyvalue_basic().unwrap();
        for i in 0..5 {
            ttl.set_with_ttl(&keys.key(&format!("gone-{i}")), b"v".to_vec(), SHORT).await.unwrap();
        }
        kv.set(&keys.key("stays"), b"v".to_vec()).await.unwrap();
        tokio::time::sleep(AFTER_SHORT).await;
        if let Some(scan) = instance.keyvalue_scan() {
            assert_eq!(scan.count(keys.prefix()).await.unwrap(), 1);
            let page = scan.scan(keys.prefix(), None, 100).await.unwrap();
            let found: Vec<_> = page.entries.into_iter().map(|(key, _)| key).collect();
            assert_eq!(found, vec![keys.key("stays")]);
        }
        if let Some(batch) = instance.keyvalue_batch() {
            let got = batch.batch_get(vec![keys.key("gone-0"), keys.key("stays")]).await.unwrap();
            assert_eq!(got, vec![None, Some(b"v".to_vec())]);
        }
    }
}
