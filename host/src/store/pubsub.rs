//! A pub/sub namespace as the service uses it: payloads claimed on publish and fetched
//! (and checked) for each subscriber.

use std::sync::Arc;

use plugin_abi::host::Instance;
use tonic::Status;

use super::claim_check::ClaimCheck;
use super::{need, Stores};
use crate::gateway::NamespaceRef;
use crate::patterns::PUBSUB;
use crate::shared::plugin_status;

/// The pub/sub pattern's one slot.
pub const SLOT: &str = "broker";

/// One pub/sub namespace, resolved for one call.
pub struct PubSubStore {
    pub namespace: NamespaceRef,
    broker: Arc<Instance>,
    claim: Option<ClaimCheck>,
    max_value: usize,
    max_deliveries: u32,
}

impl Stores {
    /// The pub/sub namespace `name`, for one call.
    pub async fn pubsub(self: &Arc<Self>, name: &str) -> Result<PubSubStore, Status> {
        let namespace = self.gateway.namespace(name, PUBSUB).await?;
        let broker = namespace.slot(SLOT).expect("pubsub namespaces always bind 'broker'").instance.clone();
        let claim = self.claim_check(&namespace);
        let settings = &self.gateway.settings;
        let (max_value, max_deliveries) = (settings.max_value_bytes, settings.claim_check_max_deliveries);
        Ok(PubSubStore { namespace, broker, claim, max_value, max_deliveries })
    }
}

/// How a subscriber's payloads are read: a claimed one fetched from the object store.
pub struct Payloads {
    claim: Option<ClaimCheck>,
    max_value: usize,
    namespace: String,
    /// A durable subscription's name and broker, to acknowledge what can never be read.
    durable: Option<(String, Arc<Instance>)>,
    max_deliveries: u32,
}

impl Payloads {
    /// Whether `message` can be delivered, its claimed payload fetched in place. One whose
    /// payload cannot be read is skipped — not the end of the subscription: a durable one
    /// would get it again on every reconnect — and, on a durable subscription, once it
    /// has been delivered `max_deliveries` times, acknowledged so it stops coming back.
    pub async fn deliverable(&self, message: &mut plugin_abi::Message) -> bool {
        let Some(claim) = &self.claim else { return true };
        let status = match claim.resolve(std::mem::take(&mut message.payload), self.max_value).await {
            Ok(payload) => {
                message.payload = payload;
                return true;
            }
            Err(status) => status,
        };
        let (id, topic, error) = (&message.id, &message.topic, status.message());
        let given_up = match &self.durable {
            Some((durable, broker)) if message.delivery_count >= self.max_deliveries => {
                let acked = match broker.pubsub_persistent() {
                    Some(persistent) => {
                        persistent.ack(durable, &message.ack_id).await.map_err(|e| e.to_string())
                    }
                    None => Err("the broker lacks pubsub_persistent".to_owned()),
                };
                match acked {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::warn!(message_id = %id, %topic, error = %why, "could not acknowledge an unreadable claimed message");
                        false
                    }
                }
            }
            _ => false,
        };
        let outcome = if given_up { "acked" } else { "skipped" };
        if given_up {
            tracing::warn!(message_id = %id, %topic, %error, deliveries = message.delivery_count,
                "acknowledged a claimed message whose payload cannot be read after server.claim_check_max_deliveries deliveries; it will not be delivered again");
        } else {
            tracing::warn!(message_id = %id, %topic, %error, "skipped a claimed message whose payload cannot be read");
        }
        if let Some(metrics) = crate::observe::metrics() {
            metrics.unreadable_message(&self.namespace, outcome);
        }
        false
    }
}

impl PubSubStore {
    /// The bound broker, for calls that need nothing of this layer.
    pub fn broker(&self) -> &Arc<Instance> {
        &self.broker
    }

    /// How a subscriber of this namespace reads payloads; `durable`: the durable
    /// subscription's name, if it is one.
    pub fn payloads(&self, durable: Option<&str>) -> Payloads {
        Payloads {
            claim: self.claim.clone(),
            max_value: self.max_value,
            namespace: self.namespace.name.clone(),
            durable: durable.map(|name| (name.to_owned(), self.broker.clone())),
            max_deliveries: self.max_deliveries,
        }
    }

    /// Publishes `payload` on `topic` (through the object store when the namespace claims
    /// it); the message id.
    pub async fn publish(
        self,
        topic: &str,
        payload: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> Result<String, Status> {
        let basic = need(&self.namespace, SLOT, self.broker.pubsub_basic(), "Publish")?;
        let payload = match &self.claim {
            Some(claim) if claim.claims(&payload) => claim.claim(&payload).await?.encode(),
            _ => payload,
        };
        match basic.publish(topic, payload.clone(), metadata).await {
            Ok(message_id) => Ok(message_id),
            Err(error) => {
                let status = plugin_status(error);
                // Written to the object store but not published: the object goes.
                if let Some(claim) = &self.claim {
                    claim.abandon(&payload, &status).await;
                }
                Err(status)
            }
        }
    }
}
