//! Plugin `tracing` output in the host's log. Plugin side: a subscriber, installed once
//! per library, that hands each event to the log sink of the instance whose code emitted
//! it. Host side: the sink, which re-emits the event with `plugin` and `namespace` fields.
//! The host's level travels with the sink, so a disabled level is rejected at the
//! plugin's call site by `tracing`'s own level check.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, RwLock};

use abi_stable::std_types::RStr;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{field, span, Event, Level, Metadata, Subscriber};

use super::{FfiLogRecord, FfiLogSink};

/// Where one instance's events go.
pub(crate) struct LogContext {
    plugin: &'static str,
    namespace: String,
    sink: FfiLogSink,
}

thread_local! {
    /// The instance whose code runs on this thread: set while one of its futures is
    /// polled, and for the life of its runtime's worker threads.
    static CURRENT: Cell<Option<&'static LogContext>> = const { Cell::new(None) };
}

/// For events from threads no instance owns (e.g. a backend client's own thread).
static LATEST: RwLock<Option<&'static LogContext>> = RwLock::new(None);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
static INSTALL: Once = Once::new();

/// The context of a new instance. Contexts are leaked (a few dozen bytes per instance
/// created) so that threads can hold them without reference counting on every poll.
pub(crate) fn context(plugin: &'static str, namespace: &str, sink: FfiLogSink) -> &'static LogContext {
    INSTALL.call_once(|| {
        // Fails only when the plugin installed its own subscriber; it then keeps it.
        let _ = tracing::subscriber::set_global_default(Forwarder);
    });
    if MAX_LEVEL.swap(sink.max_level, Ordering::Relaxed) != sink.max_level {
        tracing::callsite::rebuild_interest_cache();
    }
    let context: &'static LogContext =
        Box::leak(Box::new(LogContext { plugin, namespace: namespace.to_owned(), sink }));
    *LATEST.write().unwrap_or_else(|e| e.into_inner()) = Some(context);
    context
}

/// Makes `context` this thread's current one until the guard drops.
pub(crate) fn enter(context: Option<&'static LogContext>) -> Entered {
    Entered(CURRENT.with(|current| current.replace(context)))
}

/// For a runtime worker thread: `context` for the thread's whole life.
pub(crate) fn adopt(context: Option<&'static LogContext>) {
    CURRENT.with(|current| current.set(context));
}

pub(crate) struct Entered(Option<&'static LogContext>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

fn number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn filter(number: u8) -> LevelFilter {
    match number {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

struct Forwarder;

impl Subscriber for Forwarder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter(MAX_LEVEL.load(Ordering::Relaxed)))
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        number(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    // Spans are not forwarded: the host's own spans frame each call.
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let context = CURRENT.with(Cell::get).or_else(|| *LATEST.read().unwrap_or_else(|e| e.into_inner()));
        let Some(context) = context else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let record = FfiLogRecord {
            level: number(event.metadata().level()),
            plugin: RStr::from_str(context.plugin),
            namespace: RStr::from_str(&context.namespace),
            target: RStr::from_str(event.metadata().target()),
            message: RStr::from_str(&fields.message),
            fields: RStr::from_str(&fields.others),
        };
        (context.sink.emit)(&record);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    others: String,
}

impl field::Visit for Fields {
    fn record_str(&mut self, field: &field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.separate();
            let _ = write!(self.others, "{}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.separate();
            let _ = write!(self.others, "{}={value:?}", field.name());
        }
    }
}

impl Fields {
    fn separate(&mut self) {
        if !self.others.is_empty() {
            self.others.push(' ');
        }
    }
}

/// The host's sink: plugin events become host events with target `prism_plugin` and
/// `plugin`, `namespace` and `module` fields, at the host's current level.
pub(crate) fn host_sink() -> FfiLogSink {
    let max_level = match LevelFilter::current().into_level() {
        None => 0,
        Some(level) => number(&level),
    };
    FfiLogSink { max_level, emit: emit_in_host }
}

extern "C" fn emit_in_host(record: &FfiLogRecord<'_>) {
    // Never unwind into the plugin.
    let _ = std::panic::catch_unwind(|| {
        let (plugin, namespace, module) =
            (record.plugin.as_str(), record.namespace.as_str(), record.target.as_str());
        let (message, fields) = (record.message.as_str(), record.fields.as_str());
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "prism_plugin", $level, plugin = %plugin, namespace = %namespace, module = %module, "{message}{}{fields}", if fields.is_empty() { "" } else { " " })
            };
        }
        match record.level {
            1 => emit!(Level::ERROR),
            2 => emit!(Level::WARN),
            3 => emit!(Level::INFO),
            4 => emit!(Level::DEBUG),
            _ => emit!(Level::TRACE),
        }
    });
}
