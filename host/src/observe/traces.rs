//! OpenTelemetry traces (`[tracing]`): one server span per Prism call, parented on the
//! caller's W3C `traceparent` when it sent one, and one child span per plugin call made
//! while serving it. Spans are exported over OTLP/gRPC by the SDK's batch processor
//! (its own thread; a full queue drops spans rather than slowing calls).
//!
//! Off unless configured: then [`tracer`] is `None` and a call pays one atomic load.
//! On, the sampling decision comes first (the caller's, from its `traceparent`, else a
//! draw against `sample_ratio`), so a call that is not traced builds no span at all.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use plugin_abi::{ErrorCode, Interface};

use super::config::TracingConfig;
use crate::shared::code_name;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static SAMPLE_RATIO: OnceLock<f64> = OnceLock::new();

/// Spans waiting for export; past this, new ones are dropped rather than slow calls.
const QUEUE_SPANS: usize = 16_384;
/// Spans per export request.
const EXPORT_BATCH: usize = 2_048;

/// The tracer, when `[tracing]` is configured.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Starts exporting. Must run inside the gateway's tokio runtime: the exporter's gRPC
/// channel lives on it. Later calls (a reload) change nothing.
pub fn start(config: &TracingConfig) -> Result<(), String> {
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .with_timeout(Duration::from_millis(config.export_timeout_ms))
        .build()
        .map_err(|error| format!("tracing.otlp_endpoint: cannot set up the OTLP exporter: {error}"))?;
    // Built on the defaults, which read the OTEL_BSP_* environment variables.
    let batching = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE_SPANS)
        .with_max_export_batch_size(EXPORT_BATCH)
        .build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batching).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Only calls already chosen for tracing reach the SDK (see `CallSpan::start`).
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(Resource::builder_empty().with_service_name(config.service_name.clone()).build())
        .build();
    let _ = SAMPLE_RATIO.set(config.sample_ratio);
    let _ = TRACER.set(provider.tracer("prism"));
    let _ = PROVIDER.set(provider);
    Ok(())
}

/// Sends the spans still queued; called once the server has stopped.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        // Blocking (it waits for the export thread), and the export needs this runtime.
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// One call's server span, ended when its status is known (as `CANCELLED` if the
/// client went away first).
pub struct CallSpan {
    context: Context,
    ended: bool,
}

impl CallSpan {
    /// The call's span, if the call is traced: when its `traceparent` says the caller
    /// sampled it, or, without a caller's decision, one call in `1 / sample_ratio`.
    pub fn start(
        tracer: &SdkTracer,
        headers: &http::HeaderMap,
        service: &str,
        method: &str,
        request_id: &str,
    ) -> Option<CallSpan> {
        let parent = if headers.contains_key("traceparent") {
            TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(headers))
        } else {
            Context::new()
        };
        let caller = parent.span();
        let caller = caller.span_context();
        let traced = if caller.is_valid() {
            caller.is_sampled()
        } else {
            fastrand::f64() < SAMPLE_RATIO.get().copied().unwrap_or(0.0)
        };
        if !traced {
            return None;
        }
        let span = tracer
            .span_builder(format!("prism.v1.{service}/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", format!("prism.v1.{service}")),
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("prism.request_id", request_id.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        Some(CallSpan { context: parent.with_span(span), ended: false })
    }

    /// The context a child span of this call is started in.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn note_namespace(&self, namespace: &str) {
        self.context.span().set_attribute(KeyValue::new("prism.namespace", namespace.to_owned()));
    }

    pub fn end(&mut self, code: i32) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let span = self.context.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        if server_fault(code) {
            span.set_status(Status::error(code_name(code)));
        }
        span.end();
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // The response was dropped before its status: the client went away.
        self.end(1);
    }
}

/// The codes OpenTelemetry's RPC conventions count as the server's error on a server
/// span; the others (NOT_FOUND, INVALID_ARGUMENT, …) are the caller's.
fn server_fault(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Records a finished plugin call as a child of the current call's span, if the call is
/// traced (stream pumps and health checks run outside any call and are not).
pub fn plugin_call(plugin: &str, interface: Interface, elapsed: Duration, error: Option<ErrorCode>) {
    let Some(tracer) = tracer() else { return };
    let Some(Some(parent)) = super::call::with_current_trace(Context::clone) else { return };
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let end = SystemTime::now();
    let mut span = tracer
        .span_builder(format!("plugin {}", interface.name()))
        .with_kind(SpanKind::Client)
        .with_start_time(end - elapsed)
        .with_attributes([
            KeyValue::new("prism.plugin", plugin.to_owned()),
            KeyValue::new("prism.interface", interface.name()),
        ])
        .start_with_context(tracer, &parent);
    if let Some(code) = error {
        span.set_status(Status::Error { description: Cow::Owned(format!("{code:?}")) });
    }
    span.end_with_timestamp(end);
}
