//! Hostile clients cannot exhaust the gateway: the attacks measured from outside, each
//! with a bound on the server's resident memory.


use prism_acceptance::harness::Server;
use prism_api::*;

const MIB: u64 = 1024 * 1024;

fn memstore(server_settings: &str) -> String {
    format!(
        r#"
[server]
{server_settings}

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "memstore", config = {{ max_bytes = 1073741824 }} }}
"#
    )
}

#[tokio::test]
async fn a_batch_naming_one_large_value_a_thousand_times_is_refused_without_buffering_it() {
    let server = Server::start(&memstore(""));
    let mut kv = server.keyvalue().await.max_decoding_message_size(usize::MAX);
    kv.set(SetRequest { key: "big".into(), value: vec![7u8; 1024 * 1024 - 16].into(), ..Default::default() })
        .await
        .unwrap();
    let before = server.rss_bytes();
    // Three at once, as the measured attack did.
    let calls =
        (0..3).map(|_| {
            let mut kv = kv.clone();
            async move {
                kv.batch_get(BatchGetRequest { keys: vec!["big".into(); 1000], ..Default::default() }).await
            }
        });
    for result in futures::future::join_all(calls).await {
        let status = result.expect_err("a 1 GiB response");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("server.max_response_bytes"), "{status:?}");
    }
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(grown < 256 * MIB, "the server grew by {} MiB", grown / MIB);
    // A batch within the budget is served whole.
    let reply =
        kv.batch_get(BatchGetRequest { keys: vec!["big".into(); 10], ..Default::default() }).await.unwrap();
    assert_eq!(reply.into_inner().results.len(), 10);
}

#[tokio::test]
async fn a_scan_page_stops_at_the_response_budget_and_the_cursor_resumes_it() {
    let server = Server::start(&memstore("max_response_bytes = 4194304"));
    let mut kv = server.keyvalue().await;
    for n in 0..10 {
        let value = vec![n as u8; 1024 * 1024 - 64];
        kv.set(SetRequest { key: format!("page/{n:02}"), value: value.into(), ..Default::default() })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = kv
            .scan(ScanRequest {
                prefix: "page/".into(),
                limit: 10,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let bytes: usize = page.entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        assert!(bytes <= 4 * 1024 * 1024, "a page of {bytes} bytes");
        assert!(!page.entries.is_empty(), "every page makes progress");
        seen.extend(page.entries.into_iter().map(|e| e.key));
        pages += 1;
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let expected: Vec<String> = (0..10).map(|n| format!("page/{n:02}")).collect();
    assert_eq!(seen, expected, "every key once, in order");
    assert!(pages >= 4, "10 MiB in pages of at most 4 MiB: {pages} pages");
}
