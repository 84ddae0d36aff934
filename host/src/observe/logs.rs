//! Log lines written while a call is served carry its request id and method, added by
//! the event formatter from the call's task-local context ([`super::layer`]): the cost
//! is paid per log line, not per call.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps an event format: text lines get `request_id=… method=… ` in front, JSON objects
/// get `"request_id"` and `"method"` members.
pub struct WithCall<F> {
    inner: F,
    json: bool,
}

impl<F> WithCall<F> {
    pub fn text(inner: F) -> Self {
        WithCall { inner, json: false }
    }

    pub fn json(inner: F) -> Self {
        WithCall { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithCall<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let call = super::call::with_current_call(|id, method| (id.to_owned(), method));
        let Some((id, method)) = call else { return self.inner.format_event(ctx, writer, event) };
        if !self.json {
            write!(writer, "request_id={id} method={method} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // The id is printable ASCII without quotes or backslashes (request_id checks it).
        let members = format!("{{\"request_id\":{},\"method\":\"{method}\",", serde_json::Value::from(id));
        match line.strip_prefix('{') {
            Some(rest) => writer.write_str(&(members + rest)),
            None => writer.write_str(&line),
        }
    }
}
