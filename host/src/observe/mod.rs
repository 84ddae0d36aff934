//! What an operator watches: Prometheus metrics, request ids, and the admin HTTP
//! listener that serves them (`[admin]`). Off unless `[admin]` is configured; then each
//! call costs a few atomic adds and one label lookup.
//!
//! Label values are bounded: namespaces come from the config (a call naming an unknown
//! namespace is counted under `""`), services and methods from the protos, codes from
//! gRPC's seventeen; no key, topic or principal is ever a label.

pub mod call;
pub mod config;
pub mod error_details;
pub mod logs;
pub mod traces;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plugin_abi::host::CallObserver;
use plugin_abi::{ErrorCode, Interface};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    open_streams: IntGaugeVec,
    healthy: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub library_loads: IntCounterVec,
    libraries_mapped: IntGauge,
    plugin_call_seconds: HistogramVec,
    backend_errors: IntCounterVec,
    outbox_messages: IntGaugeVec,
    outbox_deepest: IntGaugeVec,
    subscriber_dropped: IntCounterVec,
    unreadable_messages: IntCounterVec,
    reclaimed_objects: IntCounterVec,
    reclaimed_bytes: IntCounterVec,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The metrics, when recording is on (an `[admin]` listener serves them).
pub fn metrics() -> Option<&'static Metrics> {
    if ENABLED.load(Ordering::Relaxed) {
        METRICS.get()
    } else {
        None
    }
}

/// Turns recording on for the rest of the process.
pub fn enable() -> &'static Metrics {
    let metrics = METRICS.get_or_init(Metrics::new);
    ENABLED.store(true, Ordering::Relaxed);
    metrics
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    registry.register(Box::new(counter.clone())).expect("registered once");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    registry.register(Box::new(gauge.clone())).expect("registered once");
    gauge
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "prism_requests_total",
            "Prism RPCs finished, by namespace, service, method and gRPC status code",
            &["namespace", "service", "method", "code"],
        );
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "prism_request_duration_seconds",
                "Time from a Prism RPC's arrival to its response headers (for streams: until the stream opened)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["namespace", "service", "method"],
        )
        .expect("a valid metric definition");
        registry.register(Box::new(request_seconds.clone())).expect("registered once");
        let in_flight = gauge(
            &registry,
            "prism_requests_in_flight",
            "Calls being served now (a server stream only while it is opened)",
            &["namespace"],
        );
        let open_streams = gauge(
            &registry,
            "prism_streams_open",
            "Server streams open now: subscriptions, stream reads, consumer-group memberships",
            &["namespace"],
        );
        let healthy = gauge(
            &registry,
            "prism_namespace_healthy",
            "1 when every instance of the namespace answered its last health check serving or degraded",
            &["namespace"],
        );
        let reloads =
            counter(&registry, "prism_reloads_total", "Config and plugin reloads, by result", &["result"]);
        let library_loads = counter(
            &registry,
            "prism_library_loads_total",
            "Plugin libraries checked for loading, by configured plugin and result",
            &["plugin", "result"],
        );
        let libraries_mapped = IntGauge::new(
            "prism_libraries_mapped",
            "Distinct plugin libraries this process has mapped (never unmapped until exit)",
        )
        .expect("a valid metric definition");
        registry.register(Box::new(libraries_mapped.clone())).expect("registered once");
        let plugin_call_seconds = HistogramVec::new(
            HistogramOpts::new(
                "prism_plugin_call_duration_seconds",
                "Time a plugin took to answer one interface call (stream items excluded)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["plugin", "interface"],
        )
        .expect("a valid metric definition");
        registry.register(Box::new(plugin_call_seconds.clone())).expect("registered once");
        let backend_errors = counter(
            &registry,
            "prism_backend_errors_total",
            "Interface calls a plugin answered with an error, by configured plugin and error code",
            &["plugin", "code"],
        );
        let outbox_messages = gauge(
            &registry,
            "prism_subscription_outbox_messages",
            "Messages waiting in the outboxes of the namespace's open subscriptions, summed",
            &["namespace"],
        );
        let outbox_deepest = gauge(
            &registry,
            "prism_subscription_outbox_deepest_messages",
            "Messages waiting in the namespace's fullest subscription outbox (server.subscriber_buffer caps it)",
            &["namespace"],
        );
        let subscriber_dropped = counter(
            &registry,
            "prism_subscriber_dropped_messages_total",
            "Messages dropped for subscribers too slow to read them (slow_subscriber = \"drop_oldest\")",
            &["namespace"],
        );
        let unreadable_messages = counter(
            &registry,
            "prism_unreadable_messages_total",
            "Delivered messages whose claimed payload could not be read: skipped (redelivered later) or acked (given up after server.claim_check_max_deliveries)",
            &["namespace", "outcome"],
        );
        let reclaimed_objects = counter(
            &registry,
            "prism_claim_check_reclaimed_objects_total",
            "Claim-check objects nothing referred to, deleted by the sweeper",
            &["namespace"],
        );
        let reclaimed_bytes = counter(
            &registry,
            "prism_claim_check_reclaimed_bytes_total",
            "Bytes of the claim-check objects the sweeper deleted",
            &["namespace"],
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("registered once");
        Metrics {
            registry,
            requests,
            request_seconds,
            in_flight,
            open_streams,
            healthy,
            reloads,
            library_loads,
            libraries_mapped,
            plugin_call_seconds,
            backend_errors,
            outbox_messages,
            outbox_deepest,
            subscriber_dropped,
            unreadable_messages,
            reclaimed_objects,
            reclaimed_bytes,
        }
    }

    /// Counts a delivered message of `namespace` whose claimed payload could not be read,
    /// by what became of it (`skipped` or `acked`).
    pub fn unreadable_message(&self, namespace: &str, outcome: &str) {
        self.unreadable_messages.with_label_values(&[namespace, outcome]).inc();
    }

    /// The dropped-messages counter of `namespace`'s subscribers.
    pub fn subscriber_dropped(&self, namespace: &str) -> prometheus::IntCounter {
        self.subscriber_dropped.with_label_values(&[namespace])
    }

    /// The latency histograms of the configured plugin `plugin`, one per
    /// [`Interface::ALL`] entry, resolved once so a call costs an atomic add.
    fn plugin_latency(&self, plugin: &str) -> Vec<Histogram> {
        Interface::ALL
            .iter()
            .map(|interface| self.plugin_call_seconds.with_label_values(&[plugin, interface.name()]))
            .collect()
    }

    /// The Prometheus text exposition, with the gauges set from `namespaces` now.
    pub fn render(&self, namespaces: &[NamespaceGauges], libraries_mapped: usize) -> String {
        self.in_flight.reset();
        self.open_streams.reset();
        self.healthy.reset();
        self.outbox_messages.reset();
        self.outbox_deepest.reset();
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for namespace in namespaces {
            let name = namespace.name.as_str();
            self.in_flight.with_label_values(&[name]).set(namespace.in_flight);
            self.open_streams.with_label_values(&[name]).set(namespace.open_streams);
            self.healthy.with_label_values(&[name]).set(i64::from(namespace.serving));
            if let Some(waiting) = &namespace.outboxes {
                self.outbox_messages.with_label_values(&[name]).set(as_gauge(waiting.iter().sum()));
                self.outbox_deepest
                    .with_label_values(&[name])
                    .set(as_gauge(waiting.iter().copied().max().unwrap_or(0)));
            }
        }
        self.libraries_mapped.set(i64::try_from(libraries_mapped).unwrap_or(i64::MAX));
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|error| {
            tracing::error!("cannot encode the metrics: {error}");
            String::new()
        })
    }
}

