//! Hostile clients cannot exhaust the gateway: the attacks measured from outside, each
//! with a bound on the server's resident memory.

use std::time::Duration;

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

/// HPACK for one header as a literal without indexing, with a literal name.
fn literal_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for text in [name, value] {
        assert!(text.len() < 127);
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The measured attack, by a client that ignores the server's SETTINGS: 10 connections
/// each sending 10 000 HEADERS frames (a gRPC call's headers, never a body).
#[tokio::test]
async fn a_hundred_thousand_headers_only_streams_leave_memory_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&memstore(""));
    let before = server.rss_bytes();
    let mut headers = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    literal_header(&mut headers, ":path", "/prism.v1.KeyValueService/Get");
    literal_header(&mut headers, ":authority", "localhost");
    literal_header(&mut headers, "content-type", "application/grpc");
    literal_header(&mut headers, "te", "trailers");
    let mut connections = Vec::new();
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(&server.address).await.unwrap();
        let (mut reader, mut writer) = tcp.into_split();
        // Read and drop whatever the server says (refusals, settings), as a client must
        // to keep the connection moving.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        writer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        writer.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // empty SETTINGS
        writer.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(); // SETTINGS ack
        let mut burst = Vec::new();
        for n in 0..10_000u32 {
            burst.extend(frame(0x1, 0x4, 2 * n + 1, &headers)); // HEADERS, END_HEADERS
        }
        // A server that gives up on the connection may close it mid-burst: also fine.
        let _ = writer.write_all(&burst).await;
        connections.push((writer, drain));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(grown < 64 * MIB, "100 000 headers-only streams grew the server by {} MiB", grown / MIB);
    drop(connections);
    // And it still serves everyone else.
    let mut kv = server.keyvalue().await;
    kv.set(SetRequest { key: "after".into(), value: b"v".to_vec().into(), ..Default::default() })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_namespace_over_its_rate_quota_is_told_when_to_retry_and_others_are_not_held_up() {
    let config = r#"
[[quotas]]
namespaces = ["slow-*"]
requests_per_second = 5

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "slow-lane"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;
    let server = Server::start(config);
    let mut kv = server.keyvalue().await;
    let get =
        |namespace: &str| GetRequest { namespace: namespace.into(), key: "k".into(), ..Default::default() };
    for _ in 0..5 {
        kv.get(get("slow-lane")).await.expect("within the burst");
    }
    let status = kv.get(get("slow-lane")).await.expect_err("the sixth call within a second");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("over quotas[0]: at most 5 calls per second for namespace 'slow-lane'"),
        "{status:?}"
    );
    let retry_ms: u64 = status.metadata().get("retry-after-ms").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=1000).contains(&retry_ms), "{retry_ms}");
    for _ in 0..50 {
        kv.get(get("default")).await.expect("a namespace the quota does not cover");
    }
    tokio::time::sleep(Duration::from_millis(retry_ms + 10)).await;
    kv.get(get("slow-lane")).await.expect("after the hinted wait");
}

/// What the server first sends on a new connection: its SETTINGS (Some(bytes)), or
/// nothing before closing it (None).
async fn first_bytes(address: &str) -> (tokio::net::TcpStream, Option<usize>) {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buffer)).await.expect("an answer");
    let bytes = match read {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    };
    (tcp, bytes)
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_until_one_ends() {
    let server = Server::start(&memstore("max_connections = 3"));
    let mut open = Vec::new();
    for n in 0..3 {
        let (tcp, bytes) = first_bytes(&server.address).await;
        assert!(bytes.is_some(), "connection {n} is served");
        open.push(tcp);
    }
    let (_, bytes) = first_bytes(&server.address).await;
    assert_eq!(bytes, None, "a fourth connection is closed at once");
    assert!(server.stderr().contains("server.max_connections"), "{}", server.stderr());
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, bytes) = first_bytes(&server.address).await;
    assert!(bytes.is_some(), "a place freed by a closed connection is taken again");
}

#[tokio::test]
async fn a_dequeue_returns_no_more_messages_than_fit_the_response_budget() {
    use prism_acceptance::harness::{backends_available, Backend};
    if !backends_available(&[Backend::Postgres]) {
        return;
    }
    // 1 MiB values and a 3 MiB budget: two largest-possible messages fit in a response.
    let run = format!("budget{}", plugin_abi::unix_millis());
    let config = format!(
        r#"
[server]
max_value_bytes = 1048576
max_response_bytes = 3145728

[plugins.postgres]
path = "{{postgres}}"

[[namespaces]]
name = "jobs"
pattern = "queue"
slots.queue = {{ plugin = "postgres", config = {{ url = "postgres://postgres@127.0.0.1:5432/test", table = "{run}_kv", queue_table = "{run}_q" }} }}
"#
    );
    let server = Server::start(&config);
    let mut queue = server.queue().await;
    for n in 0..5u8 {
        let request = EnqueueRequest {
            namespace: "jobs".into(),
            queue: "q".into(),
            payload: vec![n].into(),
            ..Default::default()
        };
        queue.enqueue(request).await.unwrap();
    }
    let dequeue = DequeueRequest {
        namespace: "jobs".into(),
        queue: "q".into(),
        max_messages: 10,
        ..Default::default()
    };
    let got = queue.dequeue(dequeue).await.unwrap().into_inner().messages;
    assert_eq!(got.len(), 2, "max_messages 10, but only two 1 MiB messages fit in 3 MiB");
}

#[tokio::test]
async fn an_enumerate_page_stops_at_the_response_budget_and_the_cursor_resumes_it() {
    let server = Server::start(
        r#"
[server]
max_response_bytes = 4194304

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "devices"
pattern = "multicast-registry"
slots.registry = { plugin = "memstore", config = { max_bytes = 1073741824 } }
slots.messaging = { plugin = "memstore" }
"#,
    );
    let mut registry = prism_api::multicast_registry_service_client::MulticastRegistryServiceClient::new(
        server.channel().await,
    )
    .max_decoding_message_size(usize::MAX);
    for n in 0..10 {
        let metadata = [("blob".to_owned(), "x".repeat(900 * 1024))].into();
        let register = RegisterRequest {
            namespace: "devices".into(),
            identity: format!("device-{n:02}"),
            metadata,
            ..Default::default()
        };
        registry.register(register).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = registry
            .enumerate(EnumerateRequest {
                namespace: "devices".into(),
                page_size: 100,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let bytes: usize =
            page.identities.iter().map(|i| i.metadata.values().map(String::len).sum::<usize>()).sum();
        assert!(bytes <= 4 * 1024 * 1024, "a page of {bytes} bytes");
        assert!(!page.identities.is_empty(), "every page makes progress");
        seen.extend(page.identities.into_iter().map(|i| i.identity));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    seen.sort();
    let expected: Vec<String> = (0..10).map(|n| format!("device-{n:02}")).collect();
    assert_eq!(seen, expected, "every identity once");
}

#[tokio::test]
async fn a_reload_does_not_refill_a_spent_rate_budget() {
    let config = r#"
[[quotas]]
namespaces = ["default"]
requests_per_second = 1

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;
    let server = Server::start_with(config, &["--no-watch"]);
    let mut kv = server.keyvalue().await;
    let get = || GetRequest { key: "k".into(), ..Default::default() };
    kv.get(get()).await.expect("the one call a second");
    // An unchanged config reloads in milliseconds, well inside the second.
    let outcome = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner().outcome.unwrap();
    assert!(outcome.ok, "{outcome:?}");
    let status = kv.get(get()).await.expect_err("the budget spent before the reload");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}
