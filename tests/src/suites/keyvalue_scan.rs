//! keyvalue_scan: prefix scan with an opaque cursor (each key present for the whole
//! scan returned exactly once), streaming scan, and count.

use std::collections::BTreeSet;

use super::cases;

async fn fill(instance: &plugin_abi::host::Instance, keys: &super::Keys, count: usize) -> BTreeSet<String> {
    let kv = instance.keyvalue_basic().expect("keyvalue_scan needs keyvalue_basic");
    let mut written = BTreeSet::new();
    for i in 0..count {
        let key = keys.key(&format!("in/{i:04}"));
        kv.set(&key, format!("value-{i}").into_bytes()).await.unwrap();
        written.insert(key);
    }
    kv.set(&keys.key("out/other"), b"x".to_vec()).await.unwrap();
    written
}

cases! {
    async fn pages_return_every_key_exactly_once(instance, keys) {
        let written = fill(instance, keys, 203).await;
        let scan = instance.keyvalue_scan().expect("declared keyvalue_scan");
        let prefix = keys.key("in/");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = scan.scan(&prefix, cursor.as_deref(), 17).await.unwrap();
            assert!(page.entries.len() <= 17, "a page holds at most the limit");
            pages += 1;
            assert!(pages < 1000, "the scan never finished");
            for (key, value) in page.entries {
                let index: usize = key.rsplit('/').next().unwrap().parse().unwrap();
                assert_eq!(value, format!("value-{index}").into_bytes());
                seen.push(key);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a key was returned twice");
        assert_eq!(unique, written);
    }

    async fn a_prefix_with_no_keys_scans_empty(instance, keys) {
        fill(instance, keys, 3).await;
        let scan = instance.keyvalue_scan().unwrap();
        let page = scan.scan(&keys.key("nothing-here/"), None, 10).await.unwrap();
        assert!(page.entries.is_empty());
        assert_eq!(page.next_cursor, None);
        assert_eq!(scan.count(&keys.key("nothing-here/")).await.unwrap(), 0);
    }

    async fn count_counts_only_the_prefix(instance, keys) {
        fill(instance, keys, 42).await;
        let scan = instance.keyvalue_scan().unwrap();
        assert_eq!(scan.count(&keys.key("in/")).await.unwrap(), 42);
        assert_eq!(scan.count(&keys.key("out/")).await.unwrap(), 1);
        assert_eq!(scan.count(keys.prefix()).await.unwrap(), 43);
    }

    async fn keys_present_throughout_a_scan_survive_concurrent_writes(instance, keys) {
        let written = fill(instance, keys, 60).await;
        let kv = instance.keyvalue_basic().unwrap();
        let scan = instance.keyvalue_scan().unwrap();
        let prefix = keys.key("in/");
        let first = scan.scan(&prefix, None, 10).await.unwrap();
        // Mutate while the scan is under way: delete some keys, add others.
        let deleted: BTreeSet<String> = written.iter().skip(30).step_by(7).cloned().collect();
        for key in &deleted {
            kv.delete(key).await.unwrap();
        }
        for i in 0..10 {
            kv.set(&keys.key(&format!("in/new-{i}")), b"n".to_vec()).await.unwrap();
        }
        let mut seen: Vec<String> = first.entries.into_iter().map(|(key, _)| key).collect();
        let mut cursor = first.next_cursor;
        while let Some(next) = cursor {
            let page = scan.scan(&prefix, Some(&next), 10).await.unwrap();
            seen.extend(page.entries.into_iter().map(|(key, _)| key));
            cursor = page.next_cursor;
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a key was returned twice");
        for key in written.difference(&deleted) {
            assert!(unique.contains(key), "{key} was present for the whole scan but not returned");
        }
    }

    async fn scan_stream_returns_every_key(instance, keys) {
        let written = fill(instance, keys, 150).await;
        let scan = instance.keyvalue_scan().unwrap();
        let mut stream = scan.scan_stream(&keys.key("in/"));
        let mut seen = BTreeSet::new();
        while let Some(item) = stream.next().await {
            let (key, _) = item.unwrap();
            assert!(seen.insert(key.clone()), "{key} streamed twice");
        }
        assert_eq!(seen, written);
    }

    async fn dropping_a_scan_stream_early_leaves_the_instance_working(instance, keys) {
        fill(instance, keys, 300).await;
        let scan = instance.keyvalue_scan().unwrap();
        let mut stream = scan.scan_stream(&keys.key("in/"));
        for _ in 0..3 {
            stream.next().await.expect("an entry").unwrap();
        }
        drop(stream);
        assert_eq!(scan.count(&keys.key("in/")).await.unwrap(), 300);
        let mut again = scan.scan_stream(&keys.key("in/"));
        assert!(again.next().await.is_some());
    }
}
