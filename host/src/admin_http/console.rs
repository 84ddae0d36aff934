//! The operator's console: one page (HTML, script and style embedded in the binary) and
//! the JSON it polls, `/api/overview`. The page computes rates, error rates and p99 from
//! the difference between two polls of the same counters `/metrics` serves, so the
//! console and Prometheus never disagree.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::gateway::Gateway;
use crate::reload::Reloader;
use crate::resolve::declared_interfaces;

pub const PAGE: &str = include_str!("console/index.html");
pub const SCRIPT: &str = include_str!("console/console.js");
pub const STYLE: &str = include_str!("console/console.css");

/// Subscriptions listed per namespace; the count is always complete.
const SUBSCRIPTIONS_SHOWN: usize = 100;

/// Everything the console shows, as of now.
pub fn overview(gateway: &Gateway, reloader: &Reloader, metrics: &crate::observe::Metrics) -> Value {
    let routing = gateway.routing();
    let traffic = metrics.traffic_by_namespace();
    let namespaces: Vec<Value> = routing
        .namespaces
        .values()
        .map(|namespace| {
            let health = namespace.health();
            let subscriptions = namespace.subscriptions();
            let shown: Vec<Value> = subscriptions
                .iter()
                .take(SUBSCRIPTIONS_SHOWN)
                .map(|subscription| {
                    json!({
                        "topic": subscription.topic,
                        "durable_name": subscription.durable_name,
                        "open_s": subscription.opened.elapsed().as_secs(),
                        "waiting": subscription.waiting.load(Ordering::Relaxed),
                        "dropped": subscription.dropped.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": namespace.name,
                "pattern": namespace.pattern.name,
                "health": crate::service::admin::health_name(health.status),
                "health_message": crate::secrets::redact(&health.message),
                "slots": namespace.slots.iter().map(|bound| json!({
                    "slot": bound.slot.name,
                    "plugin": bound.plugin.name,
                })).collect::<Vec<_>>(),
                "in_flight": namespace.in_flight(),
                "open_streams": namespace.open_streams(),
                "subscription_count": subscriptions.len(),
                "subscriptions": shown,
                "traffic": traffic.get(namespace.name.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let plugins: Vec<Value> = routing
        .plugins
        .values()
        .map(|loaded| {
            let metadata = loaded.plugin.metadata();
            let config_keys: Vec<Value> = metadata
                .config_keys
                .iter()
                .flatten()
                .map(|key| {
                    json!({
                        "name": key.name,
                        "type": key.type_name,
                        "default": key.default,
                        "required": key.required,
                        "doc": key.doc,
                    })
                })
                .collect();
            json!({
                "name": loaded.name,
                "plugin_name": metadata.name,
                "version": metadata.version,
                "abi_version": metadata.abi_version,
                "sha256": loaded.sha256,
                "path": loaded.source.display().to_string(),
                "interfaces": declared_interfaces(metadata),
                "config_keys": config_keys,
            })
        })
        .collect();
    let status = reloader.status();
    let reloads: Vec<Value> = status
        .history
        .iter()
        .rev()
        .map(|attempt| {
            json!({
                "at_unix_ms": attempt.outcome.at_unix_ms,
                "trigger": attempt.trigger,
                "ok": attempt.outcome.ok,
                "message": crate::secrets::redact(&attempt.outcome.message),
            })
        })
        .collect();
    let (libraries, library_bytes) = reloader.libraries_loaded();
    json!({
        // The gateway's clock when the counters were read: the page measures rates
        // over it, not over the browser's clock (which a headless browser fakes).
        "at_unix_ms": plugin_abi::unix_millis(),
        "version": env!("CARGO_PKG_VERSION"),
        "config_path": reloader.config_path().display().to_string(),
        "watching": reloader.watching(),
        "libraries_loaded": libraries,
        "library_bytes": library_bytes,
        "reloads_total": status.reloads,
        "namespaces": namespaces,
        "plugins": plugins,
        "reloads": reloads,
    })
}

/// One namespace's request counters: totals since start, and the latency histogram's
/// cumulative bucket counts (upper bound in seconds, count).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Traffic {
    pub requests: u64,
    /// Calls timed (the histogram's count, including any slower than the last bucket).
    pub timed: u64,
    pub errors: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl crate::observe::Metrics {
    /// `prism_requests_total` and `prism_request_duration_seconds`, summed over service
    /// and method per namespace. An error is any status but OK.
    pub fn traffic_by_namespace(&self) -> BTreeMap<String, Traffic> {
        use prometheus::core::Collector;
        let mut traffic: BTreeMap<String, Traffic> = BTreeMap::new();
        let label = |metric: &prometheus::proto::Metric, name: &str| {
            metric
                .get_label()
                .iter()
                .find(|pair| pair.name() == name)
                .map(|pair| pair.value().to_owned())
                .unwrap_or_default()
        };
        for family in self.requests.collect() {
            for metric in family.get_metric() {
                let entry = traffic.entry(label(metric, "namespace")).or_default();
                let count = metric.get_counter().get_value() as u64;
                entry.requests += count;
                if label(metric, "code") != "OK" {
                    entry.errors += count;
                }
            }
        }
        for family in self.request_seconds.collect() {
            for metric in family.get_metric() {
                let entry = traffic.entry(label(metric, "namespace")).or_default();
                entry.timed += metric.get_histogram().get_sample_count();
                let buckets = metric.get_histogram().get_bucket();
                if entry.buckets.is_empty() {
                    entry.buckets = buckets.iter().map(|b| (b.upper_bound(), 0)).collect();
                }
                for (sum, bucket) in entry.buckets.iter_mut().zip(buckets) {
                    sum.1 += bucket.cumulative_count();
                }
            }
        }
        traffic
    }
}
