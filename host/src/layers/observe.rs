//! The outermost tower layer: gives every call a request id (the client's `x-request-id`
//! when it sent a usable one, else a new random one), returns it in the response
//! metadata (for an error without a body, that is the status' metadata) and in every
//! error's details (see [`crate::observe::error_details`]), runs the call
//! with a task-local [`CallContext`] holding it (the log formatter adds it to every line
//! the call writes: a lookup per log line rather than a span per call), and, when
//! metrics are on, counts the call by namespace, method and status and times it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;

use crate::auth::methods::{rpc_of, Rpc};
use crate::observe::call::{self, CallContext, NamespaceName};
use crate::observe::traces::CallSpan;
use crate::shared::code_name;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest client-supplied request id kept; a longer or non-printable one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// `compression_min`: `server.compression_min_bytes`, for the calls whose client
/// accepts compressed responses.
#[derive(Clone)]
pub struct ObserveLayer {
    compression_min: usize,
}

impl ObserveLayer {
    pub fn new(compression_min: usize) -> Self {
        ObserveLayer { compression_min }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, compression_min: self.compression_min }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    compression_min: usize,
}

/// A request id: the client's if it is short printable ASCII, else 16 random bytes in hex.
/// Marked sensitive, which tells HPACK not to index it: a value unique to each response
/// would otherwise be added to the connection's header table on every call, evicting
/// the headers that do repeat (a measured 2-3 µs per call).
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let mut id = headers
        .get(REQUEST_ID_HEADER)
        .filter(|given| {
            let bytes = given.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_BYTES
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut id = [0u8; 32];
            for (pair, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
                pair[0] = HEX[usize::from(byte >> 4)];
                pair[1] = HEX[usize::from(byte & 0xf)];
            }
            // One allocation shared by every clone (the context, the response header,
            // error details); a copied slice would allocate again on its first clone.
            HeaderValue::from_maybe_shared(Bytes::from_owner(id))
                .expect("hex digits are a valid header value")
        });
    id.set_sensitive(true);
    id
}

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let id = request_id(request.headers());
        let rpc = rpc_of(request.uri().path());
        let span = crate::observe::traces::tracer().zip(rpc).and_then(|(tracer, (service, method, _))| {
            CallSpan::start(tracer, request.headers(), service, method, id.to_str().unwrap_or_default())
        });
        let metrics = crate::observe::metrics().zip(rpc);
        let context = CallContext::new(
            id.clone(),
            rpc.map_or("", |(_, method, _)| *method),
            span.as_ref().map(|span| span.context().clone()),
            accepts_compression(request.headers()).then_some(self.compression_min),
            span.is_some() || metrics.is_some(),
        );
        let call = self.inner.call(request);
        Box::pin(call::scope(context, async move {
            let result = call.await;
            let namespace = call::take_namespace();
            let mut response = result?;
            let headers = response.headers_mut();
            // An error without a body: the status is in the headers.
            let code_in_headers = headers.get("grpc-status").map(|code| parse_code(Some(code)));
            if code_in_headers.is_some() {
                crate::observe::error_details::add_request_id(headers, &id);
            }
            headers.insert(REQUEST_ID_HEADER, id.clone());
            if let (Some(span), Some(namespace)) = (&span, &namespace) {
                span.note_namespace(namespace.namespace_name());
            }
            let record = metrics.map(|(metrics, rpc)| {
                let record = Record { metrics, rpc, namespace, started, done: false };
                record.time_to_headers();
                record
            });
            let mut end = End { record, span };
            Ok(match code_in_headers {
                Some(code) => {
                    end.finish(code);
                    response
                }
                // A unary call's error comes without a body (above): its body needs
                // watching only to count or trace it. A stream's may end in an error.
                None if end.record.is_some() || end.span.is_some() || streams_responses(rpc) => {
                    response.map(|body| Body::new(Watched { body, end, request_id: id }))
                }
                None => response,
            })
        }))
    }
}

