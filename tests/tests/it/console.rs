//! The operator's console in a real browser: Debian's Chromium, headless, loads the page
//! from a running gateway under load, the test reads the DOM it rendered (namespaces,
//! plugins, subscriptions, a refused reload, live rate and p99), and saves a screenshot
//! to `target/debug/console.png` (the README's picture, docs/console.png, is a copy).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prism_acceptance::harness::{program_available, target_dir, Server};
use prism_api::*;

use super::observe::{api_keys_config, http_get};

/// An admin listener, a keyvalue namespace `default` that holds at most one key (so a
/// second Set is a backend error), and a pubsub namespace `events`; the Prometheus test
/// uses it too.
pub const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"

[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore", config = { max_keys = 1 } }

[[namespaces]]
name = "events"
pattern = "pubsub"
slots.broker = { plugin = "memstore" }
"#;

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`); its standard output.
/// Virtual time lets the page's two-second poll run several times in a moment of real
/// time; it waits while a fetch is pending, so every poll reaches the gateway.
async fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=20000",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(url);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the first `<td>` with class `class` inside `row` (markup without nesting).
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let start = row.find(&format!("class=\"{class}\"")).unwrap_or_else(|| panic!("no {class} cell in {row}"));
    let text = &row[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    &text[..text.find('<').unwrap()]
}

/// The `<tr>` whose `data-{attribute}` is `value`.
fn row<'a>(dom: &'a str, attribute: &str, value: &str) -> &'a str {
    let start = dom
        .find(&format!("data-{attribute}=\"{value}\""))
        .unwrap_or_else(|| panic!("no row for {attribute} {value} in {dom}"));
    &dom[start..start + dom[start..].find("</tr>").unwrap()]
}

#[tokio::test]
async fn the_console_shows_namespaces_plugins_reloads_and_live_traffic_in_chromium() {
    if !program_available("chromium") {
        return;
    }
    let server = Server::start_with(CONFIG, &["--no-watch"]);
    let admin = server.admin_address.clone().unwrap();

    // A refused reload: its reason must reach the history.
    let good = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(server.config_path(), good.replace("pattern = \"pubsub\"", "pattern = \"pubsub_v2\""))
        .unwrap();
    let refused = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert!(!refused.outcome.as_ref().unwrap().ok);
    std::fs::write(server.config_path(), good).unwrap();

    let mut pubsub = server.pubsub().await;
    let subscribe =
        SubscribeRequest { namespace: "events".into(), topic: "orders".into(), ..Default::default() };
    let _subscription = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    let plugins = server.admin().await.list_plugins(ListPluginsRequest {}).await.unwrap().into_inner();
    let sha256 = plugins.plugins[0].sha256.clone();

    // Load on "default" while the page polls: Gets, and one refused call in ten.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (mut kv, stop) = (server.keyvalue().await, stop.clone());
        async move {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = if i % 10 == 0 { String::new() } else { "k".to_owned() };
                let _ = kv.get(GetRequest { key, ..Default::default() }).await;
            }
        }
    });

    let url = format!("http://{admin}/console");
    let dom = chromium(&url, &["--dump-dom"]).await;
    assert!(dom.contains("data-live=\"true\""), "the page never had two polls to compare: {dom}");

    let default = row(&dom, "namespace", "default");
    assert!(default.contains(">keyvalue<") && default.contains("store → memstore"), "{default}");
    assert!(default.contains(">SERVING<"), "{default}");
    let rate: f64 = cell(default, "num rate").parse().unwrap_or_else(|_| panic!("a rate: {default}"));
    assert!(rate > 0.0, "the load shows as a request rate: {default}");
    let errors = cell(default, "num errors");
    assert!(errors.contains('%'), "errors/s with their share of requests: {default}");
    let p99 = cell(default, "num p99");
    assert!(["µs", "ms", " s"].iter().any(|unit| p99.ends_with(unit)), "p99 as a duration: {default}");

    let events = row(&dom, "namespace", "events");
    assert_eq!(cell(events, "num subscriptions"), "1", "{events}");
    assert!(dom.contains(">orders<"), "the subscription's topic is listed: {dom}");

    let memstore = row(&dom, "plugin", "memstore");
    assert_eq!(cell(memstore, "mono sha256"), &sha256[..12], "{memstore}");
    assert!(cell(memstore, "interfaces").contains("keyvalue_basic"), "{memstore}");
    assert!(memstore.contains("max_keys"), "the plugin's config keys: {memstore}");

    assert!(
        dom.contains(">refused<") && dom.contains("pubsub_v2"),
        "the refused reload and its reason: {dom}"
    );

    let screenshot = target_dir().join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &url,
        &["--window-size=1400,900", "--hide-scrollbars", &format!("--screenshot={}", screenshot.display())],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_png(&screenshot);
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} is not a rendered page",
        path.display()
    );
}

#[tokio::test]
async fn the_console_page_is_self_contained_and_its_data_needs_admin_under_auth() {
    let server = Server::start(CONFIG);
    let admin = server.admin_address.clone().unwrap();
    let (status, page) = http_get(&admin, "/console", &[]).await;
    assert_eq!(status, 200);
    // No CDN: every script and style is the gateway's own.
    for reference in ["src=\"", "href=\""] {
        for link in page.split(reference).skip(1) {
            assert!(link.starts_with('/'), "{reference}{link}");
        }
    }
    let head = response_head(&admin, "/console").await;
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");

    let (status, overview) = http_get(&admin, "/api/overview", &[]).await;
    assert_eq!(status, 200);
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["namespaces"][0]["name"], "default");
    assert_eq!(overview["plugins"][0]["name"], "memstore");

    let auth = api_keys_config(&[
        ("operator", "operator-key", "\"*\"", "\"admin\""),
        ("app", "app-key", "\"default\"", "\"read\", \"write\""),
    ]);
    let server = Server::start(&format!("{auth}{CONFIG}"));
    let admin = server.admin_address.clone().unwrap();
    // The page itself names nothing; it asks for a credential when the data is refused.
    assert_eq!(http_get(&admin, "/console", &[]).await.0, 200);
    let (status, body) = http_get(&admin, "/api/overview", &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_get(&admin, "/api/overview", &[("authorization", "Bearer app-key")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("api_key:app may not use GET /api/overview"), "{body}");
    assert!(!body.contains("events"), "a refusal names no namespace: {body}");
    let (status, body) = http_get(&admin, "/api/overview", &[("authorization", "Bearer operator-key")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"events\""), "{body}");
}

/// The status line and headers of a GET, lowercased.
async fn response_head(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split("\r\n\r\n").next().unwrap_or_default().to_lowercase()
}
