//! keyvalue_batch: per-item results in request order; not atomic.

use super::cases;

cases! {
    async fn batch_get_answers_in_request_order_with_missing_keys(instance, keys) {
        let kv = instance.keyvalue_basic().expect("keyvalue_batch needs keyvalue_basic");
        let batch = instance.keyvalue_batch().expect("declared keyvalue_batch");
        kv.set(&keys.key("a"), b"A".to_vec()).await.unwrap();
        kv.set(&keys.key("c"), b"C".to_vec()).await.unwrap();
        let asked = vec![keys.key("c"), keys.key("b"), keys.key("a"), keys.key("c")];
        let got = batch.batch_get(asked.clone()).await.unwrap();
        assert_eq!(got, vec![Some(b"C".to_vec()), None, Some(b"A".to_vec()), Some(b"C".to_vec())]);
    }

    async fn batch_set_writes_every_item_and_reports_each(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let batch = instance.keyvalue_batch().unwrap();
        let entries: Vec<(String, Vec<u8>)> =
            (0..50).map(|i| (keys.key(&format!("k{i}")), format!("v{i}").into_bytes())).collect();
        let results = batch.batch_set(entries.clone()).await.unwrap();
        assert_eq!(results.len(), 50);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for (key, value) in entries {
            assert_eq!(kv.get(&key).await.unwrap(), Some(value));
        }
    }

    async fn batch_delete_reports_what_it_deleted(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let batch = instance.keyvalue_batch().unwrap();
        kv.set(&keys.key("a"), b"A".to_vec()).await.unwrap();
        kv.set(&keys.key("b"), b"B".to_vec()).await.unwrap();
        let deleted = batch.batch_delete(vec![keys.key("a"), keys.key("missing"), keys.key("b")]).await.unwrap();
        assert_eq!(deleted, vec![true, false, true]);
        assert_eq!(kv.get(&keys.key("a")).await.unwrap(), None);
        assert_eq!(kv.get(&keys.key("b")).await.unwrap(), None);
    }

    async fn an_empty_batch_is_fine(instance, keys) {
        let _ = keys;
        let batch = instance.keyvalue_batch().unwrap();
        assert!(batch.batch_get(vec![]).await.unwrap().is_empty());
        assert!(batch.batch_set(Vec::new()).await.unwrap().is_empty());
        assert!(batch.batch_delete(vec![]).await.unwrap().is_empty());
    }
}
