//! gRPC services: each resolves the request's namespace, checks its input, and calls
//! the bound plugin instance. Only this layer knows protobuf types.

pub mod admin;
pub mod keyvalue;
pub mod list;
pub mod multicast;
mod pages;
pub mod pubsub;
pub mod queue;
pub mod stream;

use std::time::Duration;

use plugin_abi::host::InterfaceHandle;

use tonic::Status;

use crate::gateway::Namespace;

/// Keys are UTF-8 (protobuf strings guarantee it), 1 to this many bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most items one batch request may carry.
pub const MAX_BATCH_ITEMS: usize = 1000;

pub fn check_key(field: &str, key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(format!("{field} must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; keys are at most {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

pub fn check_value(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {len} bytes; this server accepts at most {max} (server.max_value_bytes)"
        )));
    }
    Ok(())
}

/// What one response may still carry (`server.max_response_bytes`), counted against
/// the largest entry a plugin could return (`max_value_bytes` plus the longest key).
pub struct ResponseBudget {
    spent: usize,
    limit: usize,
    largest_entry: usize,
}

impl ResponseBudget {
    pub fn new(settings: &crate::config::ServerConfig) -> Self {
        ResponseBudget {
            spent: 0,
            limit: settings.max_response_bytes,
            largest_entry: settings.max_value_bytes + MAX_KEY_BYTES,
        }
    }

    /// How many more entries fit for certain, whatever their size.
    pub fn entries_that_fit(&self) -> usize {
        self.limit.saturating_sub(self.spent) / self.largest_entry
    }

    pub fn spend(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_add(bytes);
    }

    pub fn exceeded(&self) -> bool {
        self.spent > self.limit
    }

    pub fn refusal(&self, call: &str, done: usize, asked: usize) -> Status {
        Status::resource_exhausted(format!(
            "the {call} response would exceed {} bytes (server.max_response_bytes) after {done} of {asked} items; ask for fewer per call",
            self.limit
        ))
    }
}

pub fn check_batch(field: &str, len: usize) -> Result<(), Status> {
    if len > MAX_BATCH_ITEMS {
        return Err(Status::invalid_argument(format!(
            "{field} has {len} items; a batch holds at most {MAX_BATCH_ITEMS}"
        )));
    }
    Ok(())
}

/// A TTL field: 0 = none, negative is an error.
pub fn optional_ttl(field: &str, ttl_ms: i64) -> Result<Option<Duration>, Status> {
    match ttl_ms {
        0 => Ok(None),
        ms if ms < 0 => Err(Status::invalid_argument(format!(
            "{field} is {ms}; a TTL must be 0 (no expiry) or a positive number of milliseconds"
        ))),
        ms => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

/// Runs a write once per idempotency token (`call` from `Gateway::idempotent`), or
/// just runs it when the request carries none.
pub async fn once<R, W>(call: Option<crate::idempotency::Call>, write: W) -> Result<R, Status>
where
    R: prost::Message + Default + Send + 'static,
    W: std::future::Future<Output = Result<R, Status>> + Send + 'static,
{
    match call {
        None => write.await,
        Some(call) => call.run(write).await,
    }
}

/// A write inside a transaction is applied at its commit, which is what a retry repeats.
pub fn no_token_in_transaction(token: &str) -> Result<(), Status> {
    if token.is_empty() {
        return Ok(());
    }
    Err(Status::invalid_argument(
        "idempotency_token cannot be used with transaction_id: the transaction's commit decides whether its \
         writes apply; retry the whole transaction instead (or use Mutate with a token)",
    ))
}

/// The interface handle `operation` needs, or UNIMPLEMENTED naming what is missing.
pub fn need<H: InterfaceHandle>(
    namespace: &Namespace,
    slot: &str,
    handle: Option<H>,
    operation: &str,
) -> Result<H, Status> {
    let interface = H::INTERFACE;
    handle.ok_or_else(|| {
        let plugin = namespace.slot(slot).map_or("?", |bound| bound.plugin.name.as_str());
        Status::unimplemented(format!(
            "{operation} needs interface {interface}, which plugin '{plugin}' (namespace '{}', slot '{slot}') does not implement",
            namespace.name
        ))
    })
}

/// A server stream that ends with UNAVAILABLE when its namespace is replaced by a reload,
/// so clients resubscribe on the new instance (the old one is shut down once its
/// streams are gone), and that counts as open on its namespace until it is dropped.
pub fn until_retired<T: Send + 'static>(
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>,
    namespace: &Namespace,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>> {
    use futures_util::StreamExt;
    let retired = Box::pin(namespace.retired());
    // Counted open for as long as the client holds the stream.
    let open = namespace.stream_opened();
    let state = (stream, retired, Some(namespace.name.clone()), open);
    // The name is only needed once, for the final status; `None` once that went out.
    Box::pin(futures_util::stream::unfold(state, |(mut stream, mut retired, name, open)| async move {
        let name = name?;
        tokio::select! {
            item = stream.next() => item.map(|item| (item, (stream, retired, Some(name), open))),
            () = &mut retired => {
                let status = Status::unavailable(format!(
                    "namespace '{name}' was reloaded (a new plugin build or config); open the stream again"
                ));
                Some((Err(status), (stream, retired, None, open)))
            }
        }
    }))
}
