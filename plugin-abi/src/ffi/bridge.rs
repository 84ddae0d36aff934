//! The runtime bridge: a plugin owns a small tokio runtime, and every future it hands
//! the host enters that runtime on each poll, so the plugin's I/O and timers register
//! with the plugin's own reactor while the host's executor does the polling.
//! Each poll also catches panics, which become `Internal` errors.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use abi_stable::std_types::{RErr, RResult, RString};
use async_ffi::{FfiFuture, FutureExt as _};

use super::log::LogContext;
use super::{FfiHealth, FfiHealthStatus};
use crate::PluginError;

/// A plugin instance's tokio runtime, shut down (without blocking) when dropped.
pub(crate) struct PluginRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    last_panic: Mutex<Option<String>>,
    /// Where this instance's `tracing` events go (`None`: a host older than ABI 1.1).
    log: Option<&'static LogContext>,
}

impl PluginRuntime {
    pub(crate) fn new(
        plugin_name: &str,
        workers: usize,
        log: Option<&'static LogContext>,
    ) -> Result<Self, PluginError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(format!("prism-plugin-{plugin_name}"))
            .on_thread_start(move || super::log::adopt(log))
            .enable_all()
            .build()
            .map_err(|e| PluginError::internal(format!("cannot start the plugin runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(PluginRuntime { runtime: Some(runtime), handle, last_panic: Mutex::new(None), log })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The message of the last panic caught in this instance, if any.
    pub(crate) fn last_panic(&self) -> Option<String> {
        self.last_panic.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record_panic(&self, message: &str) {
        *self.last_panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; this never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Values a bridged future can produce in place of its real output after a panic.
pub(crate) trait FromPanic {
    fn from_panic(message: String) -> Self;
}

impl<T> FromPanic for RResult<T, PluginError> {
    fn from_panic(message: String) -> Self {
        RErr(PluginError::internal(message))
    }
}

impl FromPanic for FfiHealth {
    fn from_panic(message: String) -> Self {
        FfiHealth { status: FfiHealthStatus::Unhealthy, message: RString::from(message) }
    }
}

impl FromPanic for () {
    fn from_panic(_: String) -> Self {}
}

struct Bridged<F: Future> {
    runtime: std::sync::Arc<PluginRuntime>,
    future: Option<Pin<Box<F>>>,
}

impl<F> Future for Bridged<F>
where
    F: Future,
    F::Output: FromPanic,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(F::Output::from_panic("plugin future polled after completion".into()));
        };
        let _entered = this.runtime.handle.enter();
        let _log = super::log::enter(this.runtime.log);
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                this.future = None;
                Poll::Ready(output)
            }
            Err(payload) => {
                this.future = None;
                let message = format!("plugin panicked: {}", panic_message(&*payload));
                this.runtime.record_panic(&message);
                Poll::Ready(F::Output::from_panic(message))
            }
        }
    }
}

/// Resolves to `Err(message)` instead of unwinding when the inner future panics.
pub(crate) struct CatchPanic<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> CatchPanic<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchPanic { future: Box::pin(future) }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(format!("plugin panicked: {}", panic_message(&*payload)))),
        }
    }
}

/// Wraps a plugin-side future for the host: runtime entered and panics caught on every poll.
pub(crate) fn bridge<F>(runtime: &std::sync::Arc<PluginRuntime>, future: F) -> FfiFuture<F::Output>
where
    F: Future + Send + 'static,
    F::Output: FromPanic + 'static,
{
    Bridged { runtime: runtime.clone(), future: Some(Box::pin(future)) }.into_ffi()
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs a plugin's synchronous method that hands out a feed (e.g. a scan stream) on the
/// host's thread, catching a panic as a feed that fails: a panic must never unwind
/// across the boundary.
pub(crate) fn guarded_feed<T: Send + 'static>(
    what: &str,
    body: impl FnOnce() -> crate::Feed<T>,
) -> crate::Feed<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        crate::Feed::failed(crate::PluginError::internal(format!(
            "plugin panicked in {what}: {}",
            panic_message(&*payload)
        )))
    })
}
