//! A request larger than the server's message limit is RESOURCE_EXHAUSTED, as gRPC's
//! status-code guide prescribes, with a message that says what to change. tonic's codec
//! answers such a request with OUT_OF_RANGE ("decoded message length too large") before
//! any handler runs; this layer rewrites exactly that answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::body::Body;

#[derive(Clone)]
pub struct OversizeLayer {
    limit: usize,
}

impl OversizeLayer {
    /// `limit`: the decoding limit the services were given, for the message.
    pub fn new(limit: usize) -> Self {
        OversizeLayer { limit }
    }
}

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize { inner, limit: self.limit }
    }
}

#[derive(Clone)]
pub struct Oversize<S> {
    inner: S,
    limit: usize,
}

/// What tonic's codec says when a message is over the limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";
/// tonic's RESOURCE_EXHAUSTED for a compressed request that inflates past the limit.
const TONIC_INFLATES_TOO_LARGE: &str = "Error decompressing: size limit";

impl<S, B> tower::Service<http::Request<B>> for Oversize<S>
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
        let limit = self.limit;
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            explain_too_large(response.headers_mut(), limit);
            Ok(response)
        })
    }
}

/// Rewrites tonic's answer to a request over `limit` bytes in `headers` (a message over
/// it, or a compressed one that inflates past it); any other response is left alone.
fn explain_too_large(headers: &mut http::HeaderMap, limit: usize) {
    let inflated = match headers.get("grpc-status") {
        Some(code) if code == "11" => false,
        Some(code) if code == "8" => true,
        _ => return,
    };
    let expected = if inflated { TONIC_INFLATES_TOO_LARGE } else { TONIC_TOO_LARGE };
    let too_large = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| percent_decoded(message).starts_with(expected));
    if too_large {
        let message = format!(
            "the request is larger{} than this server accepts ({limit} bytes); values are limited by server.max_value_bytes",
            if inflated { " once decompressed" } else { "" }
        );
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        if let Ok(value) = HeaderValue::from_str(&percent_encoded(&message)) {
            headers.insert("grpc-message", value);
        }
    }
}

/// grpc-message is percent-encoded (spaces as %20).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[at + 1..at + 3], 16) {
                out.push(byte);
                at += 3;
                continue;
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_percent_coding_round_trips() {
        let message = "Error, decoded message length too large: found 5 bytes, 100% sure";
        assert_eq!(percent_decoded(&percent_encoded(message)), message);
        assert_eq!(percent_decoded("Error,%20decoded"), "Error, decoded");
        assert_eq!(percent_decoded("trailing %2"), "trailing %2");
    }
}
