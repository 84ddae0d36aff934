//! object_store_basic: objects written and read in chunks; visible only once finished,
//! whole; replaced whole; deleted.

use plugin_abi::host::Instance;
use plugin_abi::{Feed, ObjectRead};

use super::cases;

/// Bytes that differ at every position of a long object, so a chunk out of order or
/// repeated cannot read back equal.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) as u8).wrapping_add(seed)).collect()
}

async fn read_all(mut chunks: Feed<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        bytes.extend(chunk.expect("a chunk"));
    }
    bytes
}

async fn get(instance: &Instance, key: &str) -> Option<Vec<u8>> {
    let store = instance.object_store_basic().unwrap();
    match store.get(key).await.unwrap() {
        Some(ObjectRead { info, chunks }) => {
            let bytes = read_all(chunks).await;
            assert_eq!(info.size, bytes.len() as u64, "the size in the info is the object's length");
            Some(bytes)
        }
        None => None,
    }
}

async fn put(instance: &Instance, key: &str, chunks: &[&[u8]]) -> u64 {
    let store = instance.object_store_basic().unwrap();
    let mut writer = store.put(key).await.unwrap();
    for chunk in chunks {
        writer.write(chunk.to_vec()).await.unwrap();
    }
    writer.finish().await.unwrap().size
}

