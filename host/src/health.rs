//! Health supervision: every namespace's instances are polled at once, each check under
//! a timeout, the result is reported on `grpc.health.v1`, and a namespace that stays
//! unhealthy is recreated (through the reloader) with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use plugin_abi::HealthStatus;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::gateway::Gateway;
use crate::reload::Reloader;

/// Consecutive unhealthy polls after which a namespace's instances are recreated.
const UNHEALTHY_POLLS_BEFORE_RECREATE: u32 = 3;
const MAX_RECREATE_BACKOFF: Duration = Duration::from_secs(60);

/// A namespace that keeps failing its health checks, and when to try recreating it next.
struct Failing {
    polls: u32,
    next_try: tokio::time::Instant,
    backoff: Duration,
}

/// Polls every namespace's health at `every`, reports it on `grpc.health.v1`, and
/// recreates a namespace that stays unhealthy, with backoff.
pub async fn supervise(
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    mut reporter: HealthReporter,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    let mut failing: std::collections::HashMap<String, Failing> = Default::default();
    let mut reported: std::collections::BTreeSet<String> = Default::default();
    loop {
        tick.tick().await;
        let routing = gateway.routing();
        failing.retain(|name, _| routing.namespaces.contains_key(name));
        // grpc.health.v1 answers anyone, so with [auth] it must not tell which namespaces
        // exist: their health is then only in AdminService (admin permission).
        let public = routing.auth.is_none();
        // A namespace a reload removed is no longer a health service at all.
        for gone in reported.iter().filter(|name| !public || !routing.namespaces.contains_key(*name)) {
            reporter.clear_service_status(gone).await;
        }
        reported = if public { routing.namespaces.keys().cloned().collect() } else { Default::default() };
        let mut recreate = Vec::new();
        // Every namespace at once: one slow or hung plugin must not stall the others' reports.
        let timeout = health_timeout(every);
        let checks = routing.namespaces.values().map(|namespace| async move {
            let before = namespace.health().status;
            (namespace, before, namespace.refresh_health(timeout).await)
        });
        for (namespace, before, health) in futures_util::future::join_all(checks).await {
            let status = match health.status {
                HealthStatus::Serving | HealthStatus::Degraded => ServingStatus::Serving,
                HealthStatus::Unhealthy => ServingStatus::NotServing,
            };
            if health.status != before {
                tracing::warn!(namespace = %namespace.name, status = ?health.status, message = %health.message, "namespace health changed");
            }
            if public {
                reporter.set_service_status(&namespace.name, status).await;
            }
            // A plugin process being restarted (or given up on after a crash loop) is its
            // supervisor's to recover: recreating the namespace would undo the crash-loop stop.
            if health.status != HealthStatus::Unhealthy || namespace.process_recovering() {
                failing.remove(&namespace.name);
                continue;
            }
            let now = tokio::time::Instant::now();
            let state = failing.entry(namespace.name.clone()).or_insert(Failing {
                polls: 0,
                next_try: now,
                backoff: Duration::from_secs(1),
            });
            state.polls += 1;
            if state.polls >= UNHEALTHY_POLLS_BEFORE_RECREATE && now >= state.next_try {
                recreate.push(namespace.name.clone());
            }
        }
        drop(routing);
        for name in recreate {
            match reloader.recreate(&name).await {
                Ok(()) => {
                    tracing::warn!(namespace = %name, "recreated the namespace's instances after repeated failed health checks");
                    failing.remove(&name);
                }
                Err(why) => {
                    let state = failing.get_mut(&name).expect("inserted above");
                    tracing::error!(namespace = %name, retry_in_ms = state.backoff.as_millis() as u64, "could not recreate an unhealthy namespace: {why}");
                    state.next_try = tokio::time::Instant::now() + state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_RECREATE_BACKOFF);
                }
            }
        }
    }
}

/// How long one health check may take: a little under the poll interval, at most 5 s.
fn health_timeout(every: Duration) -> Duration {
    (every * 4 / 5).clamp(Duration::from_millis(50), Duration::from_secs(5))
}
