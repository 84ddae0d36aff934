//! The `[auth]` section of `plugins.toml`, as written.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether gRPC reflection answers callers without credentials.
    #[serde(default = "yes")]
    pub open_reflection: bool,
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A JSON Web Key Set file (relative to the config file's directory); or:
    pub jwks_file: Option<PathBuf>,
    /// An `https://` URL serving the key set (fetched, cached and refreshed).
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) that verify `jwks_url`'s server instead of the system's.
    pub jwks_ca_file: Option<PathBuf>,
    /// Seconds between fetches of `jwks_url` (sooner when a token names an unknown key).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_s: u64,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// A value the token's `aud` must be or contain.
    pub audience: String,
    /// Signature algorithms accepted (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// The claim listing the caller's groups (`group:NAME` principals).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_leeway() -> u64 {
    30
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The service account's name (`api_key:NAME` principals, audit lines).
    pub name: String,
    /// Hex SHA-256 of the key (`prism auth new-api-key` prints both).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Who: `subject:S`, `group:G`, `claim:NAME=VALUE`, `api_key:NAME`, `cert:NAME`, or
    /// `*` for any authenticated caller.
    pub principals: Vec<String>,
    /// Namespace names or globs (`*` matches any run of characters).
    pub namespaces: Vec<String>,
    /// `read`, `write`, `publish`, `subscribe`, `consume`, `admin`.
    pub permissions: Vec<String>,
}
