//! state_transfer: a snapshot brings back exactly what was exported (values, versions,
//! TTLs, lists), replacing what came after; a damaged snapshot is refused and changes nothing.

use std::time::Duration;

use plugin_abi::{ErrorCode, KeyTtl, ListEnd};

use super::cases;

cases! {
    async fn a_snapshot_brings_back_exactly_what_was_exported(instance, keys) {
        let transfer = instance.state_transfer().expect("declared state_transfer");
        let (a, b, c, list) = (keys.key("a"), keys.key("b"), keys.key("c"), keys.key("list"));
        let kv = instance.keyvalue_basic();
        if let Some(kv) = &kv {
            kv.set(&a, b"one".to_vec()).await.unwrap();
            kv.set(&a, b"two".to_vec()).await.unwrap();
            match instance.keyvalue_ttl() {
                Some(ttl) => ttl.set_with_ttl(&b, b"b".to_vec(), Duration::from_secs(60)).await.unwrap(),
                None => kv.set(&b, b"b".to_vec()).await.unwrap(),
            }
        }
        if let Some(lists) = instance.list_basic() {
            lists.push(&list, ListEnd::Right, vec![b"x".to_vec(), b"y".to_vec()]).await.unwrap();
        }
        let snapshot = transfer.export_state().await.unwrap();

        if let Some(kv) = &kv {
            kv.set(&a, b"changed".to_vec()).await.unwrap();
            kv.delete(&b).await.unwrap();
            kv.set(&c, b"later".to_vec()).await.unwrap();
        }
        if let Some(lists) = instance.list_basic() {
            lists.push(&list, ListEnd::Right, vec![b"z".to_vec()]).await.unwrap();
        }
        transfer.import_state(snapshot).await.unwrap();

        if let Some(kv) = &kv {
            assert_eq!(kv.get(&a).await.unwrap(), Some(b"two".to_vec()));
            assert_eq!(kv.get(&b).await.unwrap(), Some(b"b".to_vec()));
            assert_eq!(kv.get(&c).await.unwrap(), None, "what came after the snapshot is gone");
            if let Some(cas) = instance.keyvalue_cas() {
                assert_eq!(cas.get_versioned(&a).await.unwrap().unwrap().version, 2, "versions carry over");
            }
            if let Some(ttl) = instance.keyvalue_ttl() {
                match ttl.get_ttl(&b).await.unwrap() {
                    KeyTtl::ExpiresIn(left) => assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50)),
                    other => panic!("the TTL did not carry over: {other:?}"),
                }
            }
        }
        if let Some(ranges) = instance.list_range() {
            assert_eq!(ranges.range(&list, 0, -1).await.unwrap(), vec![b"x".to_vec(), b"y".to_vec()]);
        }
    }

    async fn a_damaged_snapshot_is_refused_and_changes_nothing(instance, keys) {
        let transfer = instance.state_transfer().unwrap();
        let key = keys.key("kept");
        if let Some(kv) = instance.keyvalue_basic() {
            kv.set(&key, b"v".to_vec()).await.unwrap();
        }
        let mut snapshot = transfer.export_state().await.unwrap();
        snapshot.truncate(snapshot.len().saturating_sub(3).max(1));
        for bad in [b"not a snapshot".to_vec(), snapshot] {
            let error = transfer.import_state(bad).await.expect_err("a damaged snapshot");
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
        }
        if let Some(kv) = instance.keyvalue_basic() {
            assert_eq!(kv.get(&key).await.unwrap(), Some(b"v".to_vec()));
        }
    }
}
