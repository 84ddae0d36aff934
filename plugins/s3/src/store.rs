use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path, PathPart};
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt};

use plugin_abi::{
    ConfigKey, Driver, Feed, Health, ObjectEntry, ObjectInfo, ObjectRead, ObjectStoreBasic, PluginError,
    PluginResult,
};

use crate::config::Config;
use crate::errors::store_error;
use crate::upload::Upload;

pub struct S3 {
    store: Arc<AmazonS3>,
    prefix: String,
    part_size: usize,
    bucket: String,
}

impl S3 {
    /// `prefix/key`, the key as one path part: object_store escapes `/`, `%` and the
    /// characters S3 advises against, so `a/b`, `a//b` and `a%2Fb` stay three objects.
    fn path(&self, key: &str) -> Path {
        self.dir().join(PathPart::from(key))
    }

    /// Where this store's objects are: the configured prefix as a path.
    fn dir(&self) -> Path {
        self.prefix.split('/').collect()
    }
}

/// The key an object's path stands for, when it is one of this store's: one part below
/// the prefix, whose escapes `PathPart` wrote.
fn key_of(dir: &Path, path: &Path) -> Option<String> {
    let mut below = path.prefix_match(dir)?;
    let (Some(part), None) = (below.next(), below.next()) else { return None };
    percent_encoding::percent_decode_str(part.as_ref()).decode_utf8().ok().map(String::from)
}

fn info(meta: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo { size: meta.size, modified_unix_ms: meta.last_modified.timestamp_millis() }
}

impl Driver for S3 {
    type Config = Config;

    fn check(config: &Config) -> PluginResult<()> {
        config.check()
    }

    async fn create(config: Config) -> PluginResult<Self> {
        // TLS through rustls on `ring`; the provider is this library's own (the plugin
        // links its own rustls), so installing it touches nothing of the host's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(config.request_timeout_ms);
        // A bound on silence, not on a whole request: a multi-GiB object read at a slow
        // client's pace takes as long as it takes.
        let options = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_timeout_disabled()
            .with_read_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(5));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_client_options(options);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|error| PluginError::invalid_argument(format!("s3: {error}")))?;
        Ok(S3 {
            store: Arc::new(store),
            prefix: config.prefix,
            part_size: config.part_size_bytes,
            bucket: config.bucket,
        })
    }

    fn config_keys() -> Vec<ConfigKey> {
        plugin_abi::config_keys_of::<Config>()
    }

    async fn health(&self) -> Health {
        // A listing, not a HEAD: a missing object and a missing bucket both answer a HEAD
        // with 404, but only an existing bucket can be listed.
        let prefix: Path = self.prefix.split('/').collect();
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Health::serving(),
            Err(error) => Health::unhealthy(format!("bucket {}: {error}", self.bucket)),
        }
    }
}

impl ObjectStoreBasic for S3 {
    type Upload = Upload;

    async fn put(&self, key: &str) -> PluginResult<Upload> {
        Ok(Upload::new(self.store.clone(), self.path(key), self.part_size, self.bucket.clone()))
    }

    async fn get(&self, key: &str) -> PluginResult<Option<ObjectRead>> {
        let result = match self.store.get(&self.path(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(store_error("get", error)),
        };
        let info = info(&result.meta);
        let chunks = result
            .into_stream()
            .map(|chunk| chunk.map(|bytes| bytes.to_vec()).map_err(|error| store_error("read", error)));
        Ok(Some(ObjectRead { info, chunks: Feed::new(chunks) }))
    }

    async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(info(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(store_error("head", error)),
        }
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        // S3 answers a delete the same whether the object existed: ask first.
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        self.store.delete(&self.path(key)).await.map_err(|error| store_error("delete", error))?;
        Ok(true)
    }

    /// In S3's order (of the escaped keys), from just after `after`, or from just
    /// before the first key with `prefix`; it ends at the first key past the prefix.
    async fn list(&self, prefix: &str, after: &str, limit: u32) -> PluginResult<Vec<ObjectEntry>> {
        let dir = self.dir();
        let escaped_prefix = escaped(prefix);
        let start = match (after, &escaped_prefix) {
            ("", Some(escaped)) => start_before(&dir, escaped),
            ("", None) => dir.clone(),
            (after, _) => self.path(after),
        };
        let mut listing = self.store.list_with_offset(Some(&dir), &start);
        let mut entries = Vec::new();
        while entries.len() < limit as usize {
            let Some(meta) = listing.next().await else { break };
            let meta = meta.map_err(|error| store_error("list", error))?;
            let Some(part) = meta.location.prefix_match(&dir).and_then(|mut parts| parts.next()) else {
                continue;
            };
            if let Some(escaped) = &escaped_prefix {
                // Escaped keys with the prefix sort together: past them, none has it.
                if !part.as_ref().starts_with(escaped.as_str()) && part.as_ref() > escaped.as_str() {
                    break;
                }
            }
            if let Some(key) = key_of(&dir, &meta.location).filter(|key| key.starts_with(prefix)) {
                entries.push(ObjectEntry { key, info: info(&meta) });
            }
        }
        Ok(entries)
    }
}

/// `prefix` as the start of every escaped key that has it; `None` for `.` and `..`,
/// which `PathPart` escapes whole (so `.x` does not start with `.`'s escape).
fn escaped(prefix: &str) -> Option<String> {
    match prefix {
        "." | ".." => None,
        other => Some(PathPart::from(other).as_ref().to_owned()),
    }
}

/// An offset below every key that starts with `escaped` (S3 lists strictly after it).
fn start_before(dir: &Path, escaped: &str) -> Path {
    let shorter = &escaped[..escaped.len().saturating_sub(1)];
    match shorter.is_empty() {
        true => dir.clone(),
        false => Path::parse(format!("{dir}/{shorter}")).unwrap_or_else(|_| dir.clone()),
    }
}