/// One namespace's gauges, as read when the metrics are rendered.
pub struct NamespaceGauges {
    pub name: String,
    pub in_flight: i64,
    pub open_streams: i64,
    pub serving: bool,
    /// Messages waiting in each subscriber's outbox (pub/sub namespaces only).
    pub outboxes: Option<Vec<usize>>,
}

/// The observer for instances of the configured plugin `plugin`, when metrics or
/// traces are on.
pub fn plugin_observer(plugin: &str) -> Option<Arc<dyn CallObserver>> {
    let metrics = metrics();
    if metrics.is_none() && traces::tracer().is_none() {
        return None;
    }
    let metrics = metrics.map(|metrics| (metrics, metrics.plugin_latency(plugin)));
    Some(Arc::new(PluginCalls { plugin: plugin.to_owned(), metrics }))
}

struct PluginCalls {
    plugin: String,
    /// With the latency histogram of each [`Interface::ALL`] entry, in that order.
    metrics: Option<(&'static Metrics, Vec<Histogram>)>,
}

impl CallObserver for PluginCalls {
    fn observed(&self, interface: Interface, elapsed: Duration, error: Option<ErrorCode>) {
        if let Some((metrics, latency)) = &self.metrics {
            // `Interface::ALL` lists the variants in declaration order.
            latency[interface as usize].observe(elapsed.as_secs_f64());
            if let Some(code) = error {
                let code = crate::shared::code_name(i32::from(crate::shared::grpc_code(code)));
                metrics.backend_errors.with_label_values(&[self.plugin.as_str(), code]).inc();
            }
        }
        traces::plugin_call(&self.plugin, interface, elapsed, error);
    }
}

/// Counts a reload by its result (`applied` or `refused`).
pub fn count_reload(applied: bool) {
    if let Some(metrics) = metrics() {
        metrics.reloads.with_label_values(&[if applied { "applied" } else { "refused" }]).inc();
    }
}

/// Counts what a claim-check sweep of `namespace` deleted.
pub fn claim_check_reclaimed(namespace: &str, objects: u64, bytes: u64) {
    if let Some(metrics) = metrics() {
        metrics.reclaimed_objects.with_label_values(&[namespace]).inc_by(objects);
        metrics.reclaimed_bytes.with_label_values(&[namespace]).inc_by(bytes);
    }
}

/// Counts a library a configured plugin asked for, by result (`loaded` or `refused`).
pub fn count_library_load(plugin: &str, loaded: bool) {
    if let Some(metrics) = metrics() {
        metrics.library_loads.with_label_values(&[plugin, if loaded { "loaded" } else { "refused" }]).inc();
    }
}

#[cfg(test)]
mod tests {
    use plugin_abi::Interface;

    /// `PluginCalls` finds an interface's histogram at `interface as usize`.
    #[test]
    fn interfaces_are_listed_in_declaration_order() {
        for (index, interface) in Interface::ALL.iter().enumerate() {
            assert_eq!(*interface as usize, index, "{interface:?}");
        }
    }
}