cases! {
    async fn a_missing_object_is_none(instance, keys) {
        let store = instance.object_store_basic().expect("declared object_store_basic");
        assert!(store.get(&keys.key("absent")).await.unwrap().is_none());
        assert_eq!(store.head(&keys.key("absent")).await.unwrap(), None);
        assert!(!store.delete(&keys.key("absent")).await.unwrap());
    }

    async fn chunks_written_read_back_in_order(instance, keys) {
        let bytes = pattern(3 * 1024 * 1024 + 17, 1);
        let parts: Vec<&[u8]> = bytes.chunks(256 * 1024 + 3).collect();
        assert_eq!(put(instance, &keys.key("o"), &parts).await, bytes.len() as u64);
        assert_eq!(get(instance, &keys.key("o")).await, Some(bytes));
    }

    async fn an_object_larger_than_a_multipart_part_round_trips(instance, keys) {
        // S3-style stores cut uploads into parts of at least 5 MiB: 11 MiB crosses two
        // boundaries at that size (one at the s3 plugin's default of 8 MiB).
        let bytes = pattern(11 * 1024 * 1024 + 5, 2);
        let parts: Vec<&[u8]> = bytes.chunks(1024 * 1024).collect();
        put(instance, &keys.key("big"), &parts).await;
        let store = instance.object_store_basic().unwrap();
        assert_eq!(store.head(&keys.key("big")).await.unwrap().unwrap().size, bytes.len() as u64);
        assert_eq!(get(instance, &keys.key("big")).await, Some(bytes));
    }

    async fn an_empty_object_is_an_object(instance, keys) {
        assert_eq!(put(instance, &keys.key("empty"), &[]).await, 0);
        assert_eq!(get(instance, &keys.key("empty")).await, Some(Vec::new()));
    }

    async fn nothing_is_visible_before_finish(instance, keys) {
        let store = instance.object_store_basic().unwrap();
        let mut writer = store.put(&keys.key("pending")).await.unwrap();
        writer.write(pattern(1000, 3)).await.unwrap();
        assert_eq!(store.head(&keys.key("pending")).await.unwrap(), None);
        assert!(store.get(&keys.key("pending")).await.unwrap().is_none());
        writer.finish().await.unwrap();
        assert_eq!(store.head(&keys.key("pending")).await.unwrap().unwrap().size, 1000);
    }

    async fn an_abandoned_upload_leaves_nothing_and_keeps_the_old_object(instance, keys) {
        put(instance, &keys.key("kept"), &[b"old"]).await;
        let store = instance.object_store_basic().unwrap();
        let mut writer = store.put(&keys.key("kept")).await.unwrap();
        writer.write(pattern(6 * 1024 * 1024, 4)).await.unwrap();
        drop(writer);
        let mut abandoned = store.put(&keys.key("never")).await.unwrap();
        abandoned.write(b"partial".to_vec()).await.unwrap();
        drop(abandoned);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(get(instance, &keys.key("kept")).await, Some(b"old".to_vec()));
        assert_eq!(store.head(&keys.key("never")).await.unwrap(), None);
    }

    async fn put_replaces_the_whole_object(instance, keys) {
        put(instance, &keys.key("r"), &[&pattern(5000, 5)]).await;
        put(instance, &keys.key("r"), &[b"short"]).await;
        assert_eq!(get(instance, &keys.key("r")).await, Some(b"short".to_vec()));
    }

    async fn delete_removes_and_reports(instance, keys) {
        put(instance, &keys.key("d"), &[b"bytes"]).await;
        let store = instance.object_store_basic().unwrap();
        assert!(store.delete(&keys.key("d")).await.unwrap());
        assert!(store.get(&keys.key("d")).await.unwrap().is_none());
        assert!(!store.delete(&keys.key("d")).await.unwrap());
    }

    async fn keys_with_slashes_and_unicode_are_exact(instance, keys) {
        put(instance, &keys.key("a/b/c"), &[b"nested"]).await;
        put(instance, &keys.key("a/b"), &[b"parent"]).await;
        put(instance, &keys.key("Объект 🔑"), &[b"unicode"]).await;
        assert_eq!(get(instance, &keys.key("a/b/c")).await, Some(b"nested".to_vec()));
        assert_eq!(get(instance, &keys.key("a/b")).await, Some(b"parent".to_vec()));
        assert_eq!(get(instance, &keys.key("Объект 🔑")).await, Some(b"unicode".to_vec()));
    }

    async fn a_reader_that_stops_early_does_not_block_others(instance, keys) {
        let bytes = pattern(8 * 1024 * 1024, 6);
        let parts: Vec<&[u8]> = bytes.chunks(1024 * 1024).collect();
        put(instance, &keys.key("shared"), &parts).await;
        let store = instance.object_store_basic().unwrap();
        let ObjectRead { chunks: mut first, .. } = store.get(&keys.key("shared")).await.unwrap().unwrap();
        first.next().await.unwrap().unwrap();
        drop(first);
        assert_eq!(get(instance, &keys.key("shared")).await, Some(bytes));
    }

    async fn list_pages_through_the_objects_with_a_prefix_once_each(instance, keys) {
        let inside = ["a", "b/c", "Объект 🔑", "x.y", "~tilde%2F"];
        let mut expected = std::collections::BTreeMap::new();
        for (size, name) in inside.iter().enumerate() {
            let key = keys.key(&format!("p/{name}"));
            put(instance, &key, &[&pattern(size, 9)]).await;
            expected.insert(key, size as u64);
        }
        // Beside the prefix, not in it.
        put(instance, &keys.key("p"), &[b"not under p/"]).await;
        put(instance, &keys.key("q/a"), &[b"not under p/"]).await;
        let prefix = keys.key("p/");
        let pages = list_all(instance, &prefix, 2).await;
        let mut listed = std::collections::BTreeMap::new();
        for entry in pages.iter().flatten() {
            let again = listed.insert(entry.key.clone(), entry.info.size);
            assert!(again.is_none(), "list({prefix:?}) returned {:?} twice across pages {pages:?}", entry.key);
        }
        assert_eq!(listed, expected, "list({prefix:?}, limit 2) paged through: keys and sizes");
        assert!(pages.iter().all(|page| page.len() <= 2), "a page longer than its limit 2: {pages:?}");
    }

    async fn list_after_the_last_key_is_empty_and_a_prefix_with_nothing_lists_nothing(instance, keys) {
        let store = instance.object_store_basic().unwrap();
        let key = keys.key("only/one");
        put(instance, &key, &[b"x"]).await;
        let prefix = keys.key("only/");
        let after_last = store.list(&prefix, &key, 10).await.unwrap();
        assert!(after_last.is_empty(), "list({prefix:?}, after {key:?}) returned {after_last:?}, expected nothing");
        let none = keys.key("nothing/");
        let listed = store.list(&none, "", 10).await.unwrap();
        assert!(listed.is_empty(), "list({none:?}) returned {listed:?}, expected nothing");
    }

    async fn a_deleted_object_is_no_longer_listed(instance, keys) {
        let store = instance.object_store_basic().unwrap();
        put(instance, &keys.key("gone/a"), &[b"a"]).await;
        put(instance, &keys.key("gone/b"), &[b"b"]).await;
        assert!(store.delete(&keys.key("gone/a")).await.unwrap());
        let listed: Vec<String> = list_all(instance, &keys.key("gone/"), 10).await.concat().into_iter().map(|e| e.key).collect();
        assert_eq!(listed, vec![keys.key("gone/b")], "list after delete(gone/a)");
    }
}

/// Every page of `prefix`'s listing, each asked for after the last key of the one before.
async fn list_all(instance: &Instance, prefix: &str, limit: u32) -> Vec<Vec<plugin_abi::ObjectEntry>> {
    let store = instance.object_store_basic().unwrap();
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.list(prefix, &after, limit).await.unwrap_or_else(|error| {
            panic!("list({prefix:?}, after {after:?}, limit {limit}) failed: {error}")
        });
        let Some(last) = page.last() else { return pages };
        after = last.key.clone();
        assert!(pages.len() < 1000, "list({prefix:?}) never returned an empty page");
        pages.push(page);
    }
}
