//! The tower layer in front of every service: with `[auth]` configured it authenticates
//! each call, answers `UNAUTHENTICATED` itself (the call's body is never read), checks
//! AdminService calls for `admin` on every namespace, and runs every other Prism call
//! with its [`Caller`] set, so the namespace check ([`crate::auth::authorize`]) can see it.
//! A token whose key id the remote key set does not hold yet waits for one fetch of the
//! set (rate-limited), then is judged again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;

use crate::auth::jwks::{RemoteKeys, EARLY_FETCH_GAP};
use crate::auth::methods::{rpc_of, Permission, REFLECTION};
use crate::auth::{audit_admin, Caller, NotAuthenticated, CALLER};
use crate::gateway::Gateway;
use crate::tls::TlsConnectInfo;

#[derive(Clone)]
pub struct AuthLayer {
    gateway: Arc<Gateway>,
}

impl AuthLayer {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        AuthLayer { gateway }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { inner, gateway: self.gateway.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

/// What the layer decided for one call.
enum Decision {
    Pass,
    Refuse(Status),
    Serve(Caller),
    AwaitKeys(Arc<RemoteKeys>),
}

impl<S> Authenticate<S> {
    /// `may_wait`: whether a token with an unknown key may wait for the key set.
    fn decide<B>(&self, request: &http::Request<B>, may_wait: bool) -> Decision {
        let routing = self.gateway.current();
        let Some(auth) = routing.auth.as_deref() else { return Decision::Pass };
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.") {
            return Decision::Pass;
        }
        let reflection = path.starts_with("/grpc.reflection.");
        if reflection && auth.open_reflection {
            return Decision::Pass;
        }
        let names =
            request.extensions().get::<TlsConnectInfo>().map(|info| info.certificate_names.as_slice());
        let principal = match auth.authenticate(request.headers(), names) {
            Ok(principal) => principal,
            Err(NotAuthenticated::AwaitKeys(remote)) if may_wait => return Decision::AwaitKeys(remote),
            Err(NotAuthenticated::AwaitKeys(remote)) => {
                // Only when another fetch began since this call's: say what the last one
                // found (a failure's reason first of all) rather than wait again.
                let status = Status::unauthenticated(format!(
                    "the token's key id is not in {}; another fetch of it is under way, retry shortly",
                    remote.describe()
                ));
                crate::auth::audit_unauthenticated(path, status.message());
                return Decision::Refuse(status);
            }
            Err(NotAuthenticated::Refused(status)) => {
                crate::auth::audit_unauthenticated(path, status.message());
                return Decision::Refuse(status);
            }
        };
        let Some(rpc) = rpc_of(path) else {
            // Reflection when closed, or a path no service serves: any authenticated caller
            // may go on (tonic answers UNIMPLEMENTED for unknown paths).
            return if reflection {
                Decision::Serve(Caller { principal, rpc: &REFLECTION })
            } else {
                Decision::Pass
            };
        };
        let caller = Caller { principal, rpc };
        if rpc.0 == "AdminService" {
            let allowed = auth.allows(&caller.principal, "*", Permission::Admin);
            let method = caller.method();
            audit_admin(&caller.principal.display, &method, if allowed { "allow" } else { "deny" });
            if !allowed {
                return Decision::Refuse(Status::permission_denied(format!(
                    "{} may not call {method}: it needs admin on every namespace (a rule with namespaces = [\"*\"])",
                    caller.principal.display
                )));
            }
        }
        Decision::Serve(caller)
    }
}

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.decide(&request, true) {
            Decision::Pass => Box::pin(self.inner.call(request)),
            Decision::Refuse(status) => Box::pin(async move { Ok(status.into_http()) }),
            Decision::Serve(caller) => Box::pin(CALLER.scope(caller, self.inner.call(request))),
            Decision::AwaitKeys(remote) => {
                // The clone is ready as the original was polled ready (tower's rule for
                // calling a service after an await).
                let clone = self.inner.clone();
                let mut this = Authenticate {
                    inner: std::mem::replace(&mut self.inner, clone),
                    gateway: self.gateway.clone(),
                };
                Box::pin(async move {
                    remote.fetch_unless_recent(EARLY_FETCH_GAP).await;
                    match this.decide(&request, false) {
                        Decision::Pass => this.inner.call(request).await,
                        Decision::Serve(caller) => CALLER.scope(caller, this.inner.call(request)).await,
                        Decision::Refuse(status) => Ok(status.into_http()),
                        Decision::AwaitKeys(_) => {
                            Ok(Status::unavailable("the JWT key set is being fetched; retry shortly")
                                .into_http())
                        }
                    }
                })
            }
        }
    }
}
