use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_abi::host::Instance;
use tonic::{Request, Response, Status};

use crate::store::claim_check::Reference;

use super::{check_key, check_value};
use crate::api::queue_service_server::QueueService;
use crate::api::*;
use crate::gateway::NamespaceRef;
use crate::patterns::QUEUE;
use crate::shared::plugin_status;
use crate::store::need;
use crate::store::Stores;

const SLOT: &str = "queue";
/// Most messages one Dequeue may ask for.
const MAX_DEQUEUE: u32 = 100;
/// Longest a Dequeue may wait for a message.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting Dequeue looks again (it backs off up to this).
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(200);
const DEFAULT_DEAD_LETTER_PAGE: u32 = 100;

pub struct QueueApi {
    stores: Arc<Stores>,
}

impl QueueApi {
    /// Messages of the largest allowed size that fit in one response.
    fn entries_that_fit(&self) -> u32 {
        self.stores.budget().entries_that_fit().clamp(1, u32::MAX as usize) as u32
    }

    pub fn new(stores: Arc<Stores>) -> Self {
        QueueApi { stores }
    }

    async fn queue(&self, namespace: &str, queue: &str) -> Result<(NamespaceRef, Arc<Instance>), Status> {
        let namespace = self.stores.gateway.namespace(namespace, QUEUE).await?;
        check_key("queue", queue)?;
        let instance = namespace.slot(SLOT).expect("queue namespaces always bind 'queue'").instance.clone();
        Ok((namespace, instance))
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

impl QueueApi {
    /// Messages as the client sees them: a claimed payload fetched and checked, and,
    /// for a delivery (`deliver`), its receipt remembered so an Ack deletes the object.
    async fn resolve(
        &self,
        namespace: &crate::gateway::Namespace,
        queue: &str,
        messages: Vec<plugin_abi::QueueMessage>,
        deliver: bool,
    ) -> Result<Vec<QueueMessage>, Status> {
        let Some(claim) = self.stores.claim_check(namespace) else {
            return Ok(messages.into_iter().map(message).collect());
        };
        let mut resolved = Vec::with_capacity(messages.len());
        for mut delivered in messages {
            let Some(reference) = Reference::decode(&delivered.payload) else {
                resolved.push(message(delivered));
                continue;
            };
            let payload = std::mem::take(&mut delivered.payload);
            let max = self.stores.gateway.settings.max_value_bytes;
            let outcome = match reference {
                Ok(reference) => claim.resolve(payload, max).await.map(|payload| (payload, reference.object)),
                Err(status) => Err(status),
            };
            match outcome {
                Ok((payload, object)) => {
                    if deliver {
                        self.stores.claimed_receipts.remember(
                            &namespace.name,
                            queue,
                            &delivered.receipt,
                            object,
                        );
                    }
                    delivered.payload = payload;
                    resolved.push(message(delivered));
                }
                // One message's lost payload must not hold back the rest of a delivery: it
                // stays invisible, comes back after its visibility timeout, and ends among
                // the dead letters after max_deliveries.
                Err(status) if deliver => {
                    tracing::warn!(message_id = %delivered.id, queue, error = %status.message(),
                        "skipped a claimed message whose payload cannot be read");
                }
                // Listed all the same, with an empty payload, so an operator sees it.
                Err(status) => {
                    tracing::warn!(message_id = %delivered.id, queue, error = %status.message(),
                        "listed a dead letter whose claimed payload cannot be read with an empty payload");
                    resolved.push(message(delivered));
                }
            }
        }
        Ok(resolved)
    }
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
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
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
        let claim = self.stores.claim_check(&namespace);
        let call = self.stores.idempotent(&namespace, "Enqueue", &request.idempotency_token, &request)?;
        let write = async move {
            let payload: Vec<u8> = match &claim {
                Some(claim) if claim.claims(&request.payload) => {
                    claim.claim(&request.payload).await?.encode()
                }
                _ => request.payload.into(),
            };
            let enqueued = match deliver_at {
                Some(at) => {
                    let delayed = need(&namespace, SLOT, instance.queue_delayed(), "delayed Enqueue")?;
                    delayed.enqueue_at(&request.queue, payload.clone(), at).await
                }
                None => {
                    let queue = need(&namespace, SLOT, instance.queue_basic(), "Enqueue")?;
                    queue.enqueue(&request.queue, payload.clone()).await
                }
            };
            let message_id = match enqueued {
                Ok(id) => id,
                Err(error) => {
                    let status = plugin_status(error);
                    if let Some(claim) = &claim {
                        claim.abandon(&payload, &status).await;
                    }
                    return Err(status);
                }
            };
            Ok(EnqueueResponse { message_id })
        };
        crate::store::idempotency::once(call, write).await.map(Response::new)
    }

    async fn dequeue(&self, request: Request<DequeueRequest>) -> Result<Response<DequeueResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
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
        let max = max.min(self.entries_that_fit());
        let visibility = millis("visibility_timeout_ms", request.visibility_timeout_ms)?;
        let wait = millis("wait_ms", request.wait_ms)?;
        if wait > MAX_WAIT {
            return Err(Status::invalid_argument(format!(
                "wait_ms is above the limit of {}",
                MAX_WAIT.as_millis()
            )));
        }
        let basic = need(&namespace, SLOT, instance.queue_basic(), "Dequeue")?;
        let with_visibility = if visibility.is_zero() {
            None
        } else {
            Some(need(&namespace, SLOT, instance.queue_visibility(), "Dequeue with visibility_timeout_ms")?)
        };
        let give_up = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let messages = match &with_visibility {
                Some(handle) => handle.dequeue_with_visibility(&request.queue, max, visibility).await,
                None => basic.dequeue(&request.queue, max).await,
            }
            .map_err(plugin_status)?;
            let now = Instant::now();
            if !messages.is_empty() || now >= give_up {
                let messages = self.resolve(&namespace, &request.queue, messages, true).await?;
                return Ok(Response::new(DequeueResponse { messages }));
            }
            tokio::time::sleep(pause.min(give_up - now)).await;
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
        check_receipt(&request.receipt)?;
        let queue = need(&namespace, SLOT, instance.queue_basic(), "Ack")?;
        let acked = queue.ack(&request.queue, &request.receipt).await.map_err(plugin_status)?;
        if let Some(claim) = self.stores.claim_check(&namespace) {
            let object = self.stores.claimed_receipts.take(&namespace.name, &request.queue, &request.receipt);
            if let (true, Some(object)) = (acked, object) {
                claim.delete_object(&object).await;
            }
        }
        Ok(Response::new(AckResponse { acked }))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
        check_receipt(&request.receipt)?;
        let delay = millis("delay_ms", request.delay_ms)?;
        let queue = need(&namespace, SLOT, instance.queue_basic(), "Nack")?;
        let requeued = queue.nack(&request.queue, &request.receipt, delay).await.map_err(plugin_status)?;
        Ok(Response::new(NackResponse { requeued }))
    }

