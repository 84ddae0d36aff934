use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use plugin_abi::{ObjectInfo, ObjectUpload, PluginResult};

use crate::errors::store_error;

/// Parts in flight at once: memory per upload stays near three parts.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// An object being written: buffered until it outgrows one part (then one PUT at
/// `finish`), else a multipart upload fed part by part.
pub struct Upload {
    store: Arc<AmazonS3>,
    bucket: String,
    path: Path,
    part_size: usize,
    written: u64,
    state: State,
}

enum State {
    Buffering(Vec<u8>),
    Multipart(WriteMultipart),
}

impl Upload {
    pub fn new(store: Arc<AmazonS3>, path: Path, part_size: usize, bucket: String) -> Upload {
        Upload { store, bucket, path, part_size, written: 0, state: State::Buffering(Vec::new()) }
    }

    fn info(&self) -> ObjectInfo {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or_default();
        ObjectInfo { size: self.written, modified_unix_ms: now }
    }
}

impl ObjectUpload for Upload {
    async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        self.written += chunk.len() as u64;
        match &mut self.state {
            State::Buffering(buffer) if buffer.len() + chunk.len() <= self.part_size => {
                buffer.extend_from_slice(&chunk);
            }
            State::Buffering(buffer) => {
                let buffered = std::mem::take(buffer);
                let upload = self
                    .store
                    .put_multipart(&self.path)
                    .await
                    .map_err(|error| write_error(&self.bucket, "start multipart upload", error))?;
                let mut parts = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                parts.write(&buffered);
                parts.write(&chunk);
                self.state = State::Multipart(parts);
            }
            State::Multipart(parts) => parts.write(&chunk),
        }
        if let State::Multipart(parts) = &mut self.state {
            parts
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(|error| store_error("upload part", error))?;
        }
        Ok(())
    }

    async fn finish(self) -> PluginResult<ObjectInfo> {
        let info = self.info();
        let bucket = &self.bucket;
        match self.state {
            State::Buffering(buffer) => {
                self.store
                    .put(&self.path, PutPayload::from(buffer))
                    .await
                    .map_err(|error| write_error(bucket, "put", error))?;
            }
            State::Multipart(parts) => {
                parts.finish().await.map_err(|error| store_error("complete multipart upload", error))?;
            }
        }
        Ok(info)
    }

    async fn abort(self) {
        if let State::Multipart(parts) = self.state {
            // Best effort: a part left behind is removed by the bucket's lifecycle rule
            // for incomplete multipart uploads (docs/CONFIG.md).
            let _ = parts.abort().await;
        }
    }
}

/// A write answered 404 means the bucket is missing, which the operator must fix.
fn write_error(bucket: &str, what: &str, error: object_store::Error) -> plugin_abi::PluginError {
    match error {
        object_store::Error::NotFound { .. } => plugin_abi::PluginError::failed_precondition(format!(
            "s3: {what}: bucket {bucket} does not exist; create it, or fix `bucket` in the slot config"
        )),
        error => store_error(what, error),
    }
}
