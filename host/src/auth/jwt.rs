//! JWT bearer tokens checked against a JSON Web Key Set ([`super::jwks`]): signature
//! (asymmetric algorithms from an allow-list only), `iss`, `aud`, `exp`, `nbf`. A
//! verified token is cached until it expires (keyed by the whole token, compared
//! exactly), so a repeated token costs a hash-map lookup; and each thread remembers the
//! last few it saw, so a client repeating its token on every call costs a comparison,
//! off the shared cache's lock.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::JwtConfig;
use super::jwks::{KeySource, RemoteKeys};
use super::rules::{Identity, Principal};
use crate::shared::shown;

/// Longest bearer token read; a longer one is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens remembered at once; when full, expired ones go, then all.
const CACHE_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct JwtVerifier {
    keys: KeySource,
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    leeway_s: u64,
    groups_claim: String,
    cache: Mutex<HashMap<Box<str>, Verified>>,
    /// Tells this verifier's entries in the per-thread caches from a replaced one's.
    id: u64,
}

/// Tokens each thread remembers (most recent first).
const RECENT_PER_THREAD: usize = 4;

thread_local! {
    static RECENT: std::cell::RefCell<Vec<Recent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A token this thread saw verified, by which verifier.
struct Recent {
    verifier: u64,
    token: Box<str>,
    verified: Verified,
}

/// The caller of `token` if this thread saw `verifier` accept it and it has not expired.
fn recently_verified(verifier: u64, token: &str, now: u64) -> Option<Arc<Principal>> {
    RECENT.with_borrow(|recent| {
        recent
            .iter()
            .find(|seen| seen.verifier == verifier && *seen.token == *token && now <= seen.verified.1)
            .map(|seen| seen.verified.0.clone())
    })
}

fn remember_recent(verifier: u64, token: &str, verified: &Verified) {
    RECENT.with_borrow_mut(|recent| {
        recent.retain(|seen| !(seen.verifier == verifier && *seen.token == *token));
        recent.truncate(RECENT_PER_THREAD - 1);
        recent.insert(0, Recent { verifier, token: token.into(), verified: verified.clone() });
    });
}

/// A verified token's caller and when the token stops being accepted (unix seconds).
type Verified = (Arc<Principal>, u64);

/// Why a token was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Said to the caller (never quoting the token).
    Refused(String),
    /// The token names a key the remote key set may hold once fetched again.
    KeyNotYetKnown(Arc<RemoteKeys>),
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal::Refused(message)
    }
}

/// Algorithms a key set of public keys can verify. HMAC is not among them: with a
/// public key as the HMAC secret anyone could sign (the classic RS256→HS256 confusion).
const ASYMMETRIC: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

fn algorithm_name(algorithm: Algorithm) -> String {
    format!("{algorithm:?}")
}

