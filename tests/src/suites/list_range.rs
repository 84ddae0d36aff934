//! list_range: inclusive ranges with negative indexes from the end, and trim.

use plugin_abi::ListEnd::Right;

use super::cases;

fn items(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

async fn abcde(instance: &plugin_abi::host::Instance, key: &str) {
    let list = instance.list_basic().expect("list_range needs list_basic");
    list.push(key, Right, items(&["a", "b", "c", "d", "e"])).await.unwrap();
}

cases! {
    async fn range_uses_inclusive_and_negative_indexes(instance, keys) {
        let key = keys.key("l");
        abcde(instance, &key).await;
        let range = instance.list_range().expect("declared list_range");
        assert_eq!(range.range(&key, 0, -1).await.unwrap(), items(&["a", "b", "c", "d", "e"]));
        assert_eq!(range.range(&key, 1, 2).await.unwrap(), items(&["b", "c"]));
        assert_eq!(range.range(&key, -2, -1).await.unwrap(), items(&["d", "e"]));
        assert_eq!(range.range(&key, 3, 100).await.unwrap(), items(&["d", "e"]));
        assert!(range.range(&key, 3, 1).await.unwrap().is_empty());
        assert!(range.range(&key, 7, 9).await.unwrap().is_empty());
        assert!(range.range(&keys.key("absent"), 0, -1).await.unwrap().is_empty());
    }

    async fn trim_keeps_only_the_range(instance, keys) {
        let key = keys.key("l");
        abcde(instance, &key).await;
        let range = instance.list_range().unwrap();
        range.trim(&key, 1, -2).await.unwrap();
        assert_eq!(range.range(&key, 0, -1).await.unwrap(), items(&["b", "c", "d"]));
        assert_eq!(instance.list_basic().unwrap().length(&key).await.unwrap(), 3);
    }

    async fn trimming_to_nothing_removes_the_list(instance, keys) {
        let key = keys.key("l");
        abcde(instance, &key).await;
        let range = instance.list_range().unwrap();
        range.trim(&key, 5, 10).await.unwrap();
        assert_eq!(instance.list_basic().unwrap().length(&key).await.unwrap(), 0);
        range.trim(&keys.key("absent"), 0, 1).await.unwrap();
    }
}
