//! Byte-bounded pages: Scan and Enumerate with `max_page_bytes` end a page before the
//! entry that would pass the bound, with a cursor that resumes right after the last
//! entry returned, on plugins whose cursors are keys and on those whose are not.

use std::collections::BTreeSet;

use prism_acceptance::harness::{backends_available, plugin_library, Backend, Server};
use prism_api::multicast_registry_service_client::MulticastRegistryServiceClient;
use prism_api::*;

const VALUE: usize = 100;
const KEYS: usize = 20;
/// Three entries (a 6-byte key and a 100-byte value each) fit; a fourth does not.
const MAX_PAGE_BYTES: u64 = 350;

async fn scan_in_bounded_pages(server: &Server, namespace: &str, prefix: &str) {
    let mut kv = server.keyvalue().await;
    for n in 0..KEYS {
        let request = SetRequest {
            namespace: namespace.into(),
            key: format!("{prefix}{n:02}"),
            value: vec![b'v'; VALUE].into(),
            ..Default::default()
        };
        kv.set(request).await.unwrap();
    }
    let (mut seen, mut pages, mut cursor) = (BTreeSet::new(), 0, String::new());
    loop {
        let request = ScanRequest {
            namespace: namespace.into(),
            prefix: prefix.into(),
            cursor: cursor.clone(),
            limit: 100,
            max_page_bytes: MAX_PAGE_BYTES,
        };
        let page = kv.scan(request).await.unwrap().into_inner();
        pages += 1;
        let bytes: usize = page.entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        assert!(bytes as u64 <= MAX_PAGE_BYTES, "{namespace}: page {pages} holds {bytes} bytes");
        assert_eq!(
            page.entries.len(),
            3.min(KEYS - seen.len()),
            "{namespace}: page {pages} ended early or late"
        );
        for entry in page.entries {
            assert!(seen.insert(entry.key.clone()), "{namespace}: {} came twice", entry.key);
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen.len(), KEYS, "{namespace}: every key exactly once");
    assert_eq!(pages, KEYS.div_ceil(3));

    // One entry larger than the bound still comes, alone.
    let request = ScanRequest {
        namespace: namespace.into(),
        prefix: prefix.into(),
        limit: 100,
        max_page_bytes: 10,
        ..Default::default()
    };
    let page = kv.scan(request).await.unwrap().into_inner();
    assert_eq!(page.entries.len(), 1);
    assert!(!page.next_cursor.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pages_end_before_the_byte_bound_on_every_kind_of_cursor() {
    let data = tempfile::tempdir().unwrap();
    let redis = backends_available(&[Backend::Redis]);
    let mut config = format!(
        r#"
[plugins.memstore]
path = "{{memstore}}"
[plugins.sqlite]
path = "{sqlite}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "memstore" }}

[[namespaces]]
name = "files"
pattern = "keyvalue"
slots.store = {{ plugin = "sqlite", config = {{ path = "{db}" }} }}

[[namespaces]]
name = "devices"
pattern = "multicast-registry"
slots.registry = {{ plugin = "memstore" }}
slots.messaging = {{ plugin = "memstore" }}
"#,
        sqlite = plugin_library("prism_sqlite").display(),
        db = data.path().join("kv.db").display(),
    );
    if redis {
        config.push_str(
            "\n[plugins.redis]\npath = \"{redis}\"\n\n[[namespaces]]\nname = \"cache\"\npattern = \"keyvalue\"\n\
             slots.store = { plugin = \"redis\", config = { url = \"redis://127.0.0.1:6379\", key_prefix = \"prism-pages:\" } }\n",
        );
    }
    let server = Server::start(&config);
    let run = format!("p{}-", std::process::id());
    scan_in_bounded_pages(&server, "default", &run).await;
    scan_in_bounded_pages(&server, "files", &run).await;
    if redis {
        scan_in_bounded_pages(&server, "cache", &run).await;
    }

    let mut registry = MulticastRegistryServiceClient::new(server.channel().await);
    for n in 0..KEYS {
        let request = RegisterRequest {
            namespace: "devices".into(),
            identity: format!("d{n:02}"),
            metadata: [("blob".to_owned(), "m".repeat(VALUE))].into_iter().collect(),
            ..Default::default()
        };
        registry.register(request).await.unwrap();
    }
    let (mut seen, mut cursor, mut pages) = (BTreeSet::new(), String::new(), 0);
    loop {
        let request = EnumerateRequest {
            namespace: "devices".into(),
            cursor: cursor.clone(),
            page_size: 100,
            max_page_bytes: 600,
            ..Default::default()
        };
        let page = registry.enumerate(request).await.unwrap().into_inner();
        pages += 1;
        assert!(
            !page.identities.is_empty() && page.identities.len() < KEYS,
            "page {pages}: {}",
            page.identities.len()
        );
        for identity in page.identities {
            assert!(seen.insert(identity.identity.clone()), "{} came twice", identity.identity);
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen.len(), KEYS);
    assert!(pages > 2, "600-byte pages of ~150-byte records must split 20 identities: {pages} pages");
}
