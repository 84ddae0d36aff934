//! The order of the layers every call passes (host/src/layers/mod.rs), checked by what it
//! implies: observe is outside auth (a refused call is counted and has a request id),
//! auth is outside the quota, the plugin and the size check (a refused call takes no
//! quota, reaches no plugin, and is refused before its body is read).

use prism_acceptance::harness::Server;
use prism_api::*;
use tonic::{Code, Request};

use super::observe::{api_keys_config, http_get, sample};

const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"

[[quotas]]
namespaces = ["default"]
requests_per_second = 1
burst = 3

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;

const REFUSED: usize = 20;
/// Over the 4 MiB the server decodes at most with the default `max_value_bytes`.
const OVERSIZE: usize = 5 * 1024 * 1024;

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("x-api-key", key.parse().unwrap());
    }
    request
}

async fn metrics(admin: &str) -> String {
    let (status, text) = http_get(admin, "/metrics", &[("x-api-key", "scraper-key")]).await;
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// Calls memstore answered, over all its interfaces.
fn plugin_calls(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("prism_plugin_call_duration_seconds_count{")
                && line.contains("plugin=\"memstore\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_refused_call_is_observed_but_takes_no_quota_reaches_no_plugin_and_is_not_read() {
    let auth = api_keys_config(&[
        ("scraper", "scraper-key", "\"*\"", "\"admin\""),
        ("app", "app-key", "\"default\"", "\"read\", \"write\""),
    ]);
    let server = Server::start(&format!("{auth}{CONFIG}"));
    let admin = server.admin_address.clone().expect("the admin listener's address");
    let mut kv = server.keyvalue().await;
    let before = plugin_calls(&metrics(&admin).await);

    for _ in 0..REFUSED {
        let get = GetRequest { namespace: "default".into(), key: "k".into(), ..Default::default() };
        let status = kv.get(with_key(get, None)).await.expect_err("Get without a credential");
        assert_eq!(status.code(), Code::Unauthenticated, "Get without a credential: {status:?}");
        assert!(
            status.metadata().get("x-request-id").is_some(),
            "a refused call has a request id: {status:?}"
        );
    }
    let huge = SetRequest { key: "k".into(), value: vec![b'x'; OVERSIZE].into(), ..Default::default() };
    let status =
        kv.set(with_key(huge.clone(), None)).await.expect_err("an oversize Set without a credential");
    assert_eq!(status.code(), Code::Unauthenticated, "auth answers before the size check: {status:?}");

    let observed = metrics(&admin).await;
    let refused = "prism_requests_total{code=\"UNAUTHENTICATED\",method=\"Get\",namespace=\"\",service=\"KeyValueService\"}";
    assert_eq!(sample(&observed, refused), Some(REFUSED as f64), "{refused} in:\n{observed}");
    assert_eq!(plugin_calls(&observed), before, "no refused call reached the plugin");

    // The quota's burst of 3 is untouched by the refused calls, and is then spent.
    let get = || GetRequest { namespace: "default".into(), key: "k".into(), ..Default::default() };
    kv.get(with_key(get(), Some("app-key"))).await.expect("the first authenticated Get is within the quota");
    assert_eq!(
        plugin_calls(&metrics(&admin).await),
        before + 1.0,
        "the authenticated Get reached the plugin"
    );
    let mut exhausted = None;
    for _ in 0..10 {
        if let Err(status) = kv.get(with_key(get(), Some("app-key"))).await {
            exhausted = Some(status);
            break;
        }
    }
    let exhausted = exhausted.expect("ten quick Gets over a burst of 3 at 1/s are refused by the quota");
    assert_eq!(exhausted.code(), Code::ResourceExhausted, "{exhausted:?}");

    let status = kv.set(with_key(huge, Some("app-key"))).await.expect_err("an authenticated oversize Set");
    assert_eq!(status.code(), Code::ResourceExhausted, "the size check is on: {status:?}");
}
