//! Authentication and per-namespace authorization, configured by `[auth]`. Off when the
//! section is absent; once present, every Prism RPC needs a credential (a JWT bearer
//! token, an API key, or a client certificate) and a rule granting the RPC's permission
//! on the namespace it names (deny by default). `grpc.health.v1` stays open; reflection
//! is open unless `open_reflection = false`.

pub mod config;
pub mod jwks;
pub mod jwt;
pub mod methods;
pub mod rules;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::Status;

use self::config::AuthConfig;
use self::jwks::RemoteKeys;
use self::jwt::{JwtVerifier, Refusal};
pub use self::methods::Permission;
pub use self::rules::Principal;
use self::rules::{Identity, Matcher, Rule};
use crate::shared::ConfigError;

/// The compiled `[auth]` section: how callers prove who they are, and the rules.
#[derive(Debug)]
pub struct Auth {
    pub open_reflection: bool,
    jwt: Option<JwtVerifier>,
    /// SHA-256 of each key → the service account.
    api_keys: HashMap<[u8; 32], Arc<Principal>>,
    rules: Vec<Rule>,
}

/// Why [`Auth::authenticate`] did not name a caller.
#[derive(Debug)]
pub enum NotAuthenticated {
    Refused(Status),
    /// The bearer token's key may be in the remote key set once it is fetched again:
    /// fetch, then authenticate again.
    AwaitKeys(Arc<RemoteKeys>),
}

/// The header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

impl Auth {
    /// `client_certificates`: whether the listener verifies client certificates
    /// (`server.tls.client_ca_file`), which is then a way to authenticate.
    pub fn compile(
        config: &AuthConfig,
        base_dir: &Path,
        client_certificates: bool,
    ) -> Result<Auth, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let jwt = match &config.jwt {
            Some(jwt) => match JwtVerifier::new(jwt, base_dir) {
                Ok(verifier) => Some(verifier),
                Err(problems) => {
                    errors.extend(
                        problems.into_iter().map(|(key, message, fix)| ConfigError::new(key, message, fix)),
                    );
                    None
                }
            },
            None => None,
        };
        let mut api_keys = HashMap::new();
        let mut names = BTreeSet::new();
        for (index, entry) in config.api_keys.iter().enumerate() {
            let at = format!("auth.api_keys[{index}]");
            if !crate::shared::valid_name(&entry.name) || !names.insert(entry.name.clone()) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("'{}' is not a valid, unique name", entry.name),
                    "give each key a distinct name of 1-64 letters, digits, '-', '_' or '.'",
                ));
            }
            match hex::decode(&entry.sha256).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
                Some(digest) => {
                    let principal = Principal {
                        display: format!("api_key:{}", entry.name),
                        identity: Identity::ApiKey { name: entry.name.clone() },
                    };
                    api_keys.insert(digest, Arc::new(principal));
                }
                None => errors.push(ConfigError::new(
                    format!("{at}.sha256"),
                    "is not 64 hex digits (the SHA-256 of the key; the key itself never goes in the config)",
                    "run `prism auth new-api-key NAME` and paste the sha256 it prints",
                )),
            }
        }
        if config.jwt.is_none() && config.api_keys.is_empty() && !client_certificates {
            errors.push(ConfigError::new(
                "auth",
                "no way to authenticate is configured, so every call would be refused",
                "add [auth.jwt], [[auth.api_keys]] or server.tls.client_ca_file",
            ));
        }
        let mut rules = Vec::new();
        for (index, entry) in config.rules.iter().enumerate() {
            let at = format!("auth.rules[{index}]");
            let principals = Matcher::parse_all(&entry.principals, &format!("{at}.principals"), &mut errors);
            let mut permissions = BTreeSet::new();
            for name in &entry.permissions {
                match Permission::parse(name) {
                    Some(permission) => {
                        permissions.insert(permission);
                    }
                    None => errors.push(ConfigError::new(
                        format!("{at}.permissions"),
                        format!("'{name}' is not a permission"),
                        "use read, write, publish, subscribe, consume or admin",
                    )),
                }
            }
            for (what, empty) in [
                ("principals", entry.principals.is_empty()),
                ("namespaces", entry.namespaces.is_empty()),
                ("permissions", entry.permissions.is_empty()),
            ] {
                if empty {
                    errors.push(ConfigError::new(
                        format!("{at}.{what}"),
                        "is empty, so the rule grants nothing",
                        format!("list at least one of the {what} it is for, or remove the rule"),
                    ));
                }
            }
            rules.push(Rule { principals, namespaces: entry.namespaces.clone(), permissions });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Auth { open_reflection: config.open_reflection, jwt, api_keys, rules })
    }

    /// Starts what runs in the background (fetching a remote JWT key set).
    pub fn start(&self) {
        if let Some(jwt) = &self.jwt {
            jwt.start();
        }
    }

    /// Who the caller is, from its headers (a bearer token or an API key) or, failing
    /// those, its client certificate's names.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        certificate_names: Option<&[String]>,
    ) -> Result<Arc<Principal>, NotAuthenticated> {
        self.identify(headers, certificate_names).map_err(|refusal| match refusal {
            Refusal::Refused(reason) => NotAuthenticated::Refused(unauthenticated(reason)),
            Refusal::KeyNotYetKnown(remote) => NotAuthenticated::AwaitKeys(remote),
        })
    }

    fn identify(
        &self,
        headers: &http::HeaderMap,
        certificate_names: Option<&[String]>,
    ) -> Result<Arc<Principal>, Refusal> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| refused("the authorization header is not ASCII"))?;
            let Some(token) = bearer_token(value) else {
                return Err(refused("the authorization header is not 'Bearer <JWT>'"));
            };
            let Some(jwt) = &self.jwt else {
                return Err(refused("this gateway accepts no bearer tokens ([auth.jwt] is not configured)"));
            };
            return jwt.verify(token);
        }
        if let Some(value) = headers.get(API_KEY_HEADER) {
            let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            return match self.api_keys.get(&digest) {
                Some(principal) => Ok(principal.clone()),
                None => Err(refused("the API key is not one this gateway knows")),
            };
        }
        if let Some(names) = certificate_names.filter(|names| !names.is_empty()) {
            return Ok(Arc::new(Principal {
                display: format!("cert:{}", names[0]),
                identity: Identity::Certificate { names: names.to_vec() },
            }));
        }
        Err(refused(
            "no credentials: send 'authorization: Bearer <JWT>' or 'x-api-key: <key>' metadata, or a client certificate",
        ))
    }

    pub fn allows(&self, principal: &Principal, namespace: &str, permission: Permission) -> bool {
        rules::allowed(&self.rules, principal, namespace, permission)
    }
}

