//! OpenTelemetry traces against a real OTLP/gRPC receiver the test runs (the trace
//! service from `opentelemetry-proto`): a call carrying a sampled W3C `traceparent`
//! becomes a server span under the caller's span, with the plugin call as its child;
//! with `sample_ratio = 0`, a call without one is not traced at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prism_acceptance::harness::Server;
use prism_api::*;
use tonic::{Code, Request};

/// Every span exported to it, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, format!("http://{address}"))
    }

    /// Waits until a span satisfies `found`.
    async fn wait_for(&self, what: &str, found: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, span)) = self.0.lock().unwrap().iter().find(|(_, span)| found(span)) {
                return span.clone();
            }
            assert!(Instant::now() < deadline, "no {what} among {:#?}", self.0.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|attribute| attribute.key == key)?.value.as_ref()?.value.as_ref()
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        Value::IntValue(value) => Some(*value),
        _ => None,
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn with_trace<T>(message: T, request_id: &str, sampled: bool) -> Request<T> {
    let mut request = Request::new(message);
    let flags = if sampled { "01" } else { "00" };
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-{flags}");
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    request.metadata_mut().insert("x-request-id", request_id.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_call_is_a_server_span_under_the_callers_with_the_plugin_call_as_its_child() {
    let (receiver, endpoint) = Receiver::start().await;
    let config = format!(
        r#"
[tracing]
otlp_endpoint = "{endpoint}"
sample_ratio = 0.0
service_name = "prism-under-test"

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "memstore" }}
"#
    );
    // Export every 200 ms rather than the SDK's default 5 s.
    let server = Server::start_with_env(&config, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let mut kv = server.keyvalue().await;

    // Neither a call without a traceparent (ratio 0) nor one whose caller did not sample.
    let mut untraced = Request::new(GetRequest { key: "k".into(), ..Default::default() });
    untraced.metadata_mut().insert("x-request-id", "not-traced".parse().unwrap());
    kv.get(untraced).await.unwrap();
    kv.get(with_trace(GetRequest { key: "k".into(), ..Default::default() }, "caller-not-sampled", false))
        .await
        .unwrap();

    let set = SetRequest { key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
    kv.set(with_trace(set, "traced-set", true)).await.unwrap();
    let nowhere = GetRequest { namespace: "nowhere".into(), key: "k".into(), ..Default::default() };
    assert_eq!(kv.get(with_trace(nowhere, "traced-miss", true)).await.unwrap_err().code(), Code::NotFound);

    let is_request = |id: &'static str| {
        move |span: &Span| string_attribute(span, "prism.request_id").as_deref() == Some(id)
    };
    let server_span = receiver.wait_for("span of the traced Set", is_request("traced-set")).await;
    assert_eq!(server_span.name, "prism.v1.KeyValueService/Set");
    assert_eq!(server_span.kind(), SpanKind::Server);
    assert_eq!(hex::encode(&server_span.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(hex::encode(&server_span.parent_span_id), CALLER_SPAN_ID, "under the caller's span");
    assert_eq!(string_attribute(&server_span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(string_attribute(&server_span, "rpc.service").as_deref(), Some("prism.v1.KeyValueService"));
    assert_eq!(string_attribute(&server_span, "rpc.method").as_deref(), Some("Set"));
    assert_eq!(string_attribute(&server_span, "prism.namespace").as_deref(), Some("default"));
    assert_eq!(int_attribute(&server_span, "rpc.grpc.status_code"), Some(0));

    let plugin_span = receiver
        .wait_for("plugin span under the Set", |span| span.parent_span_id == server_span.span_id)
        .await;
    assert_eq!(plugin_span.name, "plugin keyvalue_basic");
    assert_eq!(plugin_span.trace_id, server_span.trace_id);
    assert_eq!(string_attribute(&plugin_span, "prism.plugin").as_deref(), Some("memstore"));
    assert!(plugin_span.start_time_unix_nano >= server_span.start_time_unix_nano);
    assert!(plugin_span.end_time_unix_nano <= server_span.end_time_unix_nano);

    let miss = receiver.wait_for("span of the refused Get", is_request("traced-miss")).await;
    assert_eq!(int_attribute(&miss, "rpc.grpc.status_code"), Some(Code::NotFound as i64));
    assert_eq!(string_attribute(&miss, "prism.namespace"), None, "an unknown namespace is not named");

    let spans = receiver.0.lock().unwrap().clone();
    assert!(spans.iter().all(|(service, _)| service == "prism-under-test"), "{spans:#?}");
    for untraced in ["not-traced", "caller-not-sampled"] {
        assert!(
            !spans.iter().any(|(_, span)| is_request(untraced)(span)),
            "{untraced} was traced: {spans:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sample_ratio_one_a_call_without_a_traceparent_starts_its_own_trace() {
    let (receiver, endpoint) = Receiver::start().await;
    let config = format!(
        "[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\n\n\
         [plugins.memstore]\npath = \"{{memstore}}\"\n\n\
         [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = {{ plugin = \"memstore\" }}\n"
    );
    let server = Server::start_with_env(&config, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let mut kv = server.keyvalue().await;
    let mut request = Request::new(GetRequest { key: "k".into(), ..Default::default() });
    request.metadata_mut().insert("x-request-id", "root-call".parse().unwrap());
    kv.get(request).await.unwrap();
    let root = receiver
        .wait_for("span of the Get", |span| {
            string_attribute(span, "prism.request_id").as_deref() == Some("root-call")
        })
        .await;
    assert!(root.parent_span_id.is_empty(), "a root span: {root:?}");
    assert_eq!(root.trace_id.len(), 16);
    assert_eq!(string_attribute(&root, "prism.namespace").as_deref(), Some("default"));
    receiver.wait_for("plugin span under the Get", |span| span.parent_span_id == root.span_id).await;
}
