//! The tower layers every gRPC call passes before its service, in one place. Outermost
//! first, and why in this order:
//!
//! 1. [`observe`]: request id, metrics and traces. Outermost so that every call is
//!    counted, traced and answered with its request id, the ones refused by the layers
//!    below included (an operator wants to see a flood of `UNAUTHENTICATED`).
//! 2. [`auth`]: with `[auth]`, answers an unauthenticated call itself, before its body is
//!    read: such a call never reaches the quota (taken when the service resolves the
//!    namespace), a plugin, or the size check below.
//! 3. [`oversize`]: turns tonic's answer to a too-large message into `RESOURCE_EXHAUSTED`
//!    with a fix; it must sit outside the services, whose codec produces that answer.
//! 4. [`deadline`]: ends the call at its deadline with `DEADLINE_EXCEEDED`, dropping the
//!    plugin call behind it; innermost, so the time taken by the layers above is not
//!    charged twice and the status it writes still passes through them.
//!
//! The order test (`tests/tests/it/layers.rs`) checks the observable consequences.

pub mod auth;
pub mod deadline;
pub mod observe;
pub mod oversize;

use std::sync::Arc;
use std::time::Duration;

use tower::layer::util::{Identity, Stack};

use crate::gateway::Gateway;

/// The layer stack, as tonic's server takes it.
pub type Layers = tower::ServiceBuilder<
    Stack<
        deadline::DeadlineLayer,
        Stack<oversize::OversizeLayer, Stack<auth::AuthLayer, Stack<observe::ObserveLayer, Identity>>>,
    >,
>;

/// The stack in the order above. `max_message`: the services' decoding limit;
/// `server_limit`: `server.request_timeout_ms`, when set.
pub fn stack(gateway: Arc<Gateway>, max_message: usize, server_limit: Option<Duration>) -> Layers {
    tower::ServiceBuilder::new()
        .layer(observe::ObserveLayer::new(gateway.settings.compression_min_bytes))
        .layer(auth::AuthLayer::new(gateway))
        .layer(oversize::OversizeLayer::new(max_message))
        .layer(deadline::DeadlineLayer::new(server_limit))
}
