//! Deadlines: every call ends by its client's `grpc-timeout` (or the server's
//! `request_timeout_ms`, whichever is sooner) with DEADLINE_EXCEEDED, and the plugin
//! call behind it is cancelled by being dropped.
//!
//! tonic enforces `grpc-timeout` too, but answers CANCELLED; this layer sits inside
//! tonic's and fires a little earlier so clients get the status the gRPC spec names.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::Status;

#[derive(Clone)]
pub struct DeadlineLayer {
    server_limit: Option<Duration>,
}

impl DeadlineLayer {
    pub fn new(server_limit: Option<Duration>) -> Self {
        DeadlineLayer { server_limit }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner, server_limit: self.server_limit }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    server_limit: Option<Duration>,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
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
        let client =
            request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        // An upload runs for as long as its client sends, a sweep for as long as the
        // object store takes to list: only the client's own deadline bounds them.
        let server_limit = match request.uri().path() {
            "/prism.v1.KeyValueService/SetStream" | "/prism.v1.AdminService/SweepClaimChecks" => None,
            _ => self.server_limit,
        };
        let (limit, whose) = match (client, server_limit) {
            (Some(client), Some(server)) if server < client => (Some(server), "server request_timeout_ms"),
            (Some(client), _) => (Some(client), "client deadline"),
            (None, server) => (server, "server request_timeout_ms"),
        };
        let call = self.inner.call(request);
        // Timed from now, not from the first poll: tonic's own timer starts when this
        // returns, and a future first polled late would otherwise lose the race to it.
        let expiry = limit.map(|limit| tokio::time::Instant::now() + limit.saturating_sub(margin(limit)));
        Box::pin(async move {
            let (Some(limit), Some(expiry)) = (limit, expiry) else { return call.await };
            match tokio::time::timeout_at(expiry, call).await {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the {whose} of {} ms passed before the call completed",
                    limit.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

/// How much earlier than tonic's own timer (started a moment before ours) to fire.
fn margin(limit: Duration) -> Duration {
    (limit / 10).clamp(Duration::from_millis(1), Duration::from_millis(20))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn parses_grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
