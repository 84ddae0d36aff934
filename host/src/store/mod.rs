//! The store layer: what sits between the gRPC services and a namespace's slot handles,
//! in plain Rust types. A service translates protobuf, checks its own input and calls
//! this layer; claim checks (large payloads in the object store), idempotency records,
//! response budgets and the transaction ids clients see live here, once for every
//! service. [`Stores`] holds what of it outlives a reload.

pub mod claim_check;
pub mod idempotency;
pub mod keyvalue;
pub mod pages;
pub mod pubsub;
pub mod queue;
pub mod sweeper;
pub mod transactions;

use std::sync::Arc;

use plugin_abi::host::InterfaceHandle;
use tonic::Status;

use crate::gateway::{Gateway, Namespace, NamespaceRef};

/// The store layer of one gateway: its namespaces, and the state kept across reloads.
pub struct Stores {
    pub gateway: Arc<Gateway>,
    /// Idempotency records of namespaces with no `idempotency` slot bound.
    idempotency: Arc<idempotency::Memory>,
    /// The transaction ids this gateway handed out, and what each stands for.
    pub transactions: transactions::Transactions,
}

impl Stores {
    pub fn new(gateway: Arc<Gateway>) -> Stores {
        Stores { gateway, idempotency: Arc::default(), transactions: Default::default() }
    }

    /// The namespace's claim check, when it binds the `claim_check` slot.
    pub fn claim_check(&self, namespace: &Namespace) -> Option<claim_check::ClaimCheck> {
        let bound = namespace.slot(crate::patterns::CLAIM_CHECK)?;
        let settings = &self.gateway.settings;
        Some(claim_check::ClaimCheck::new(
            bound.instance.clone(),
            namespace.name.clone(),
            settings.claim_check_threshold_bytes,
            settings.max_object_bytes,
        ))
    }

    /// What one response may carry.
    pub fn budget(&self) -> pages::ResponseBudget {
        pages::ResponseBudget::new(&self.gateway.settings)
    }

    /// How a write carrying idempotency token `token` runs once (see [`idempotency`]);
    /// `None` when the token is empty.
    pub fn idempotent(
        &self,
        namespace: &NamespaceRef,
        method: &str,
        token: &str,
        request: &impl prost::Message,
    ) -> Result<Option<idempotency::Call>, Status> {
        use idempotency::{fingerprint, Call, Records};
        if token.is_empty() {
            return Ok(None); // most writes: nothing to read, not even the clock
        }
        let settings = &self.gateway.settings;
        let window = std::time::Duration::from_millis(settings.idempotency_window_ms);
        let Some(token) = idempotency::token(token, window, plugin_abi::unix_millis())? else {
            return Ok(None);
        };
        let records = match namespace.slot(crate::patterns::IDEMPOTENCY) {
            Some(bound) => Records::Plugin(bound.instance.clone()),
            None => Records::Memory(self.idempotency.clone()),
        };
        let fingerprint = fingerprint(method, request);
        let write_timeout = std::time::Duration::from_millis(settings.request_timeout_ms.max(1));
        let principal = crate::auth::current_principal();
        let key = idempotency::record_key(&namespace.name, method, principal.as_deref(), &token);
        Ok(Some(Call::new(records, key, token, fingerprint, window, write_timeout)))
    }
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