    async fn extend_visibility(
        &self,
        request: Request<ExtendVisibilityRequest>,
    ) -> Result<Response<ExtendVisibilityResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
        check_receipt(&request.receipt)?;
        let visibility = millis("visibility_timeout_ms", request.visibility_timeout_ms)?;
        if visibility.is_zero() {
            return Err(Status::invalid_argument(
                "visibility_timeout_ms must be positive; use Nack to make a message visible now",
            ));
        }
        let handle = need(&namespace, SLOT, instance.queue_visibility(), "ExtendVisibility")?;
        let extended = handle
            .extend_visibility(&request.queue, &request.receipt, visibility)
            .await
            .map_err(plugin_status)?;
        Ok(Response::new(ExtendVisibilityResponse { extended }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
        let limit = match request.limit {
            0 => DEFAULT_DEAD_LETTER_PAGE,
            limit if limit > 1000 => {
                return Err(Status::invalid_argument(format!("limit {limit} is above the limit of 1000")))
            }
            limit => limit,
        };
        // A shorter page (with a cursor) when the full one could pass max_response_bytes.
        let limit = limit.min(self.entries_that_fit());
        let dead = need(&namespace, SLOT, instance.queue_dead_letter(), "ListDeadLetters")?;
        let cursor = (!request.cursor.is_empty()).then_some(request.cursor.as_str());
        let page = dead.dead_letters(&request.queue, cursor, limit).await.map_err(plugin_status)?;
        Ok(Response::new(ListDeadLettersResponse {
            messages: self.resolve(&namespace, &request.queue, page.messages, false).await?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let (namespace, instance) = self.queue(&request.namespace, &request.queue).await?;
        super::check_batch("message_ids", request.message_ids.len())?;
        let dead = need(&namespace, SLOT, instance.queue_dead_letter(), "ReplayDeadLetters")?;
        let replayed =
            dead.replay_dead_letters(&request.queue, request.message_ids).await.map_err(plugin_status)?;
        Ok(Response::new(ReplayDeadLettersResponse { replayed }))
    }
}
