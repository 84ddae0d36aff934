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
}

impl Stores {
    /// The pub/sub namespace `name`, for one call.
    pub async fn pubsub(self: &Arc<Self>, name: &str) -> Result<PubSubStore, Status> {
        let namespace = self.gateway.namespace(name, PUBSUB).await?;
        let broker = namespace.slot(SLOT).expect("pubsub namespaces always bind 'broker'").instance.clone();
        let claim = self.claim_check(&namespace);
        Ok(PubSubStore { namespace, broker, claim, max_value: self.gateway.settings.max_value_bytes })
    }
}

/// How a subscriber's payloads are read: a claimed one fetched from the object store.
pub struct Payloads {
    claim: Option<ClaimCheck>,
    max_value: usize,
}

impl Payloads {
    /// The payload a delivered message stands for.
    pub async fn resolve(&self, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        match &self.claim {
            Some(claim) => claim.resolve(payload, self.max_value).await,
            None => Ok(payload),
        }
    }
}

impl PubSubStore {
    /// The bound broker, for calls that need nothing of this layer.
    pub fn broker(&self) -> &Arc<Instance> {
        &self.broker
    }

    /// How this namespace's subscribers read payloads.
    pub fn payloads(&self) -> Payloads {
        Payloads { claim: self.claim.clone(), max_value: self.max_value }
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
