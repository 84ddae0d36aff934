//! The call the current task serves, as the observability code sees it: its request id,
//! method, trace context and, once the call names one, its namespace. The observe layer
//! ([`crate::layers::observe`]) opens the scope; the log formatter, the tracer and the
//! namespace lookup read or fill it from wherever the call has got to.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use http::HeaderValue;

/// The namespace a call resolved, as its call context sees it: by its name, for labels.
/// The context holds the namespace itself (a reference count, not a copy of the name)
/// until the response ends.
pub trait NamespaceName: Send + Sync {
    fn namespace_name(&self) -> &str;
}

/// What the gateway knows of the call the current task is serving.
pub struct CallContext {
    request_id: HeaderValue,
    method: &'static str,
    /// The namespace the call resolved, for its metric labels and span; `None` inside
    /// when neither is on (keeping it would cost two shared reference counts a call).
    namespace: Option<RefCell<Option<Arc<dyn NamespaceName>>>>,
    /// The call's span context, when the call is traced: plugin calls become its children.
    trace: Option<opentelemetry::Context>,
    /// When the client accepts compressed responses: the smallest one worth compressing.
    compression_floor: Option<usize>,
}

impl CallContext {
    /// `keeps_namespace`: whether the call's namespace is wanted when it ends.
    pub fn new(
        request_id: HeaderValue,
        method: &'static str,
        trace: Option<opentelemetry::Context>,
        compression_floor: Option<usize>,
        keeps_namespace: bool,
    ) -> Self {
        let namespace = keeps_namespace.then(|| RefCell::new(None));
        CallContext { request_id, method, namespace, trace, compression_floor }
    }
}

tokio::task_local! {
    static CALL: CallContext;
}

/// Runs `call` with `context` as the current call.
pub fn scope<F: Future>(context: CallContext, call: F) -> impl Future<Output = F::Output> {
    CALL.scope(context, call)
}

/// The namespace the current call resolved, taken out of its context.
pub fn take_namespace() -> Option<Arc<dyn NamespaceName>> {
    CALL.try_with(|call| call.namespace.as_ref().and_then(|kept| kept.borrow_mut().take())).ok().flatten()
}

/// Records that the current call is using `namespace` (called by the namespace lookup).
pub fn note_namespace<N: NamespaceName + 'static>(namespace: &Arc<N>) {
    let _ = CALL.try_with(|call| {
        if let Some(kept) = &call.namespace {
            *kept.borrow_mut() = Some(namespace.clone());
        }
    });
}

/// The request id and method of the call the current task serves, if it serves one.
pub fn with_current_call<R>(f: impl FnOnce(&str, &'static str) -> R) -> Option<R> {
    CALL.try_with(|call| f(call.request_id.to_str().unwrap_or_default(), call.method)).ok()
}

/// Runs `f` on the current call's trace context: `None` outside a call, `Some(None)`
/// in a call that is not traced.
pub fn with_current_trace<R>(f: impl FnOnce(&opentelemetry::Context) -> R) -> Option<Option<R>> {
    CALL.try_with(|call| call.trace.as_ref().map(f)).ok()
}

/// When the current call's client accepts compressed responses, the size from which
/// one is compressed (`server.compression_min_bytes`).
pub fn compression_floor() -> Option<usize> {
    CALL.try_with(|call| call.compression_floor).ok().flatten()
}
