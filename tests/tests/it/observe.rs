//! What an operator watches, end to end: `/metrics` counts and times calls by namespace,
//! method and status; `/healthz` and `/readyz` answer probes (readiness follows a
//! backend outage); with `[auth]`, the metrics need `admin`; every call gets a request id.

use std::time::{Duration, Instant};

use prism_acceptance::harness::{backends_available, Backend, PrivateRedis, Server};
use prism_api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};

/// One HTTP/1.1 GET: the status code and the body.
pub async fn http_get(address: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of the sample line that starts with `series` (name and labels exactly).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

const KV_CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore", config = { max_keys = 3 } }
"#;

#[tokio::test]
async fn metrics_count_and_time_calls_by_namespace_method_and_status() {
    let server = Server::start(KV_CONFIG);
    let admin = server.admin_address.clone().expect("the admin listener's address");
    let mut kv = server.keyvalue().await;
    for i in 0..3 {
        let set = SetRequest { key: format!("k{i}"), value: b"v".to_vec().into(), ..Default::default() };
        kv.set(set).await.unwrap();
    }
    for _ in 0..2 {
        kv.get(GetRequest { key: "k0".into(), ..Default::default() }).await.unwrap();
    }
    let unknown = GetRequest { namespace: "nowhere".into(), key: "k".into(), ..Default::default() };
    assert_eq!(kv.get(unknown).await.unwrap_err().code(), Code::NotFound);
    let empty_key = GetRequest { key: String::new(), ..Default::default() };
    assert_eq!(kv.get(empty_key).await.unwrap_err().code(), Code::InvalidArgument);
    // A fourth key is over memstore's max_keys: the plugin answers with an error.
    let fourth = SetRequest { key: "k3".into(), value: b"v".to_vec().into(), ..Default::default() };
    assert_eq!(kv.set(fourth).await.unwrap_err().code(), Code::ResourceExhausted);

    let (status, metrics) = http_get(&admin, "/metrics", &[]).await;
    assert_eq!(status, 200, "{metrics}");
    let requests = |namespace: &str, method: &str, code: &str| {
        sample(
            &metrics,
            &format!("prism_requests_total{{code=\"{code}\",method=\"{method}\",namespace=\"{namespace}\",service=\"KeyValueService\"}}"),
        )
    };
    assert_eq!(requests("default", "Set", "OK"), Some(3.0), "{metrics}");
    assert_eq!(requests("default", "Set", "RESOURCE_EXHAUSTED"), Some(1.0), "{metrics}");
    assert_eq!(requests("default", "Get", "OK"), Some(2.0), "{metrics}");
    assert_eq!(requests("default", "Get", "INVALID_ARGUMENT"), Some(1.0), "{metrics}");
    // A namespace that is not configured is never a label value.
    assert_eq!(requests("", "Get", "NOT_FOUND"), Some(1.0), "{metrics}");
    assert!(!metrics.contains("nowhere"), "{metrics}");
    let latency = |le: &str| {
        sample(
            &metrics,
            &format!("prism_request_duration_seconds_bucket{{method=\"Set\",namespace=\"default\",service=\"KeyValueService\",le=\"{le}\"}}"),
        )
    };
    assert_eq!(latency("+Inf"), Some(4.0), "every Set is timed, the refused one too: {metrics}");
    assert!(latency("0.0001").is_some() && latency("10").is_some(), "buckets from 100 µs to 10 s: {metrics}");
    assert_eq!(sample(&metrics, "prism_namespace_healthy{namespace=\"default\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "prism_requests_in_flight{namespace=\"default\"}"), Some(0.0));
    assert_eq!(
        sample(&metrics, "prism_library_loads_total{plugin=\"memstore\",result=\"loaded\"}"),
        Some(1.0)
    );
    // Plugin calls: 4 Sets and 2 Gets reached memstore (the refused Gets never did).
    let plugin_calls: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("prism_plugin_call_duration_seconds_count{")
                && line.contains("plugin=\"memstore\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(plugin_calls, 6.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "prism_backend_errors_total{code=\"RESOURCE_EXHAUSTED\",plugin=\"memstore\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 1e6), "{metrics}");
    assert!(sample(&metrics, "process_open_fds").is_some_and(|fds| fds > 3.0), "{metrics}");

    // A reload is counted by its result.
    let mut admin_api = server.admin().await;
    admin_api.reload(ReloadRequest {}).await.unwrap();
    let (_, metrics) = http_get(&admin, "/metrics", &[]).await;
    assert_eq!(sample(&metrics, "prism_reloads_total{result=\"applied\"}"), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn every_call_carries_a_request_id_the_client_sent_or_a_new_one() {
    let server = Server::start(KV_CONFIG);
    let mut kv = server.keyvalue().await;
    let mut request = Request::new(GetRequest { key: "k".into(), ..Default::default() });
    request.metadata_mut().insert("x-request-id", "order-4711-retry-2".parse().unwrap());
    let response = kv.get(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "order-4711-retry-2");

    let response = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap();
    let generated = response.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");
    let again = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap();
    assert_ne!(again.metadata().get("x-request-id").unwrap(), generated.as_str(), "a new id per call");

    // An error carries it too, in the status' metadata.
    let mut request = Request::new(GetRequest { key: String::new(), ..Default::default() });
    request.metadata_mut().insert("x-request-id", "bad-key-call".parse().unwrap());
    let status = kv.get(request).await.unwrap_err();
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "bad-key-call");
    // And in its details: a google.rpc.Status holding a google.rpc.RequestInfo.
    let details = String::from_utf8_lossy(status.details());
    assert!(details.contains("type.googleapis.com/google.rpc.RequestInfo"), "{details:?}");
    assert!(details.contains("bad-key-call"), "{details:?}");
}

#[tokio::test]
async fn readyz_follows_a_backend_outage_and_healthz_stays_up() {
    // The private server needs redis-server, which comes with the shared one.
    if !backends_available(&[Backend::Redis]) {
        return;
    }
    let mut redis = PrivateRedis::start();
    let server = Server::start(&format!(
        r#"
[server]
health_interval_ms = 200

[admin]
listen = "127.0.0.1:0"

[plugins.redis]
path = "{{redis}}"

[[namespaces]]
name = "cache"
pattern = "keyvalue"
slots.store = {{ plugin = "redis", config = {{ url = "{}" }} }}
"#,
        redis.url()
    ));
    let admin = server.admin_address.clone().unwrap();
    assert_eq!(http_get(&admin, "/readyz", &[]).await, (200, "ready: 1 namespaces serving\n".to_owned()));
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = http_get(&admin, "/readyz", &[]).await;
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: 1 of 1 namespaces not serving: cache\n");
    assert_eq!(http_get(&admin, "/healthz", &[]).await, (200, "ok\n".to_owned()));
    let (_, metrics) = http_get(&admin, "/metrics", &[]).await;
    assert_eq!(sample(&metrics, "prism_namespace_healthy{namespace=\"cache\"}"), Some(0.0), "{metrics}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&admin, "/readyz", &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "ready again once Redis is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An `[auth]` section with one API key per `(name, key, namespaces, permissions)`.
pub fn api_keys_config(keys: &[(&str, &str, &str, &str)]) -> String {
    use sha2::Digest;
    let mut config = "[auth]\n".to_owned();
    for (name, key, namespaces, permissions) in keys {
        config += &format!(
            "[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n\
             [[auth.rules]]\nprincipals = [\"api_key:{name}\"]\nnamespaces = [{namespaces}]\npermissions = [{permissions}]\n",
            hex::encode(sha2::Sha256::digest(key.as_bytes()))
        );
    }
    config
}

#[tokio::test]
async fn with_auth_the_metrics_need_admin_and_the_probes_stay_open() {
    let auth = api_keys_config(&[
        ("scraper", "scraper-key", "\"*\"", "\"admin\""),
        ("app", "app-key", "\"default\"", "\"read\", \"write\""),
    ]);
    let server = Server::start(&format!("{auth}{KV_CONFIG}"));
    let admin = server.admin_address.clone().unwrap();
    let (status, body) = http_get(&admin, "/metrics", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no credentials"), "{body}");
    let (status, body) = http_get(&admin, "/metrics", &[("x-api-key", "app-key")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("api_key:app may not use GET /metrics"), "{body}");
    let (status, body) = http_get(&admin, "/metrics", &[("authorization", "Bearer wrong-key")]).await;
    assert_eq!(status, 401, "{body}");
    // Prometheus sends its credential as a bearer token.
    let (status, body) = http_get(&admin, "/metrics", &[("authorization", "Bearer scraper-key")]).await;
    assert_eq!(status, 200, "{body}");
    // The scheme's name in any case (RFC 7235).
    let (status, body) = http_get(&admin, "/metrics", &[("authorization", "BEARER scraper-key")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("prism_library_loads_total"), "{body}");
    assert_eq!(http_get(&admin, "/healthz", &[]).await.0, 200);
    // Probes answer anyone and name no namespace.
    assert_eq!(http_get(&admin, "/readyz", &[]).await, (200, "ready: 1 namespaces serving\n".to_owned()));
}

/// Starts a gateway with `args`, makes a call that is denied (so an audit line is
/// written while it is served) with request id `trace-me-7`, and returns that line.
async fn denied_call_log_line(args: &[&str], marker: &str) -> String {
    let auth = api_keys_config(&[("reader", "reader-key", "\"default\"", "\"read\"")]);
    let server = Server::start_with(&format!("{auth}{KV_CONFIG}"), args);
    let mut kv = server.keyvalue().await;
    let mut request =
        Request::new(SetRequest { key: "k".into(), value: b"v".to_vec().into(), ..Default::default() });
    request.metadata_mut().insert("x-api-key", "reader-key".parse().unwrap());
    request.metadata_mut().insert("x-request-id", "trace-me-7".parse().unwrap());
    assert_eq!(kv.set(request).await.unwrap_err().code(), Code::PermissionDenied);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = server.stderr();
        if let Some(line) = logs.lines().find(|line| line.contains(marker)) {
            // Every line of a JSON log is one object, inside a call or not.
            if args.contains(&"json") {
                for line in logs.lines() {
                    serde_json::from_str::<serde_json::Value>(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                }
            }
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no audit line in: {logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn log_lines_carry_the_request_id_of_the_call_they_belong_to() {
    let line = denied_call_log_line(&["--log-format", "json"], "\"decision\":\"deny\"").await;
    let object: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(object["target"], "prism::audit", "{line}");
    assert_eq!(object["request_id"], "trace-me-7", "{line}");
    assert_eq!(object["method"], "Set", "{line}");
    assert_eq!(object["fields"]["namespace"], "default", "{line}");

    let line = denied_call_log_line(&[], "decision=\"deny\"").await;
    assert!(line.starts_with("request_id=trace-me-7 method=Set "), "{line}");
    assert!(line.contains("prism::audit"), "{line}");
}

#[tokio::test]
async fn an_open_stream_is_counted_open_and_cancelled_when_the_client_drops_it() {
    let server = Server::start(
        r#"
[admin]
listen = "127.0.0.1:0"

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "events"
pattern = "pubsub"
slots.broker = { plugin = "memstore" }
"#,
    );
    let admin = server.admin_address.clone().unwrap();
    let mut pubsub = server.pubsub().await;
    let subscribe = SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() };
    let stream = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    let (_, metrics) = http_get(&admin, "/metrics", &[]).await;
    assert_eq!(sample(&metrics, "prism_streams_open{namespace=\"events\"}"), Some(1.0), "{metrics}");
    // The call that opened it is done; the stream is not a call in flight.
    assert_eq!(sample(&metrics, "prism_requests_in_flight{namespace=\"events\"}"), Some(0.0), "{metrics}");

    drop(stream);
    let cancelled = "prism_requests_total{code=\"CANCELLED\",method=\"Subscribe\",namespace=\"events\",service=\"PubSubService\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(&admin, "/metrics", &[]).await;
        let gone = sample(&metrics, "prism_streams_open{namespace=\"events\"}") == Some(0.0);
        if gone && sample(&metrics, cancelled) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the dropped stream is still counted open: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway with one pub/sub namespace `events` on memstore, outboxes of 4 messages
/// and `slow_subscriber = policy`, and an admin listener.
fn slow_subscriber_server(policy: &str) -> Server {
    Server::start(&format!(
        r#"
[server]
subscriber_buffer = 4
slow_subscriber = "{policy}"

[admin]
listen = "127.0.0.1:0"

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "events"
pattern = "pubsub"
slots.broker = {{ plugin = "memstore" }}
"#
    ))
}

/// Publishes 60 messages of 100 KiB to `events`/`orders`: past the 2 MiB HTTP/2 window
/// of a subscriber that does not read, and past its outbox.
async fn publish_more_than_a_reader_can_hold(server: &Server) {
    let mut pubsub = server.pubsub().await;
    for _ in 0..60 {
        let publish = PublishRequest {
            namespace: "events".into(),
            topic: "orders".into(),
            payload: vec![7u8; 100 * 1024].into(),
            ..Default::default()
        };
        pubsub.publish(publish).await.unwrap();
    }
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_shows_a_full_outbox_and_dropped_messages() {
    let server = slow_subscriber_server("drop_oldest");
    let admin = server.admin_address.clone().unwrap();
    let mut pubsub = server.pubsub().await;
    let subscribe =
        SubscribeRequest { namespace: "events".into(), topic: "orders".into(), ..Default::default() };
    // Never read: once HTTP/2 flow control stops the stream, messages wait in the
    // outbox, and past its 4 the oldest are dropped.
    let _unread = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    publish_more_than_a_reader_can_hold(&server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(&admin, "/metrics", &[]).await;
        let waiting = sample(&metrics, "prism_subscription_outbox_messages{namespace=\"events\"}");
        let deepest = sample(&metrics, "prism_subscription_outbox_deepest_messages{namespace=\"events\"}");
        let dropped = sample(&metrics, "prism_subscriber_dropped_messages_total{namespace=\"events\"}");
        if waiting == Some(4.0) && dropped.is_some_and(|dropped| dropped >= 5.0) {
            assert_eq!(deepest, Some(4.0), "{metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "outbox {waiting:?}, dropped {dropped:?}: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stream_that_ends_in_an_error_carries_the_request_id_in_its_details() {
    let server = slow_subscriber_server("disconnect");
    let mut pubsub = server.pubsub().await;
    let mut subscribe = Request::new(SubscribeRequest {
        namespace: "events".into(),
        topic: "orders".into(),
        ..Default::default()
    });
    subscribe.metadata_mut().insert("x-request-id", "slow-reader-9".parse().unwrap());
    let mut stream = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    // Past the client's window and the outbox's 4 messages: disconnected.
    publish_more_than_a_reader_can_hold(&server).await;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the slow-subscriber error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The error came in the trailers, after messages: the id is in its details.
    let details = String::from_utf8_lossy(status.details());
    assert!(details.contains("google.rpc.RequestInfo") && details.contains("slow-reader-9"), "{details:?}");
}

#[tokio::test]
async fn a_reload_that_changes_admin_or_tracing_says_they_wait_for_a_restart() {
    let server = Server::start_with(KV_CONFIG, &["--no-watch"]);
    let admin = server.admin_address.clone().unwrap();
    let mut admin_api = server.admin().await;
    let unchanged = admin_api.reload(ReloadRequest {}).await.unwrap().into_inner().outcome.unwrap();
    assert!(unchanged.ok && !unchanged.message.contains("restart"), "{unchanged:?}");

    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let changed = config.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:9\"")
        + "\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\n";
    std::fs::write(server.config_path(), changed).unwrap();
    let outcome = admin_api.reload(ReloadRequest {}).await.unwrap().into_inner().outcome.unwrap();
    assert!(outcome.ok, "{outcome:?}");
    assert!(
        outcome.message.contains("[admin], [tracing] settings changed and take effect after a restart"),
        "{outcome:?}"
    );
    // The admin listener the gateway started with keeps serving.
    assert_eq!(http_get(&admin, "/healthz", &[]).await.0, 200);
}

#[tokio::test]
async fn an_admin_call_is_audited_with_principal_method_namespace_permission_and_decision() {
    let auth = api_keys_config(&[
        ("operator", "operator-key", "\"*\"", "\"admin\""),
        ("app", "app-key", "\"default\"", "\"read\""),
    ]);
    let server = Server::start_with(&format!("{auth}{KV_CONFIG}"), &["--log-format", "json"]);
    let mut admin = server.admin().await;
    for (key, allowed) in [("operator-key", true), ("app-key", false)] {
        let mut request = Request::new(GetReloadStatusRequest {});
        request.metadata_mut().insert("x-api-key", key.parse().unwrap());
        assert_eq!(admin.get_reload_status(request).await.is_ok(), allowed, "{key}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let audited = |decision: &str| {
        server
            .stderr()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["target"] == "prism::audit" && line["fields"]["decision"] == decision)
    };
    while audited("deny").is_none() {
        assert!(Instant::now() < deadline, "no audit line in: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (decision, principal) in [("allow", "api_key:operator"), ("deny", "api_key:app")] {
        let line =
            audited(decision).unwrap_or_else(|| panic!("no '{decision}' audit line in: {}", server.stderr()));
        let fields = &line["fields"];
        assert_eq!(fields["principal"], principal, "{line}");
        assert_eq!(fields["method"], "AdminService.GetReloadStatus", "{line}");
        assert_eq!(fields["namespace"], "*", "{line}");
        assert_eq!(fields["permission"], "admin", "{line}");
    }
}