/// The credential of an `authorization` value in the `Bearer` scheme, whose name is
/// case-insensitive (RFC 7235): `Bearer x`, `bearer x` and `BEARER x` alike.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

fn refused(reason: &str) -> Refusal {
    Refusal::Refused(reason.to_owned())
}

fn unauthenticated(reason: impl Into<String>) -> Status {
    Status::unauthenticated(reason.into())
}

/// The verified caller of the call being served and the permission its RPC needs, set by
/// [`crate::layers::auth::AuthLayer`] around the call and read when the call names its namespace.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The RPC called and the permission it needs.
    pub rpc: &'static methods::Rpc,
}

impl Caller {
    /// `KeyValueService.Get`, for messages and audit lines.
    pub fn method(&self) -> String {
        format!("{}.{}", self.rpc.0, self.rpc.1)
    }

    pub fn permission(&self) -> Permission {
        self.rpc.2
    }
}

tokio::task_local! {
    pub static CALLER: Caller;
}

/// Whether the current call may use `namespace`: `Ok` with auth off; with auth on, the
/// caller set by the layer needs a rule granting its permission there.
pub fn authorize(auth: Option<&Auth>, namespace: &str) -> Result<(), Status> {
    check(auth, namespace, Caller::permission, Caller::method)
}

/// Whether the current call may also do `permission` on `namespace`, which `why` needs
/// beyond what its RPC does (a read inside a transaction needs `write`).
pub fn authorize_also(
    auth: Option<&Auth>,
    namespace: &str,
    permission: Permission,
    why: &str,
) -> Result<(), Status> {
    check(auth, namespace, |_| permission, |_| why.to_owned())
}

/// The caller needs `permission_of(caller)` on `namespace`; a refusal (audited) says
/// that `why_of(caller)` needs it. `why_of` runs only on a refusal.
fn check(
    auth: Option<&Auth>,
    namespace: &str,
    permission_of: impl FnOnce(&Caller) -> Permission,
    why_of: impl FnOnce(&Caller) -> String,
) -> Result<(), Status> {
    let Some(auth) = auth else { return Ok(()) };
    let decision = CALLER.try_with(|caller| {
        let permission = permission_of(caller);
        if auth.allows(&caller.principal, namespace, permission) {
            return Ok(());
        }
        audit_denied(&caller.principal.display, namespace, &caller.method(), permission);
        Err(Status::permission_denied(format!(
            "{} may not {permission} on namespace '{namespace}' ({} needs {permission})",
            caller.principal.display,
            why_of(caller)
        )))
    });
    // A call that reached a namespace without passing the layer: refuse, never serve.
    decision.unwrap_or_else(|_| Err(Status::permission_denied("this call was not authenticated")))
}

/// The current call's principal as its name (`subject:alice`), with auth on.
pub fn current_principal() -> Option<String> {
    with_principal(|principal| principal.map(|principal| principal.display.clone()))
}

/// Runs `f` with the current call's principal (None with auth off, or outside a call).
pub fn with_principal<R>(f: impl FnOnce(Option<&Principal>) -> R) -> R {
    let mut f = Some(f);
    match CALLER.try_with(|caller| (f.take().expect("called once"))(Some(&caller.principal))) {
        Ok(result) => result,
        Err(_) => (f.take().expect("not called yet"))(None),
    }
}

/// The audit trail: one line per denied call and per admin call, on the `prism::audit`
/// target so operators can route it.
pub fn audit_denied(principal: &str, namespace: &str, method: &str, permission: Permission) {
    tracing::warn!(target: "prism::audit", principal, namespace, method, %permission, decision = "deny", "denied");
}

pub fn audit_unauthenticated(path: &str, reason: &str) {
    // The path is one the router knows or a client's invention: bounded and escaped.
    let method = crate::shared::shown(path);
    tracing::warn!(target: "prism::audit", %method, reason, decision = "unauthenticated", "refused");
}

/// An admin call: it needs `admin` on every namespace (`*`), which the line says.
pub fn audit_admin(principal: &str, method: &str, decision: &str) {
    let (namespace, permission) = ("*", Permission::Admin);
    tracing::info!(target: "prism::audit", principal, method, namespace, %permission, decision, "admin call");
}
