//! An OTLP/gRPC trace receiver that only counts spans: the collector a tracing
//! benchmark exports to, so the gateway's exporter does its full work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

struct Sink {
    spans: Arc<AtomicU64>,
    report: Option<PathBuf>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        let total = self.spans.fetch_add(spans as u64, Ordering::Relaxed) + spans as u64;
        if let Some(path) = &self.report {
            let _ = std::fs::write(path, format!("{total}\n"));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves until killed; with `report`, keeps the number of spans received in that file.
pub async fn serve(listen: SocketAddr, report: Option<PathBuf>) {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind the sink's address");
    println!("otlp sink on {}", listener.local_addr().expect("a bound address"));
    let sink = Sink { spans: Arc::default(), report };
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .expect("the sink serves");
}
