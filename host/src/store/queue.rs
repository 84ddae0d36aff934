//! A queue namespace as the service uses it: payloads claimed on the way in and fetched on
//! the way out, a claimed delivery's object deleted by its Ack (on any gateway: the
//! receipt names it), long-polling dequeues, pages within the response budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_abi::host::Instance;
use plugin_abi::QueueMessage;
use tonic::Status;

use super::claim_check::{receipt, ClaimCheck, Reference};
use super::{need, Stores};
use crate::gateway::NamespaceRef;
use crate::patterns::QUEUE;
use crate::shared::plugin_status;

/// The queue pattern's one slot.
pub const SLOT: &str = "queue";
/// How often a waiting Dequeue looks again (it backs off up to this).
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One queue namespace, resolved for one call.
pub struct QueueStore {
    pub namespace: NamespaceRef,
    instance: Arc<Instance>,
    claim: Option<ClaimCheck>,
    stores: Arc<Stores>,
}

impl Stores {
    /// The queue namespace `name`, for one call.
    pub async fn queue(self: &Arc<Self>, name: &str) -> Result<QueueStore, Status> {
        let namespace = self.gateway.namespace(name, QUEUE).await?;
        let instance = namespace.slot(SLOT).expect("queue namespaces always bind 'queue'").instance.clone();
        let claim = self.claim_check(&namespace);
        Ok(QueueStore { namespace, instance, claim, stores: self.clone() })
    }
}

impl QueueStore {
    /// The bound instance, for calls that need nothing of this layer.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    /// Messages of the largest allowed size that fit in one response.
    pub fn messages_that_fit(&self) -> u32 {
        self.stores.budget().entries_that_fit().clamp(1, u32::MAX as usize) as u32
    }

    /// Enqueues `payload` (through the object store when the namespace claims it), now
    /// or at `deliver_at` (Unix ms); the message id.
    pub async fn enqueue(
        self,
        queue: String,
        payload: Vec<u8>,
        deliver_at: Option<i64>,
    ) -> Result<String, Status> {
        let payload = match &self.claim {
            Some(claim) if claim.claims(&payload) => claim.claim(&payload).await?.encode(),
            _ => payload,
        };
        let enqueued = match deliver_at {
            Some(at) => {
                let delayed = need(&self.namespace, SLOT, self.instance.queue_delayed(), "delayed Enqueue")?;
                delayed.enqueue_at(&queue, payload.clone(), at).await
            }
            None => {
                let basic = need(&self.namespace, SLOT, self.instance.queue_basic(), "Enqueue")?;
                basic.enqueue(&queue, payload.clone()).await
            }
        };
        match enqueued {
            Ok(id) => Ok(id),
            Err(error) => {
                let status = plugin_status(error);
                // Written to the object store but not enqueued: the object goes.
                if let Some(claim) = &self.claim {
                    claim.abandon(&payload, &status).await;
                }
                Err(status)
            }
        }
    }

    /// Up to `max` messages of `queue`, invisible for `visibility` (zero: the plugin's
    /// default), waiting up to `wait` for the first. Claimed payloads fetched; the receipt
    /// of each names its object, so its Ack deletes it.
    pub async fn dequeue(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<QueueMessage>, Status> {
        let basic = need(&self.namespace, SLOT, self.instance.queue_basic(), "Dequeue")?;
        let with_visibility = match visibility.is_zero() {
            true => None,
            false => Some(need(
                &self.namespace,
                SLOT,
                self.instance.queue_visibility(),
                "Dequeue with visibility_timeout_ms",
            )?),
        };
        let give_up = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let messages = match &with_visibility {
                Some(handle) => handle.dequeue_with_visibility(queue, max, visibility).await,
                None => basic.dequeue(queue, max).await,
            }
            .map_err(plugin_status)?;
            let now = Instant::now();
            if !messages.is_empty() || now >= give_up {
                return Ok(self.resolve(queue, messages, true).await);
            }
            tokio::time::sleep(pause.min(give_up - now)).await;
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }

    /// Acknowledges a delivery; a claimed one's object is deleted. Whether it was acked.
    pub async fn ack(&self, queue: &str, receipt: &str) -> Result<bool, Status> {
        let basic = need(&self.namespace, SLOT, self.instance.queue_basic(), "Ack")?;
        let (object, plugin_receipt) = receipt::unwrap(receipt);
        let acked = basic.ack(queue, plugin_receipt).await.map_err(plugin_status)?;
        if let (true, Some(claim), Some(object)) = (acked, &self.claim, object) {
            claim.delete_id(object).await;
        }
        Ok(acked)
    }

    /// The plugin's receipt inside one this layer handed out (Nack and ExtendVisibility
    /// pass it on; only an Ack deletes the object).
    pub fn plugin_receipt<'r>(&self, receipt: &'r str) -> &'r str {
        receipt::unwrap(receipt).1
    }

    /// A page of `queue`'s dead letters, claimed payloads fetched.
    pub async fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<QueueMessage>, Option<String>), Status> {
        let dead = need(&self.namespace, SLOT, self.instance.queue_dead_letter(), "ListDeadLetters")?;
        let page = dead.dead_letters(queue, cursor, limit).await.map_err(plugin_status)?;
        Ok((self.resolve(queue, page.messages, false).await, page.next_cursor))
    }

    /// Messages as the client sees them: a claimed payload fetched and checked, and,
    /// for a delivery (`deliver`), its receipt naming the object for its Ack to delete.
    async fn resolve(&self, queue: &str, messages: Vec<QueueMessage>, deliver: bool) -> Vec<QueueMessage> {
        let Some(claim) = &self.claim else { return messages };
        let max = self.stores.gateway.settings.max_value_bytes;
        let mut resolved = Vec::with_capacity(messages.len());
        for mut delivered in messages {
            let Some(reference) = Reference::decode(&delivered.payload) else {
                resolved.push(delivered);
                continue;
            };
            let payload = std::mem::take(&mut delivered.payload);
            let outcome = match reference {
                Ok(reference) => claim.resolve(payload, max).await.map(|payload| (payload, reference.object)),
                Err(status) => Err(status),
            };
            match outcome {
                Ok((payload, object)) => {
                    if deliver {
                        delivered.receipt = receipt::wrap(&self.namespace.name, &object, &delivered.receipt);
                    }
                    delivered.payload = payload;
                    resolved.push(delivered);
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
                    resolved.push(delivered);
                }
            }
        }
        resolved
    }
}