impl JwtVerifier {
    /// Checks the settings and reads the key set; errors are `(key, message, fix)`.
    pub fn new(config: &JwtConfig, base_dir: &Path) -> Result<JwtVerifier, Vec<(String, String, String)>> {
        let mut errors = Vec::new();
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            match ASYMMETRIC.iter().find(|(known, _)| known == name) {
                Some((_, algorithm)) => algorithms.push(*algorithm),
                None => errors.push((
                    "auth.jwt.algorithms".to_owned(),
                    format!("'{name}' is not accepted: only asymmetric algorithms verify against a key set ('none' and HMAC never)"),
                    format!("use some of {}", ASYMMETRIC.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
                )),
            }
        }
        if config.algorithms.is_empty() {
            errors.push((
                "auth.jwt.algorithms".to_owned(),
                "is empty, so no token could be accepted".to_owned(),
                "list the algorithms your issuer signs with, e.g. [\"RS256\"]".to_owned(),
            ));
        }
        if config.leeway_s > 3600 {
            errors.push((
                "auth.jwt.leeway_s".to_owned(),
                format!("{} s would accept tokens long expired", config.leeway_s),
                "allow clock skew of seconds to minutes, e.g. 30".to_owned(),
            ));
        }
        for (key, value) in [("auth.jwt.issuer", &config.issuer), ("auth.jwt.audience", &config.audience)] {
            if value.is_empty() {
                errors.push((
                    key.to_owned(),
                    "must not be empty".to_owned(),
                    "set the value your issuer puts in its tokens".to_owned(),
                ));
            }
        }
        let keys = match (&config.jwks_file, &config.jwks_url) {
            (Some(file), None) => match KeySource::file(base_dir.join(file)) {
                Ok(keys) => Some(keys),
                Err(message) => {
                    errors.push((
                        "auth.jwt.jwks_file".to_owned(),
                        message,
                        "point it at your issuer's JSON Web Key Set (a relative path is read from the config file's directory)".to_owned(),
                    ));
                    None
                }
            },
            (None, Some(url)) => {
                let refresh = Duration::from_secs(config.jwks_refresh_s);
                if !(10..=86_400).contains(&config.jwks_refresh_s) {
                    errors.push((
                        "auth.jwt.jwks_refresh_s".to_owned(),
                        format!("{} is out of range", config.jwks_refresh_s),
                        "fetch the key set every 10 to 86400 seconds (default 300)".to_owned(),
                    ));
                }
                match KeySource::remote(url, config.jwks_ca_file.as_deref(), refresh, base_dir) {
                    Ok(keys) => Some(keys),
                    Err((key, message)) => {
                        errors.push((
                            key,
                            message,
                            "give your issuer's https:// key set URL, and jwks_ca_file if a private CA signs its certificate".to_owned(),
                        ));
                        None
                    }
                }
            }
            (Some(_), Some(_)) | (None, None) => {
                errors.push((
                    "auth.jwt".to_owned(),
                    "needs exactly one of jwks_file and jwks_url".to_owned(),
                    "set jwks_file = \"PATH\" or jwks_url = \"https://…\"".to_owned(),
                ));
                None
            }
        };
        if config.jwks_ca_file.is_some() && config.jwks_url.is_none() {
            errors.push((
                "auth.jwt.jwks_ca_file".to_owned(),
                "is only used with jwks_url".to_owned(),
                "remove it, or fetch the key set from jwks_url".to_owned(),
            ));
        }
        match keys {
            Some(keys) if errors.is_empty() => Ok(JwtVerifier {
                keys,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                algorithms,
                leeway_s: config.leeway_s,
                groups_claim: config.groups_claim.clone(),
                cache: Mutex::new(HashMap::new()),
                id: {
                    static VERIFIERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    VERIFIERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
            }),
            _ => Err(errors),
        }
    }

    /// Starts fetching a remote key set, so the first token need not wait for it.
    pub fn start(&self) {
        self.keys.start();
    }

    /// The caller a bearer token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Refused(format!(
                "the bearer token is {} bytes; at most {MAX_TOKEN_BYTES} are read",
                token.len()
            )));
        }
        let now = u64::try_from(plugin_abi::unix_millis() / 1000).unwrap_or(0);
        if let Some(principal) = recently_verified(self.id, token, now) {
            return Ok(principal);
        }
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned();
        if let Some(verified) = cached.filter(|(_, expires)| now <= *expires) {
            remember_recent(self.id, token, &verified);
            return Ok(verified.0);
        }
        let (principal, expires) = self.verify_uncached(token)?;
        let principal = Arc::new(principal);
        remember_recent(self.id, token, &(principal.clone(), expires));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (_, expires)| *expires >= now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.into(), (principal.clone(), expires));
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), Refusal> {
        if token.split('.').count() != 3 {
            return Err("the bearer token is not a JWT (three base64url parts separated by dots)"
                .to_owned()
                .into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| match raw_algorithm(token) {
            Some(alg) => {
                format!("the token's algorithm {} is not accepted ({})", shown(&alg), self.accepted())
            }
            None => "the token's header is not valid base64url JSON".to_owned(),
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::Refused(format!(
                "the token's algorithm {} is not accepted ({})",
                algorithm_name(header.alg),
                self.accepted()
            )));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
                .map_err(|error| self.reason(error.kind()))?;
        let claims = data.claims;
        let subject = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        if subject.is_empty() {
            return Err("the token's sub claim is empty or not a string".to_owned().into());
        }
        let expires = claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0).saturating_add(self.leeway_s);
        let groups = match claims.get(&self.groups_claim) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|g| g.as_str()).map(str::to_owned).collect()
            }
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let principal = Principal {
            display: format!("subject:{subject}"),
            identity: Identity::Jwt { subject, groups, claims },
        };
        Ok((principal, expires))
    }

    fn accepted(&self) -> String {
        let names: Vec<String> = self.algorithms.iter().map(|a| algorithm_name(*a)).collect();
        format!("accepted: {}", names.join(", "))
    }

    fn reason(&self, kind: &ErrorKind) -> String {
        match kind {
            ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)".to_owned(),
            ErrorKind::InvalidIssuer => format!("the token's issuer is not {}", shown(&self.issuer)),
            ErrorKind::InvalidAudience => {
                format!("the token's audience does not include {}", shown(&self.audience))
            }
            ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {} claim", shown(claim)),
            ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".to_owned(),
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                "the token is malformed".to_owned()
            }
            _ => "the token could not be verified".to_owned(),
        }
    }

    /// The key a token's `kid` names, looking for the key set again when it is unknown.
    fn key_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, Refusal> {
        if let Some(found) = self.find_key(kid, algorithm)? {
            return Ok(found);
        }
        self.keys.reread_file();
        if let Some(found) = self.find_key(kid, algorithm)? {
            return Ok(found);
        }
        if let Some(remote) = self.keys.remote_due() {
            return Err(Refusal::KeyNotYetKnown(remote));
        }
        Err(Refusal::Refused(match kid {
            Some(kid) => {
                format!("the token's key id {} is not in {}", shown(kid), self.keys.describe_missing())
            }
            None => format!(
                "the token names no key id (kid) and {} does not hold exactly one key",
                self.keys.describe_missing()
            ),
        }))
    }

    fn find_key(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<Option<DecodingKey>, String> {
        self.keys
            .with_keys(|set| {
                let jwk = match kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                };
                let Some(jwk) = jwk else { return Ok(None) };
                if let Some(key_algorithm) = jwk.common.key_algorithm {
                    if format!("{key_algorithm:?}") != algorithm_name(algorithm) {
                        return Err(format!(
                            "the token's algorithm {} is not the one its key is for ({key_algorithm:?})",
                            algorithm_name(algorithm)
                        ));
                    }
                }
                DecodingKey::from_jwk(jwk)
                    .map(Some)
                    .map_err(|_| "the token's key in the key set is not usable".to_owned())
            })
            .unwrap_or(Ok(None))
    }
}

/// The `alg` of a header jsonwebtoken cannot parse (e.g. `none`), to say why it failed.
fn raw_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}
