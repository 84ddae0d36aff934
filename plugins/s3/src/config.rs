use serde::Deserialize;

use plugin_abi::PluginError;

/// S3 needs parts of at least 5 MiB (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// The slot's `config` table for s3.
#[derive(Debug, Clone, Deserialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bucket objects go to; it must exist.
    pub bucket: String,
    /// The service's URL, e.g. `http://127.0.0.1:9000` for MinIO; leave out for AWS S3.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id; write `${env:AWS_ACCESS_KEY_ID}` to keep it out of the file.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key; write `${env:AWS_SECRET_ACCESS_KEY}` or `${file:…}`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Every object's name starts with this (`prefix/…`), so several namespaces can share a bucket.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Size of each part of a large upload (at least 5 MiB); two parts may be in flight at once.
    #[serde(default = "default_part_size")]
    pub part_size_bytes: usize,
    /// Allow a plain `http://` endpoint (a local test server); never for a real deployment.
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `bucket.host` (AWS) rather than `host/bucket` (most local servers).
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Longest the store may stay silent within one request (a whole large object may take longer).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_prefix() -> String {
    "prism".into()
}

fn default_part_size() -> usize {
    8 * 1024 * 1024
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

impl Config {
    pub fn check(&self) -> Result<(), PluginError> {
        if self.bucket.trim().is_empty() {
            return Err(PluginError::invalid_argument("bucket: must name an existing bucket"));
        }
        if self.part_size_bytes < MIN_PART_SIZE {
            return Err(PluginError::invalid_argument(format!(
                "part_size_bytes: {} is below S3's minimum part size; use at least {MIN_PART_SIZE}",
                self.part_size_bytes
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.starts_with("http://") && !self.allow_http {
                return Err(PluginError::invalid_argument(format!(
                    "endpoint: {endpoint} is plain http; use https, or set allow_http = true for a local test server"
                )));
            }
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(PluginError::invalid_argument(format!(
                    "endpoint: {endpoint} is not a URL; write e.g. https://s3.example.com"
                )));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(PluginError::invalid_argument(
                "access_key_id and secret_access_key: give both, or neither (to use the environment's AWS credentials)",
            ));
        }
        if self.prefix.contains("//") || self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(PluginError::invalid_argument(format!(
                "prefix: {:?} must not start or end with '/' or contain '//'",
                self.prefix
            )));
        }
        Ok(())
    }
}
