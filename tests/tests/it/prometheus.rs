//! A real Prometheus server (Debian's `prometheus`) scrapes a gateway under load; through
//! Prometheus' HTTP API the test reads the request counter and a p99 latency, then runs
//! every query of the Grafana dashboard in docs/ and requires each to be valid and the
//! ones about the loaded namespace to return series.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_acceptance::harness::{free_port, program_available, Server};
use prism_api::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::console::CONFIG;

struct Prometheus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second as job `prism`.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prism\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, address, _dir: dir }
    }

    /// An instant query's result vector, or the error Prometheus gave.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let encoded: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let body = http_get_10(&self.address, &format!("/api/v1/query?query={encoded}")).await?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{promql}: {answer}"));
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `promql` returns at least one series.
    async fn wait_for_series(&self, promql: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match self.query(promql).await {
                Ok(series) if !series.is_empty() => return series,
                outcome => {
                    assert!(Instant::now() < deadline, "{promql} returned no series: {outcome:?}");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One HTTP/1.0 GET (so the answer is not chunked); the body of a 200.
async fn http_get_10(address: &str, path: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nhost: {address}\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{head}\n{body}"));
    }
    Ok(body.to_owned())
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_the_dashboard_queries_return_series() {
    if !program_available("prometheus") {
        return;
    }
    let server = Server::start(CONFIG);
    let admin = server.admin_address.clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (mut kv, stop) = (server.keyvalue().await, stop.clone());
        async move {
            let set = SetRequest { key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
            kv.set(set).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap();
            }
        }
    });
    // So that every series a panel draws exists: a subscription, a reload and a backend error.
    let mut pubsub = server.pubsub().await;
    let subscribe =
        SubscribeRequest { namespace: "events".into(), topic: "orders".into(), ..Default::default() };
    let _subscription = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    server.admin().await.reload(ReloadRequest {}).await.unwrap();
    let over_max_keys =
        SetRequest { key: "second".into(), value: b"v".to_vec().into(), ..Default::default() };
    let mut kv = server.keyvalue().await;
    while kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await; // the load's Set comes first
    }
    assert_eq!(kv.set(over_max_keys).await.unwrap_err().code(), tonic::Code::ResourceExhausted);
    let prometheus = Prometheus::start(&admin);

    let up = prometheus.wait_for_series("up{job=\"prism\"} == 1").await;
    assert_eq!(up.len(), 1, "{up:?}");
    let gets = prometheus
        .wait_for_series("prism_requests_total{namespace=\"default\",service=\"KeyValueService\",method=\"Get\",code=\"OK\"}")
        .await;
    assert!(value(&gets[0]) > 0.0, "{gets:?}");
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(prism_request_duration_seconds_bucket{namespace=\"default\",method=\"Get\"}[10s])))";
    let deadline = Instant::now() + Duration::from_secs(30);
    let latency = loop {
        let series = prometheus.query(p99).await.unwrap();
        if let Some(latency) = series.first().map(value).filter(|v| v.is_finite()) {
            break latency;
        }
        assert!(Instant::now() < deadline, "no p99 yet: {series:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(latency > 0.0 && latency < 10.0, "p99 of a Get: {latency} s");

    // Every dashboard query, as Grafana would send it with all namespaces and jobs.
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../docs/grafana/prism-dashboard.json")).unwrap();
    let mut queries = Vec::new();
    collect_exprs(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 15, "{queries:?}");
    for query in &queries {
        let promql =
            query.replace("$__rate_interval", "10s").replace("$namespace", ".*").replace("$job", ".*");
        let series =
            prometheus.query(&promql).await.unwrap_or_else(|e| panic!("an invalid dashboard query: {e}"));
        // The panels about calls, latency and the process must show the loaded gateway.
        let must_show =
            ["prism_requests_total", "prism_request_duration", "process_", "prism_namespace_healthy"];
        if must_show.iter().any(|name| promql.contains(name)) && !promql.contains("code!=") {
            assert!(!series.is_empty(), "{promql} returned nothing");
        }
    }
    // And every metric a panel names is one the gateway exports (a typo would draw nothing).
    let (_, exported) = super::observe::http_get(&admin, "/metrics", &[]).await;
    for query in &queries {
        for name in metric_names(query) {
            let family = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "{query} names {name}, which /metrics lacks"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}

/// The `prism_…` and `process_…` metric names in a PromQL expression.
fn metric_names(promql: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = promql;
    while let Some(start) = ["prism_", "process_"].iter().filter_map(|prefix| rest.find(prefix)).min() {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

fn collect_exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                into.push(expr.clone());
            }
            map.values().for_each(|v| collect_exprs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}
