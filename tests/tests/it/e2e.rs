//! End-to-end: the real `prism` binary, called over gRPC with the generated client.

use std::time::{Duration, Instant};

use prism_acceptance::harness::Server;
use prism_api::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

/// memstore for `default` and `lists`, the panicking fixture (keyvalue_basic only) for `fragile`.
const CONFIG: &str = r#"
[server]
max_value_bytes = 1024
health_interval_ms = 100

[plugins.memstore]
path = "{memstore}"

[plugins.panicking]
path = "{panicking}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"

[[namespaces]]
name = "orders"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"

[[namespaces]]
name = "lists"
pattern = "list"
[namespaces.slots.store]
plugin = "memstore"

[[namespaces]]
name = "fragile"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "panicking"
"#;

fn get(namespace: &str, key: &str) -> GetRequest {
    GetRequest { namespace: namespace.into(), key: key.into(), ..Default::default() }
}

fn set(namespace: &str, key: &str, value: &[u8]) -> SetRequest {
    SetRequest {
        namespace: namespace.into(),
        key: key.into(),
        value: value.to_vec().into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_keyvalue_rpc_works_on_memstore() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;

    // Empty namespace = "default".
    kv.set(set("", "greeting", b"hello")).await.unwrap();
    let got = kv.get(get("default", "greeting")).await.unwrap().into_inner();
    assert!(got.found);
    assert_eq!(&got.value[..], b"hello");
    assert_eq!(got.version, 1, "memstore has keyvalue_cas, so Get reports the version");
    assert!(!kv.get(get("", "absent")).await.unwrap().into_inner().found);
    assert!(
        kv.exists(ExistsRequest { namespace: "".into(), key: "greeting".into() })
            .await
            .unwrap()
            .into_inner()
            .exists
    );

    // Namespaces are separate stores.
    assert!(!kv.get(get("orders", "greeting")).await.unwrap().into_inner().found);

    // Scan, ScanStream, Count.
    for i in 0..25 {
        kv.set(set("orders", &format!("order/{i:02}"), format!("{i}").as_bytes())).await.unwrap();
    }
    kv.set(set("orders", "other", b"x")).await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = kv
            .scan(ScanRequest {
                namespace: "orders".into(),
                prefix: "order/".into(),
                cursor,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 10);
        keys.extend(page.entries.into_iter().map(|e| e.key));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("order/{i:02}")).collect();
    assert_eq!(keys, expected);
    let streamed: Vec<KeyValue> = kv
        .scan_stream(ScanStreamRequest { namespace: "orders".into(), prefix: "order/".into() })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(streamed.len(), 25);
    let count = kv.count(CountRequest { namespace: "orders".into(), prefix: "order/".into() }).await.unwrap();
    assert_eq!(count.into_inner().count, 25);

    // TTL: Set with ttl_ms, GetTtl, Persist, Expire.
    kv.set(SetRequest { ttl_ms: 200, ..set("", "brief", b"v") }).await.unwrap();
    let ttl =
        kv.get_ttl(GetTtlRequest { namespace: "".into(), key: "brief".into() }).await.unwrap().into_inner();
    assert!(ttl.found && ttl.has_expiry && ttl.ttl_ms > 0 && ttl.ttl_ms <= 200, "{ttl:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!kv.get(get("", "brief")).await.unwrap().into_inner().found);
    kv.set(SetRequest { ttl_ms: 200, ..set("", "kept", b"v") }).await.unwrap();
    let persisted = kv.persist(PersistRequest { namespace: "".into(), key: "kept".into() }).await.unwrap();
    assert!(persisted.into_inner().persisted);
    let ttl =
        kv.get_ttl(GetTtlRequest { namespace: "".into(), key: "kept".into() }).await.unwrap().into_inner();
    assert!(ttl.found && !ttl.has_expiry);
    let expired =
        kv.expire(ExpireRequest { namespace: "".into(), key: "kept".into(), ttl_ms: 100 }).await.unwrap();
    assert!(expired.into_inner().applied);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !kv.exists(ExistsRequest { namespace: "".into(), key: "kept".into() })
            .await
            .unwrap()
            .into_inner()
            .exists
    );

    // Batches.
    let results = kv
        .batch_set(BatchSetRequest {
            namespace: "".into(),
            entries: vec![
                KeyValue { key: "b1".into(), value: b"1".to_vec().into() },
                KeyValue { key: "b2".into(), value: b"2".to_vec().into() },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    let got = kv
        .batch_get(BatchGetRequest {
            namespace: "".into(),
            keys: vec!["b2".into(), "nope".into(), "b1".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let summary: Vec<(String, bool, Vec<u8>)> =
        got.into_iter().map(|r| (r.key, r.found, r.value.to_vec())).collect();
    assert_eq!(
        summary,
        vec![
            ("b2".into(), true, b"2".to_vec()),
            ("nope".into(), false, vec![]),
            ("b1".into(), true, b"1".to_vec())
        ]
    );
    let deleted = kv
        .batch_delete(BatchDeleteRequest { namespace: "".into(), keys: vec!["b1".into(), "nope".into()] })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(deleted.iter().map(|r| r.deleted).collect::<Vec<_>>(), vec![true, false]);

    // Compare-and-swap and versioned delete.
    let created = kv
        .compare_and_swap(CompareAndSwapRequest {
            namespace: "".into(),
            key: "counter".into(),
            expected_version: 0,
            value: b"1".to_vec().into(),
            ttl_ms: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let created = created.into_inner().version;
    assert!(created >= 1);
    let swapped = kv
        .compare_and_swap(CompareAndSwapRequest {
            namespace: "".into(),
            key: "counter".into(),
            expected_version: created,
            value: b"2".to_vec().into(),
            ttl_ms: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let swapped = swapped.into_inner().version;
    assert!(swapped > created, "versions grow on every write");
    let deleted = kv
        .delete(DeleteRequest {
            namespace: "".into(),
            key: "counter".into(),
            expected_version: swapped,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(deleted.into_inner().deleted);
    let deleted = kv
        .delete(DeleteRequest {
            namespace: "".into(),
            key: "greeting".into(),
            expected_version: 0,
            ..Default::default()
        })
        .await;
    assert!(deleted.unwrap().into_inner().deleted);
    let deleted = kv
        .delete(DeleteRequest {
            namespace: "".into(),
            key: "greeting".into(),
            expected_version: 0,
            ..Default::default()
        })
        .await;
    assert!(!deleted.unwrap().into_inner().deleted);
}

#[tokio::test]
async fn every_list_rpc_works_on_memstore() {
    let server = Server::start(CONFIG);
    let mut list = server.list().await;
    let ns = || "lists".to_string();
    let values = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec().into()).collect::<Vec<bytes::Bytes>>();
    let pushed = list
        .push(PushRequest {
            namespace: ns(),
            key: "jobs".into(),
            values: values(&["a", "b", "c", "d"]),
            end: ListEnd::Right as i32,
        })
        .await
        .unwrap();
    assert_eq!(pushed.into_inner().length, 4);
    let pushed = list
        .push(PushRequest {
            namespace: ns(),
            key: "jobs".into(),
            values: values(&["z"]),
            end: ListEnd::Left as i32,
        })
        .await
        .unwrap();
    assert_eq!(pushed.into_inner().length, 5);
    let range =
        list.range(RangeRequest { namespace: ns(), key: "jobs".into(), start: 0, stop: -1 }).await.unwrap();
    assert_eq!(range.into_inner().values, values(&["z", "a", "b", "c", "d"]));
    let popped = list
        .pop(PopRequest { namespace: ns(), key: "jobs".into(), end: ListEnd::Left as i32, count: 2 })
        .await
        .unwrap();
    assert_eq!(popped.into_inner().values, values(&["z", "a"]));
    let popped = list
        .pop(PopRequest { namespace: ns(), key: "jobs".into(), end: ListEnd::Right as i32, count: 0 })
        .await
        .unwrap();
    assert_eq!(popped.into_inner().values, values(&["d"]), "count 0 pops one");
    list.trim(TrimRequest { namespace: ns(), key: "jobs".into(), start: 1, stop: 1 }).await.unwrap();
    let length = list.length(LengthRequest { namespace: ns(), key: "jobs".into() }).await.unwrap();
    assert_eq!(length.into_inner().length, 1);
    let range =
        list.range(RangeRequest { namespace: ns(), key: "jobs".into(), start: 0, stop: -1 }).await.unwrap();
    assert_eq!(range.into_inner().values, values(&["c"]));
}

fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) -> tonic::Status {
    let status = result.expect_err("expected an error status");
    assert_eq!(status.code(), code, "message: {}", status.message());
    assert!(status.message().contains(needle), "'{}' should mention '{needle}'", status.message());
    status
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_an_actionable_message() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;
    let mut list = server.list().await;

    assert_status(kv.get(get("nowhere", "k")).await, Code::NotFound, "namespace 'nowhere' is not configured");
    // A name no config could hold is INVALID_ARGUMENT, and never echoed in full.
    let huge = "n".repeat(3 * 1024 * 1024);
    let status = assert_status(kv.get(get(&huge, "k")).await, Code::InvalidArgument, "is not a valid name");
    assert!(status.message().len() < 300, "a bounded message: {} bytes", status.message().len());
    assert!(status.message().contains("(3145728 bytes)"), "{}", status.message());
    let status = assert_status(kv.get(get("bad\nname", "k")).await, Code::InvalidArgument, "'bad\\nname'");
    assert!(!status.message().contains('\n'), "escaped: {}", status.message());
    assert_status(kv.get(get("", "")).await, Code::InvalidArgument, "key must not be empty");
    assert_status(kv.get(get("", &"k".repeat(1025))).await, Code::InvalidArgument, "at most 1024 bytes");
    kv.get(get("", &"k".repeat(1024))).await.expect("a 1024-byte key is fine");
    assert_status(
        kv.set(set("", "big", &[0u8; 1025])).await,
        Code::InvalidArgument,
        "at most 1024 (server.max_value_bytes)",
    );
    kv.set(set("", "fits", &[0u8; 1024])).await.expect("a value at the limit is fine");
    assert_status(
        kv.set(SetRequest { ttl_ms: -5, ..set("", "k", b"v") }).await,
        Code::InvalidArgument,
        "a TTL must be 0",
    );
    assert_status(
        kv.expire(ExpireRequest { namespace: "".into(), key: "fits".into(), ttl_ms: 0 }).await,
        Code::InvalidArgument,
        "Persist",
    );
    assert_status(
        kv.scan(ScanRequest { limit: 5000, ..Default::default() }).await,
        Code::InvalidArgument,
        "server.max_scan_limit",
    );

    // The bound plugin lacks the interface.
    let status = assert_status(
        kv.expire(ExpireRequest { namespace: "fragile".into(), key: "k".into(), ttl_ms: 10 }).await,
        Code::Unimplemented,
        "keyvalue_ttl",
    );
    assert!(status.message().contains("'panicking'"), "{}", status.message());
    assert_status(
        kv.count(CountRequest { namespace: "fragile".into(), prefix: "".into() }).await,
        Code::Unimplemented,
        "keyvalue_scan",
    );
    assert_status(
        kv.compare_and_swap(CompareAndSwapRequest {
            namespace: "fragile".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
        "keyvalue_cas",
    );

    // CAS conflict: FAILED_PRECONDITION with the current version in message and trailer.
    kv.set(set("", "doc", b"v1")).await.unwrap();
    let old = kv.get(get("", "doc")).await.unwrap().into_inner().version;
    kv.set(set("", "doc", b"v2")).await.unwrap();
    let current = kv.get(get("", "doc")).await.unwrap().into_inner().version;
    let status = assert_status(
        kv.compare_and_swap(CompareAndSwapRequest {
            namespace: "".into(),
            key: "doc".into(),
            expected_version: old,
            value: b"v3".to_vec().into(),
            ttl_ms: 0,
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &format!("current version is {current}"),
    );
    assert_eq!(status.metadata().get("prism-current-version").unwrap(), current.to_string().as_str());
    assert_status(
        kv.delete(DeleteRequest {
            namespace: "".into(),
            key: "doc".into(),
            expected_version: current + 1000,
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &format!("current version is {current}"),
    );

    // A namespace of another pattern.
    assert_status(kv.get(get("lists", "k")).await, Code::FailedPrecondition, "uses pattern 'list'");
    assert_status(
        list.push(PushRequest {
            namespace: "lists".into(),
            key: "k".into(),
            values: vec![b"v".to_vec().into()],
            end: 0,
        })
        .await,
        Code::InvalidArgument,
        "LIST_END_LEFT or LIST_END_RIGHT",
    );
    assert_status(
        list.push(PushRequest { namespace: "lists".into(), key: "k".into(), values: vec![], end: 1 }).await,
        Code::InvalidArgument,
        "at least one value",
    );
}

use tonic_health::pb::health_check_response::ServingStatus;

/// Polls `grpc.health.v1` until `service` reports `wanted`, failing after 10 s.
async fn wait_for_health(
    health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
    wanted: ServingStatus,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        // NOT_FOUND until the first health poll has reported the namespace.
        if health.check(request).await.is_ok_and(|reply| reply.into_inner().status == wanted as i32) {
            return;
        }
        assert!(Instant::now() < deadline, "'{service}' never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_plugin_panic_fails_one_call_and_the_host_keeps_serving() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;
    kv.set(set("fragile", "k", b"v")).await.unwrap();
    let status = assert_status(kv.get(get("fragile", "panic")).await, Code::Internal, "plugin panicked");
    assert!(status.message().contains("the fixture was asked to panic"), "{}", status.message());

    // Same instance, other namespaces: all still answer.
    assert_eq!(&kv.get(get("fragile", "k")).await.unwrap().into_inner().value[..], b"v");
    kv.set(set("", "after", b"ok")).await.unwrap();

    // The health poller marks the namespace unhealthy.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    wait_for_health(&mut health, "fragile", ServingStatus::NotServing).await;
    let reply =
        health.check(tonic_health::pb::HealthCheckRequest { service: "default".into() }).await.unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);

    // After three failed checks the host recreates the namespace's instance.
    wait_for_health(&mut health, "fragile", ServingStatus::Serving).await;
    let reply = kv.get(get("fragile", "k")).await.unwrap().into_inner();
    assert!(!reply.found, "a fresh instance of a plugin without state_transfer starts empty");
    kv.set(set("fragile", "k", b"again")).await.unwrap();
    assert!(server.stderr().contains("recreated the namespace's instances"), "{}", server.stderr());
}

#[tokio::test]
async fn a_hung_health_check_marks_only_its_namespace_unhealthy_and_the_others_keep_reporting() {
    let config = CONFIG.replace(
        "[[namespaces]]\nname = \"default\"",
        "[[namespaces]]\nname = \"hung\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"panicking\"\nconfig = { hang_health = true }\n\n[[namespaces]]\nname = \"default\"",
    );
    let server = Server::start(&config);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    wait_for_health(&mut health, "hung", ServingStatus::NotServing).await;
    // The poller is not stuck behind the hung plugin: a namespace that breaks now is
    // still noticed. Recreating the hung one is tried, and refused because the new
    // instance hangs too (the old one keeps its place; retries back off).
    let mut kv = server.keyvalue().await;
    assert_status(kv.get(get("fragile", "panic")).await, Code::Internal, "plugin panicked");
    wait_for_health(&mut health, "fragile", ServingStatus::NotServing).await;
    wait_for_health(&mut health, "default", ServingStatus::Serving).await;
    assert!(server.stderr().contains("health check did not answer within"), "{}", server.stderr());
    // A recreation attempt waits up to 5 s for the new (hung) instance's first health check.
    let deadline = Instant::now() + Duration::from_secs(20);
    let retried = |log: String| log.lines().any(|l| l.contains("could not recreate") && l.contains("hung"));
    while !retried(server.stderr()) {
        assert!(Instant::now() < deadline, "recreating the hung namespace is tried: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn plugin_log_events_reach_the_host_log_with_plugin_and_namespace_at_its_level() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;
    let reply = kv.get(get("fragile", "log:marker-7")).await.unwrap().into_inner();
    assert_eq!(&reply.value[..], b"logged");
    let deadline = Instant::now() + Duration::from_secs(5);
    let plain = || strip_ansi(&server.stderr());
    while !plain().contains("fixture info line") {
        assert!(Instant::now() < deadline, "the plugin's info event never reached the log: {}", plain());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = plain();
    let line = log.lines().find(|line| line.contains("fixture info line")).unwrap();
    for expected in ["INFO", "prism_plugin", "rest=marker-7", "plugin=panicking", "namespace=fragile"] {
        assert!(line.contains(expected), "{expected} in: {line}");
    }
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("fixture error line")), "{log}");
    assert!(!log.contains("fixture debug line"), "debug is below the host's level (info): {log}");
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_client_deadline_ends_a_slow_call_with_deadline_exceeded() {
    let server = Server::start(CONFIG);
    // Over a plain HTTP/2 client: tonic's Channel runs a timer of its own on the
    // deadline, which on a busy machine can end the call as CANCELLED before the
    // server's answer is read. This test is about the server's answer.
    let http2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = server.url().parse().unwrap();
    let mut kv = prism_api::key_value_service_client::KeyValueServiceClient::with_origin(http2, origin);
    let mut request = Request::new(get("fragile", "sleep:3000"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = kv.get(request).await.expect_err("the deadline passes first");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{}", status.message());
    assert!(status.message().contains("client deadline of 300 ms"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2));
    kv.get(get("fragile", "x")).await.expect("the host still serves");
}

#[tokio::test]
async fn the_server_request_timeout_bounds_calls_without_a_deadline() {
    let server = Server::start(
        &CONFIG.replace("health_interval_ms = 100", "health_interval_ms = 100\nrequest_timeout_ms = 300"),
    );
    let mut kv = server.keyvalue().await;
    let started = Instant::now();
    let status = kv.get(get("fragile", "sleep:3000")).await.expect_err("the server limit passes first");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{}", status.message());
    assert!(status.message().contains("request_timeout_ms"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish_then_exits_cleanly() {
    let mut server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;
    let slow = tokio::spawn(async move { kv.get(get("fragile", "sleep:800")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed =
        std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let reply = slow.await.unwrap().expect("the in-flight call completes");
    assert_eq!(&reply.into_inner().value[..], b"slept");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0), "stderr: {}", server.stderr());
}

#[tokio::test]
async fn admin_reports_plugins_namespaces_and_patterns() {
    let server = Server::start(CONFIG);
    let mut admin = server.admin().await;
    let plugins = admin.list_plugins(ListPluginsRequest {}).await.unwrap().into_inner().plugins;
    let memstore = plugins.iter().find(|p| p.name == "memstore").expect("memstore listed");
    assert_eq!(memstore.plugin_name, "memstore");
    assert_eq!(memstore.plugin_abi_version, plugin_abi::ABI_VERSION);
    assert_eq!(memstore.abi_version, 1, "the major version");
    assert!(memstore.interfaces.contains(&"keyvalue_cas".to_string()));
    assert_eq!(memstore.sha256.len(), 64);
    let namespaces = admin.list_namespaces(ListNamespacesRequest {}).await.unwrap().into_inner().namespaces;
    let names: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["default", "fragile", "lists", "orders"]);
    let lists = namespaces.iter().find(|n| n.name == "lists").unwrap();
    assert_eq!(lists.pattern, "list");
    assert_eq!(lists.slots[0].slot, "store");
    assert_eq!(lists.slots[0].plugin, "memstore");
    let patterns = admin.list_patterns(ListPatternsRequest {}).await.unwrap().into_inner().patterns;
    let registry = patterns.iter().find(|p| p.name == "multicast-registry").unwrap();
    let durability = registry.slots.iter().find(|s| s.slot == "durability").unwrap();
    assert!(durability.optional);
    assert_eq!(durability.required_interfaces, vec!["queue_basic", "queue_visibility", "queue_dead_letter"]);
}

#[tokio::test]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = Server::start(CONFIG);
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in
        ["grpc.health.v1.Health", "prism.v1.AdminService", "prism.v1.KeyValueService", "prism.v1.ListService"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[tokio::test]
async fn values_up_to_a_large_configured_limit_pass_through() {
    // Beyond tonic's default 4 MiB message limit, which the server raises to fit.
    let server = Server::start(&CONFIG.replace("max_value_bytes = 1024", "max_value_bytes = 6291456"));
    let mut kv = server.keyvalue().await.max_decoding_message_size(8 * 1024 * 1024);
    let value: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    kv.set(set("", "big", &value)).await.expect("a 5 MiB value under a 6 MiB limit");
    let got = kv.get(get("", "big")).await.unwrap().into_inner();
    assert_eq!(got.value.len(), value.len());
    assert!(got.value[..] == value[..]);
    assert_status(kv.set(set("", "bigger", &vec![0u8; 6291457])).await, Code::InvalidArgument, "6291456");
    // Past the transport limit (the value limit + 64 KiB): RESOURCE_EXHAUSTED, saying what to change.
    let status = kv.set(set("", "huge", &vec![0u8; 6291456 + 128 * 1024])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("server.max_value_bytes"), "{}", status.message());
}
