//! JWT bearer tokens checked against a JSON Web Key Set file: signature (asymmetric
//! algorithms from an allow-list only), `iss`, `aud`, `exp`, `nbf`. A verified token is
//! cached until it expires (keyed by the whole token, compared exactly), so a repeated
//! token costs a hash-map lookup.
//! The key set is read again when a token names a key id it does not hold and the file
//! has changed (at most once a second), so publishing a new key needs no reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::JwtConfig;
use super::rules::{Identity, Principal};
use crate::gateway::shown;

/// Longest bearer token read; a longer one is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens remembered at once; when full, expired ones go, then all.
const CACHE_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct JwtVerifier {
    jwks_file: PathBuf,
    keys: RwLock<KeySet>,
    last_refresh: Mutex<Instant>,
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    leeway_s: u64,
    groups_claim: String,
    cache: Mutex<HashMap<Box<str>, Verified>>,
}

/// A verified token's caller and when the token stops being accepted (unix seconds).
type Verified = (Arc<Principal>, u64);

#[derive(Debug)]
struct KeySet {
    set: JwkSet,
    modified: Option<SystemTime>,
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
        let jwks_file = base_dir.join(&config.jwks_file);
        let keys = match read_key_set(&jwks_file) {
            Ok(keys) => Some(keys),
            Err(message) => {
                errors.push((
                    "auth.jwt.jwks_file".to_owned(),
                    message,
                    "point it at your issuer's JSON Web Key Set (a relative path is read from the config file's directory)".to_owned(),
                ));
                None
            }
        };
        match keys {
            Some(keys) if errors.is_empty() => Ok(JwtVerifier {
                jwks_file,
                keys: RwLock::new(keys),
                last_refresh: Mutex::new(Instant::now()),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                algorithms,
                leeway_s: config.leeway_s,
                groups_claim: config.groups_claim.clone(),
                cache: Mutex::new(HashMap::new()),
            }),
            _ => Err(errors),
        }
    }

    /// The caller a bearer token names, or why it is refused (never quoting the token).
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "the bearer token is {} bytes; at most {MAX_TOKEN_BYTES} are read",
                token.len()
            ));
        }
        let now = u64::try_from(plugin_abi::unix_millis() / 1000).unwrap_or(0);
        if let Some((principal, expires)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
            if now <= *expires {
                return Ok(principal.clone());
            }
        }
        let (principal, expires) = self.verify_uncached(token)?;
        let principal = Arc::new(principal);
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

    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), String> {
        if token.split('.').count() != 3 {
            return Err("the bearer token is not a JWT (three base64url parts separated by dots)".to_owned());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| match raw_algorithm(token) {
            Some(alg) => {
                format!("the token's algorithm {} is not accepted ({})", shown(&alg), self.accepted())
            }
            None => "the token's header is not valid base64url JSON".to_owned(),
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!(
                "the token's algorithm {} is not accepted ({})",
                algorithm_name(header.alg),
                self.accepted()
            ));
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
            return Err("the token's sub claim is empty or not a string".to_owned());
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

    /// The key a token's `kid` names, reading the key set again when it is unknown and
    /// the file changed.
    fn key_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, String> {
        if let Some(found) = self.find_key(kid, algorithm)? {
            return Ok(found);
        }
        self.refresh();
        self.find_key(kid, algorithm)?.ok_or_else(|| match kid {
            Some(kid) => format!("the token's key id {} is not in the key set", shown(kid)),
            None => "the token names no key id (kid) and the key set holds several keys".to_owned(),
        })
    }

    fn find_key(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<Option<DecodingKey>, String> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let jwk = match kid {
            Some(kid) => keys.set.find(kid),
            None if keys.set.keys.len() == 1 => keys.set.keys.first(),
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
    }

    fn refresh(&self) {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed().as_millis() < 1000 {
                return;
            }
            *last = Instant::now();
        }
        let modified = std::fs::metadata(&self.jwks_file).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.keys.read().unwrap_or_else(|e| e.into_inner()).modified {
            return;
        }
        match read_key_set(&self.jwks_file) {
            Ok(keys) => {
                tracing::info!(file = %self.jwks_file.display(), keys = keys.set.keys.len(), "read the JWT key set again");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
            }
            Err(message) => tracing::warn!("keeping the JWT key set read before: {message}"),
        }
    }
}

fn read_key_set(file: &Path) -> Result<KeySet, String> {
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JSON Web Key Set: {e}", file.display()))?;
    if set.keys.is_empty() {
        return Err(format!("{} holds no keys", file.display()));
    }
    Ok(KeySet { set, modified })
}

/// The `alg` of a header jsonwebtoken cannot parse (e.g. `none`), to say why it failed.
fn raw_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}
