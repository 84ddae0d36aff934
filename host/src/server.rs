//! The gRPC server: Prism's services plus grpc.health.v1 and reflection, a health
//! poller per namespace, deadlines, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use tonic::codec::CompressionEncoding;

use crate::api::admin_service_server::AdminServiceServer;
use crate::api::key_value_service_server::KeyValueServiceServer;
use crate::api::list_service_server::ListServiceServer;
use crate::api::multicast_registry_service_server::MulticastRegistryServiceServer;
use crate::api::pub_sub_service_server::PubSubServiceServer;
use crate::api::queue_service_server::QueueServiceServer;
use crate::api::stream_service_server::StreamServiceServer;
use crate::connections::Limiter;
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
/// A Prism service as the server adds it: messages up to `max_message` bytes (once
/// decompressed), and gzip and zstd accepted on requests and used on responses when the
/// client accepts them (`crate::service::reply` leaves small unary responses as they are).
macro_rules! api_service {
    ($server:expr, $max_message:expr) => {
        $server
            .max_decoding_message_size($max_message)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
    };
}

pub async fn serve(
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::TlsSource>>,
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
    let poller = tokio::spawn(crate::health::supervise(
        gateway.clone(),
        reloader.clone(),
        health_reporter.clone(),
        Duration::from_millis(settings.health_interval_ms),
    ));

    let stores = Arc::new(crate::store::Stores::new(gateway.clone()));
    let sweeper = (settings.claim_check_sweep_interval_ms > 0).then(|| {
        let every = Duration::from_millis(settings.claim_check_sweep_interval_ms);
        tokio::spawn(crate::store::sweeper::sweep_on_schedule(stores.clone(), every))
    });
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
    // tonic refuses messages over 4 MiB by default; let any value the config allows through.
    let max_message = (settings.max_value_bytes + 64 * 1024).max(4 * 1024 * 1024);
    let keepalive =
        (settings.keepalive_interval_ms > 0).then(|| Duration::from_millis(settings.keepalive_interval_ms));
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(settings.max_concurrent_streams))
        .http2_max_header_list_size(Some(settings.max_header_list_bytes))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_millis(settings.keepalive_timeout_ms.max(1))))
        .layer(crate::layers::stack(gateway.clone(), max_message, server_limit));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: refusing new calls, letting in-flight calls finish");
        let _ = stopping_tx.send(());
    };
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api_service!(KeyValueServiceServer::new(KeyValueApi::new(stores.clone())), max_message))
        .add_service(api_service!(ListServiceServer::new(ListApi::new(stores.clone())), max_message))
        .add_service(api_service!(QueueServiceServer::new(QueueApi::new(stores.clone())), max_message))
        .add_service(api_service!(PubSubServiceServer::new(PubSubApi::new(stores.clone())), max_message))
        .add_service(api_service!(StreamServiceServer::new(StreamApi::new(stores.clone())), max_message))
        .add_service(api_service!(
            MulticastRegistryServiceServer::new(MulticastApi::new(stores.clone())),
            max_message
        ))
        .add_service(api_service!(
            AdminServiceServer::new(AdminApi::new(gateway.clone(), reloader, stores.clone())),
            max_message
        ));
    let tls_watch = tls.as_ref().map(|source| tokio::spawn(source.clone().watch()));
    let server: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            Some(source) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls::incoming(listener, source, Limiter::new(settings.max_connections)),
                signal,
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(
                crate::connections::limit(incoming(listener), Limiter::new(settings.max_connections)),
                signal,
            )),
        };
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let result = tokio::select! {
        result = server => result,
        () = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = settings.shutdown_grace_ms, "calls still running after the grace period; stopping anyway");
            Ok(())
        }
    };
    poller.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(watch) = tls_watch {
        watch.abort();
    }
    gateway.shutdown().await;
    result
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