/// Whether the client accepts a response compressed in an encoding the server sends.
fn accepts_compression(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-accept-encoding").is_some_and(|accepted| {
        accepted.as_bytes().split(|&b| b == b',').any(|name| matches!(name.trim_ascii(), b"gzip" | b"zstd"))
    })
}

/// The server-streaming RPCs: the only ones whose error can follow data, in trailers.
const SERVER_STREAMING: [(&str, &str); 6] = [
    ("KeyValueService", "ScanStream"),
    ("KeyValueService", "GetStream"),
    ("PubSubService", "Subscribe"),
    ("StreamService", "Read"),
    ("StreamService", "JoinGroup"),
    ("MulticastRegistryService", "Subscribe"),
];

fn streams_responses(rpc: Option<&Rpc>) -> bool {
    rpc.is_some_and(|(service, method, _)| SERVER_STREAMING.contains(&(*service, *method)))
}

fn parse_code(code: Option<&HeaderValue>) -> i32 {
    code.and_then(|code| code.to_str().ok()).and_then(|code| code.parse().ok()).unwrap_or(2)
}

/// What is settled when a call's status is known: its count and its span.
struct End {
    record: Option<Record>,
    span: Option<CallSpan>,
}

impl End {
    fn finish(&mut self, code: i32) {
        if let Some(record) = self.record.as_mut() {
            record.count(code_name(code));
        }
        if let Some(span) = self.span.as_mut() {
            span.end(code);
        }
    }
}

/// One call's measurement, finished when its status is known.
struct Record {
    metrics: &'static crate::observe::Metrics,
    rpc: &'static Rpc,
    namespace: Option<Arc<dyn NamespaceName>>,
    started: Instant,
    done: bool,
}

impl Record {
    fn namespace(&self) -> &str {
        self.namespace.as_deref().map_or("", NamespaceName::namespace_name)
    }

    fn time_to_headers(&self) {
        let (service, method, _) = self.rpc;
        self.metrics
            .request_seconds
            .with_label_values(&[self.namespace(), service, method])
            .observe(self.started.elapsed().as_secs_f64());
    }

    fn count(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let (service, method, _) = self.rpc;
        self.metrics.requests.with_label_values(&[self.namespace(), service, method, code]).inc();
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.count("CANCELLED");
    }
}

/// A response body that adds the request id to error trailers and settles its call's
/// count and span when the trailers (and so the status) pass.
struct Watched {
    body: Body,
    end: End,
    request_id: HeaderValue,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        let code = match &mut polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_mut().map(|trailers| {
                crate::observe::error_details::add_request_id(trailers, &this.request_id);
                parse_code(trailers.get("grpc-status"))
            }),
            Poll::Ready(Some(Err(_))) => Some(13),
            Poll::Ready(None) => Some(0),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            this.end.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    /// `SERVER_STREAMING` lists exactly the protos' `returns (stream …)` RPCs.
    #[test]
    fn the_server_streaming_list_matches_the_protos() {
        let protos = [
            include_str!("../../../proto/prism/v1/keyvalue.proto"),
            include_str!("../../../proto/prism/v1/list.proto"),
            include_str!("../../../proto/prism/v1/queue.proto"),
            include_str!("../../../proto/prism/v1/pubsub.proto"),
            include_str!("../../../proto/prism/v1/stream.proto"),
            include_str!("../../../proto/prism/v1/multicast.proto"),
        ];
        let mut found = Vec::new();
        for proto in protos {
            let mut service = "";
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().unwrap_or_default();
                }
                if let Some(rest) = line.strip_prefix("rpc ") {
                    if line.contains("returns (stream ") {
                        found.push((service, rest.split('(').next().unwrap_or_default().trim()));
                    }
                }
            }
        }
        found.sort();
        let mut listed = super::SERVER_STREAMING.to_vec();
        listed.sort();
        assert_eq!(found, listed);
    }
}
