use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{check_key, check_value};
use crate::api::queue_service_server::QueueService;
use crate::api::*;
use crate::shared::plugin_status;
use crate::store::idempotency::once;
use crate::store::queue::{QueueStore, SLOT};
use crate::store::{need, Stores};

/// Most messages one Dequeue may ask for.
const MAX_DEQUEUE: u32 = 100;
/// Longest a Dequeue may wait for a message.
const MAX_WAIT: Duration = Duration::from_secs(20);
const DEFAULT_DEAD_LETTER_PAGE: u32 = 100;

pub struct QueueApi {
    stores: Arc<Stores>,
}

impl QueueApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        QueueApi { stores }
    }

    async fn queue(&self, namespace: &str, queue: &str) -> Result<QueueStore, Status> {
        let store = self.stores.queue(namespace).await?;
        check_key("queue", queue)?;
        Ok(store)
    }
}

fn millis(field: &str, value: i64) -> Result<Duration, Status> {
    u64::try_from(value).map(Duration::from_millis).map_err(|_| {
        Status::invalid_argument(format!(
            "{field} is {value}; it must be 0 or a positive number of milliseconds"
        ))
    })
}

fn check_receipt(receipt: &str) -> Result<(), Status> {
    if receipt.is_empty() {
        return Err(Status::invalid_argument("receipt must not be empty: use the receipt Dequeue returned"));
    }
    Ok(())
}

fn message(message: plugin_abi::QueueMessage) -> QueueMessage {
    QueueMessage {
        message_id: message.id,
        payload: message.payload.into(),
        receipt: message.receipt,
        delivery_count: message.delivery_count,
        enqueued_at_unix_ms: message.enqueued_at_unix_ms,
    }
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn enqueue(&self, request: Request<EnqueueRequest>) -> Result<Response<EnqueueResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        check_value("payload", request.payload.len(), self.stores.gateway.settings.max_value_bytes)?;
        let delay = millis("delay_ms", request.delay_ms)?;
        if request.deliver_at_unix_ms < 0 {
            return Err(Status::invalid_argument("deliver_at_unix_ms must not be negative"));
        }
        let deliver_at = match (delay.is_zero(), request.deliver_at_unix_ms) {
            (true, 0) => None,
            (false, 0) => Some(plugin_abi::unix_millis() + delay.as_millis() as i64),
            (true, at) => Some(at),
            (false, _) => {
                return Err(Status::invalid_argument("set delay_ms or deliver_at_unix_ms, not both"));
            }
        };
        let call =
            self.stores.idempotent(&store.namespace, "Enqueue", &request.idempotency_token, &request)?;
        let write = async move {
            let message_id = store.enqueue(request.queue, request.payload.into(), deliver_at).await?;
            Ok(EnqueueResponse { message_id })
        };
        once(call, write).await.map(super::reply)
    }

    async fn dequeue(&self, request: Request<DequeueRequest>) -> Result<Response<DequeueResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        let max = match request.max_messages {
            0 => 1,
            max if max > MAX_DEQUEUE => {
                return Err(Status::invalid_argument(format!(
                    "max_messages {max} is above the limit of {MAX_DEQUEUE}"
                )))
            }
            max => max,
        };
        // "At most max": fewer when that many largest-possible messages would pass the
        // response budget (max_response_bytes).
        let max = max.min(store.messages_that_fit());
        let visibility = millis("visibility_timeout_ms", request.visibility_timeout_ms)?;
        let wait = millis("wait_ms", request.wait_ms)?;
        if wait > MAX_WAIT {
            return Err(Status::invalid_argument(format!(
                "wait_ms is above the limit of {}",
                MAX_WAIT.as_millis()
            )));
        }
        let messages = store.dequeue(&request.queue, max, visibility, wait).await?;
        Ok(super::reply(DequeueResponse { messages: messages.into_iter().map(message).collect() }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        check_receipt(&request.receipt)?;
        let acked = store.ack(&request.queue, &request.receipt).await?;
        Ok(super::reply(AckResponse { acked }))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        let (namespace, instance) = (&store.namespace, store.instance());
        check_receipt(&request.receipt)?;
        let delay = millis("delay_ms", request.delay_ms)?;
        let queue = need(namespace, SLOT, instance.queue_basic(), "Nack")?;
        let receipt = store.plugin_receipt(&request.receipt);
        let requeued = queue.nack(&request.queue, receipt, delay).await.map_err(plugin_status)?;
        Ok(super::reply(NackResponse { requeued }))
    }

    async fn extend_visibility(
        &self,
        request: Request<ExtendVisibilityRequest>,
    ) -> Result<Response<ExtendVisibilityResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        let (namespace, instance) = (&store.namespace, store.instance());
        check_receipt(&request.receipt)?;
        let visibility = millis("visibility_timeout_ms", request.visibility_timeout_ms)?;
        if visibility.is_zero() {
            return Err(Status::invalid_argument(
                "visibility_timeout_ms must be positive; use Nack to make a message visible now",
            ));
        }
        let handle = need(namespace, SLOT, instance.queue_visibility(), "ExtendVisibility")?;
        let extended = handle
            .extend_visibility(&request.queue, store.plugin_receipt(&request.receipt), visibility)
            .await
            .map_err(plugin_status)?;
        Ok(super::reply(ExtendVisibilityResponse { extended }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        let limit = match request.limit {
            0 => DEFAULT_DEAD_LETTER_PAGE,
            limit if limit > 1000 => {
                return Err(Status::invalid_argument(format!("limit {limit} is above the limit of 1000")))
            }
            limit => limit,
        };
        // A shorter page (with a cursor) when the full one could pass max_response_bytes.
        let limit = limit.min(store.messages_that_fit());
        let cursor = (!request.cursor.is_empty()).then_some(request.cursor.as_str());
        let (messages, next_cursor) = store.dead_letters(&request.queue, cursor, limit).await?;
        Ok(super::reply(ListDeadLettersResponse {
            messages: messages.into_iter().map(message).collect(),
            next_cursor: next_cursor.unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let store = self.queue(&request.namespace, &request.queue).await?;
        let (namespace, instance) = (&store.namespace, store.instance());
        super::check_batch("message_ids", request.message_ids.len())?;
        let dead = need(namespace, SLOT, instance.queue_dead_letter(), "ReplayDeadLetters")?;
        let replayed =
            dead.replay_dead_letters(&request.queue, request.message_ids).await.map_err(plugin_status)?;
        Ok(super::reply(ReplayDeadLettersResponse { replayed }))
    }
}
