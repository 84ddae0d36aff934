//! keyvalue_basic: set/get/delete/exists.

use super::cases;

cases! {
    async fn get_of_a_missing_key_is_not_found(instance, keys) {
        let kv = instance.keyvalue_basic().expect("declared keyvalue_basic");
        assert_eq!(kv.get(&keys.key("absent")).await.unwrap(), None);
    }

    async fn set_then_get_returns_the_same_bytes(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let value: Vec<u8> = (0..=255u8).collect();
        kv.set(&keys.key("binary"), value.clone()).await.unwrap();
        assert_eq!(kv.get(&keys.key("binary")).await.unwrap(), Some(value));
    }

    async fn an_empty_value_is_a_value(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        kv.set(&keys.key("empty"), Vec::new()).await.unwrap();
        assert_eq!(kv.get(&keys.key("empty")).await.unwrap(), Some(Vec::new()));
        assert!(kv.exists(&keys.key("empty")).await.unwrap());
    }

    async fn set_overwrites(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        kv.set(&keys.key("k"), b"one".to_vec()).await.unwrap();
        kv.set(&keys.key("k"), b"two".to_vec()).await.unwrap();
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), Some(b"two".to_vec()));
    }

    async fn delete_reports_whether_it_deleted(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        assert!(!kv.delete(&keys.key("never")).await.unwrap());
        kv.set(&keys.key("k"), b"v".to_vec()).await.unwrap();
        assert!(kv.delete(&keys.key("k")).await.unwrap());
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), None);
        assert!(!kv.delete(&keys.key("k")).await.unwrap());
    }

    async fn exists_follows_set_and_delete(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        assert!(!kv.exists(&keys.key("k")).await.unwrap());
        kv.set(&keys.key("k"), b"v".to_vec()).await.unwrap();
        assert!(kv.exists(&keys.key("k")).await.unwrap());
        kv.delete(&keys.key("k")).await.unwrap();
        assert!(!kv.exists(&keys.key("k")).await.unwrap());
    }

    async fn keys_are_exact_unicode_strings(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        kv.set(&keys.key("Ключ-🔑"), b"unicode".to_vec()).await.unwrap();
        kv.set(&keys.key("key"), b"lower".to_vec()).await.unwrap();
        kv.set(&keys.key("KEY"), b"upper".to_vec()).await.unwrap();
        assert_eq!(kv.get(&keys.key("Ключ-🔑")).await.unwrap(), Some(b"unicode".to_vec()));
        assert_eq!(kv.get(&keys.key("key")).await.unwrap(), Some(b"lower".to_vec()));
        assert_eq!(kv.get(&keys.key("KEY")).await.unwrap(), Some(b"upper".to_vec()));
    }

    async fn a_large_value_round_trips(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let value: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
        kv.set(&keys.key("large"), value.clone()).await.unwrap();
        assert_eq!(kv.get(&keys.key("large")).await.unwrap(), Some(value));
    }

    async fn concurrent_writers_all_land(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let writers = (0..16).map(|writer| {
            let kv = &kv;
            async move {
                for i in 0..25 {
                    kv.set(&keys.key(&format!("w{writer}-{i}")), format!("{writer}:{i}").into_bytes()).await.unwrap();
                }
            }
        });
        futures::future::join_all(writers).await;
        for writer in 0..16 {
            for i in 0..25 {
                let got = kv.get(&keys.key(&format!("w{writer}-{i}"))).await.unwrap();
                assert_eq!(got, Some(format!("{writer}:{i}").into_bytes()), "writer {writer} item {i}");
            }
        }
    }
}
