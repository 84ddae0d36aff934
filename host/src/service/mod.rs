//! gRPC services: each translates protobuf, checks its request's own fields, and calls
//! the store layer (crate::store) or, for calls that need nothing of it, the bound
//! plugin instance. Only this layer knows the API's protobuf types.

pub mod admin;
pub mod keyvalue;
pub mod list;
pub mod multicast;
pub mod pubsub;
pub mod queue;
pub mod stream;

use std::time::Duration;

use tonic::Status;

use crate::gateway::Namespace;

pub use crate::shared::MAX_KEY_BYTES;
/// Most items one batch request may carry.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// A unary call's response. When its client accepts compression, it is compressed only
/// if it is at least `server.compression_min_bytes` once encoded: a small reply gains
/// less than its compressor costs. (Streams are compressed whole when asked.)
pub fn reply<M: prost::Message>(message: M) -> tonic::Response<M> {
    let small = crate::observe::call::compression_floor().is_some_and(|floor| message.encoded_len() < floor);
    let mut response = tonic::Response::new(message);
    if small {
        response.disable_compression();
    }
    response
}

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
