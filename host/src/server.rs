//! The gRPC server: Prism's services plus grpc.health.v1 and reflection, a health
//! poller per namespace, deadlines, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plugin_abi::HealthStatus;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::admin_service_server::AdminServiceServer;
use crate::api::key_value_service_server::KeyValueServiceServer;
use crate::api::list_service_server::ListServiceServer;
use crate::api::multicast_registry_service_server::MulticastRegistryServiceServer;
use crate::api::pub_sub_service_server::PubSubServiceServer;
use crate::api::queue_service_server::QueueServiceServer;
use crate::api::stream_service_server::StreamServiceServer;
use crate::deadline::DeadlineLayer;
use crate::gateway::Gateway;
use crate::reload::Reloader;
use crate::service::{
    admin::AdminApi, keyvalue::KeyValueApi, list::ListApi, multicast::MulticastApi, pubsub::PubSubApi,
    queue::QueueApi, stream::StreamApi,
};

/// Binds the listen address, reporting a clear error when it is taken.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("cannot listen on {address}: {error}")))
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish for up to the
/// configured grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let settings = gateway.settings.clone();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    for name in [
        "prism.v1.KeyValueService",
        "prism.v1.ListService",
        "prism.v1.QueueService",
        "prism.v1.PubSubService",
        "prism.v1.StreamService",
        "prism.v1.MulticastRegistryService",
        "prism.v1.AdminService",
    ] {
        health_reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    let poller = tokio::spawn(poll_health(
        gateway.clone(),
        reloader.clone(),
        health_reporter.clone(),
        Duration::from_millis(settings.health_interval_ms),
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the generated descriptors are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the generated descriptors are valid");

    let server_limit =
        (settings.request_timeout_ms > 0).then(|| Duration::from_millis(settings.request_timeout_ms));
    let mut builder = Server::builder().layer(DeadlineLayer::new(server_limit));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: refusing new calls, letting in-flight calls finish");
        let _ = stopping_tx.send(());
    };
    // tonic refuses messages over 4 MiB by default; let any value the config allows through.
    let max_message = (settings.max_value_bytes + 64 * 1024).max(4 * 1024 * 1024);
    let server = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            KeyValueServiceServer::new(KeyValueApi::new(gateway.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            ListServiceServer::new(ListApi::new(gateway.clone())).max_decoding_message_size(max_message),
        )
        .add_service(
            QueueServiceServer::new(QueueApi::new(gateway.clone())).max_decoding_message_size(max_message),
        )
        .add_service(
            PubSubServiceServer::new(PubSubApi::new(gateway.clone())).max_decoding_message_size(max_message),
        )
        .add_service(
            StreamServiceServer::new(StreamApi::new(gateway.clone())).max_decoding_message_size(max_message),
        )
        .add_service(
            MulticastRegistryServiceServer::new(MulticastApi::new(gateway.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(AdminServiceServer::new(AdminApi::new(gateway.clone(), reloader)))
        .serve_with_incoming_shutdown(incoming(listener), signal);
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let result = tokio::select! {
        result = server => result,
        () = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = settings.shutdown_grace_ms, "calls still running after the grace period; stopping anyway");
            Ok(())
        }
    };
    poller.abort();
    gateway.shutdown().await;
    result
}

/// Consecutive unhealthy polls after which a namespace's instances are recreated.
const UNHEALTHY_POLLS_BEFORE_RECREATE: u32 = 3;
const MAX_RECREATE_BACKOFF: Duration = Duration::from_secs(60);

/// A namespace that keeps failing its health checks, and when to try recreating it next.
struct Failing {
    polls: u32,
    next_try: tokio::time::Instant,
    backoff: Duration,
}

async fn poll_health(
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
        // A namespace a reload removed is no longer a health service at all.
        for gone in reported.iter().filter(|name| !routing.namespaces.contains_key(*name)) {
            reporter.clear_service_status(gone).await;
        }
        reported = routing.namespaces.keys().cloned().collect();
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
            reporter.set_service_status(&namespace.name, status).await;
            if health.status != HealthStatus::Unhealthy {
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

/// Accepted connections with Nagle's algorithm off: gRPC writes small frames and waits
/// for replies, so coalescing delays every call (up to the peer's delayed-ACK timer).
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
