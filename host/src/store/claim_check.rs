//! Claim checks: on a namespace with a `claim_check` slot, a value or payload larger
//! than `server.claim_check_threshold_bytes` is written to the slot's object store and
//! a small reference travels through the backend instead; readers get the payload back,
//! checked against the SHA-256 and size in the reference.
//!
//! A reference is `MARKER` followed by `v1 {size} {sha256} {object}`. A value that
//! happens to start with the marker is always claimed, so whatever the backend holds
//! that starts with it is a reference. Objects are named `{namespace}/{random}`, and a
//! reference naming another namespace's object is refused, so a client cannot craft
//! one to read past its namespace.

use std::sync::Arc;

use plugin_abi::host::{Instance, ObjectWriter};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::shared::plugin_status;

/// What a reference starts with: bytes no text value begins with.
pub const MARKER: &[u8] = b"\0prism-claim-check\0";

/// Chunks handed to the object store and to streaming clients: at most 1 MiB.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Where a claimed payload is, and how to know it came back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub object: String,
    pub size: u64,
    pub sha256: String,
}

impl Reference {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MARKER.to_vec();
        bytes.extend_from_slice(format!("v1 {} {} {}", self.size, self.sha256, self.object).as_bytes());
        bytes
    }

    /// `None` for a plain value; an error for a marked value that is not a reference.
    pub fn decode(value: &[u8]) -> Option<Result<Reference, Status>> {
        let rest = value.strip_prefix(MARKER)?;
        let parsed = std::str::from_utf8(rest).ok().and_then(|text| {
            let mut fields = text.splitn(4, ' ');
            let (Some("v1"), Some(size), Some(sha256), Some(object)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            let valid_hash = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
            Some(Reference { object: object.to_owned(), size: size.parse().ok()?, sha256: sha256.to_owned() })
                .filter(|_| valid_hash)
        });
        Some(
            parsed.ok_or_else(|| {
                Status::data_loss("a stored claim-check reference is damaged and cannot be read")
            }),
        )
    }
}

/// The namespace's claim check, when it binds the slot.
#[derive(Clone)]
pub struct ClaimCheck {
    store: Arc<Instance>,
    namespace: String,
    threshold: usize,
    max_object: u64,
}

impl ClaimCheck {
    /// The claim check of `namespace`, whose `claim_check` slot is bound to `store`.
    pub fn new(store: Arc<Instance>, namespace: String, threshold: usize, max_object: u64) -> ClaimCheck {
        ClaimCheck { store, namespace, threshold, max_object }
    }

    /// Whether both are the same bound instance (a reload replaces it).
    pub fn same_store(&self, other: &ClaimCheck) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
    }

    /// Whether a value written through a claiming RPC goes to the object store.
    pub fn claims(&self, value: &[u8]) -> bool {
        value.len() > self.threshold || value.starts_with(MARKER)
    }

    fn objects(&self) -> Result<plugin_abi::host::ObjectStoreBasicHandle<'_>, Status> {
        self.store.object_store_basic().ok_or_else(|| {
            Status::failed_precondition("the claim_check slot's plugin lacks object_store_basic")
        })
    }

    /// Starts an upload to a new object of this namespace.
    pub async fn upload(&self) -> Result<Upload, Status> {
        let object = format!("{}/{:032x}", self.namespace, fastrand::u128(..));
        debug_assert!(is_object_id(&object[self.namespace.len() + 1..]));
        let writer = self.objects()?.put(&object).await.map_err(plugin_status)?;
        Ok(Upload { writer, object, hasher: Sha256::new(), size: 0, max: self.max_object })
    }

    /// Writes `value` to a new object and returns the reference to store instead.
    pub async fn claim(&self, value: &[u8]) -> Result<Reference, Status> {
        let mut upload = self.upload().await?;
        for chunk in value.chunks(CHUNK_BYTES) {
            upload.write(chunk.to_vec()).await?;
        }
        upload.finish().await
    }

    /// The object a reference names, checked to be this namespace's.
    fn owned<'a>(&self, reference: &'a Reference) -> Result<&'a str, Status> {
        match reference.object.strip_prefix(&self.namespace) {
            Some(rest) if rest.starts_with('/') => Ok(&reference.object),
            _ => Err(Status::permission_denied("a claim-check reference names another namespace's object")),
        }
    }

    /// Opens the payload behind a reference as a checked stream of chunks; `None` when
    /// its object is gone (the caller decides: read the key again, or [`gone`]).
    pub async fn try_open(&self, reference: Reference) -> Result<Option<Payload>, Status> {
        let object = self.owned(&reference)?;
        let Some(plugin_abi::ObjectRead { chunks, .. }) =
            self.objects()?.get(object).await.map_err(plugin_status)?
        else {
            return Ok(None);
        };
        Ok(Some(Payload { chunks, reference, hasher: Sha256::new(), read: 0 }))
    }

    /// The whole payload a stored value stands for: the value itself unless it is a
    /// reference; `None` when the reference's object is gone. A payload over `max`
    /// bytes is refused: read it with GetStream.
    pub async fn try_resolve(&self, value: Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, Status> {
        let Some(reference) = Reference::decode(&value) else { return Ok(Some(value)) };
        let reference = reference?;
        if reference.size > max as u64 {
            return Err(Status::failed_precondition(format!(
                "the value is {} bytes, more than one response carries (server.max_value_bytes = {max}); read it with GetStream",
                reference.size
            )));
        }
        let Some(mut payload) = self.try_open(reference).await? else { return Ok(None) };
        let mut bytes = Vec::with_capacity(payload.reference.size as usize);
        while let Some(chunk) = payload.next().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// Like [`ClaimCheck::try_resolve`]; a gone object is `DATA_LOSS`.
    pub async fn resolve(&self, value: Vec<u8>, max: usize) -> Result<Vec<u8>, Status> {
        let size = payload_size(Some(self), &value);
        self.try_resolve(value, max).await?.ok_or_else(|| gone(size as u64))
    }

    /// Deletes the object `id` of this namespace (a claimed message once acked).
    pub async fn delete_id(&self, id: &str) {
        if is_object_id(id) {
            self.delete_object(&format!("{}/{id}", self.namespace)).await;
        }
    }

    /// Deletes an object of this namespace by name.
    pub async fn delete_object(&self, object: &str) {
        let Ok(objects) = self.objects() else { return };
        if let Err(error) = objects.delete(object).await {
            tracing::warn!(object, %error, "could not delete a claim-check object; the bucket's lifecycle rule must");
        }
    }

    /// After a write of `stored` (a reference, or a plain value) failed with `status`:
    /// deletes the object only when the write certainly stored nothing. After a timeout
    /// or a lost connection it may have landed, and deleting would lose the payload; the
    /// object stays, and the bucket's lifecycle rule removes it if it was not written.
    pub async fn abandon(&self, stored: &[u8], status: &Status) {
        if certainly_not_written(status) {
            self.release(Some(stored)).await;
        }
    }

    /// Deletes the object behind a stored value that was a reference. Best effort: the
    /// value is already gone, so a failure is logged and left to the bucket's lifecycle.
    pub async fn release(&self, stored: Option<&[u8]>) {
        let Some(Ok(reference)) = stored.and_then(Reference::decode) else { return };
        if let Ok(object) = self.owned(&reference) {
            self.delete_object(object).await;
        }
    }
}

/// Whether a write that failed with `status` certainly stored nothing.
pub fn certainly_not_written(status: &Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated
            | Code::ResourceExhausted
    )
}

/// The status of a payload whose object is no longer in the store.
pub fn gone(size: u64) -> Status {
    Status::data_loss(format!(
        "the object holding this {size}-byte payload is gone from the claim-check store (deleted, or expired by a lifecycle rule)"
    ))
}

/// A payload being written to the object store, hashed and counted on the way.
pub struct Upload {
    writer: ObjectWriter,
    object: String,
    hasher: Sha256,
    size: u64,
    max: u64,
}

impl Upload {
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), Status> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(Status::invalid_argument(format!(
                "the value passed {} bytes, the most this server stores as one object (server.max_object_bytes)",
                self.max
            )));
        }
        self.hasher.update(&chunk);
        self.writer.write(chunk).await.map_err(plugin_status)
    }

    pub async fn finish(self) -> Result<Reference, Status> {
        self.writer.finish().await.map_err(plugin_status)?;
        Ok(Reference { object: self.object, size: self.size, sha256: hex::encode(self.hasher.finalize()) })
    }
}

/// A claimed payload being read: its chunks, checked against the reference's size
/// and SHA-256 when the last one has been read.
pub struct Payload {
    chunks: plugin_abi::Feed<Vec<u8>>,
    pub reference: Reference,
    hasher: Sha256,
    read: u64,
}

impl Payload {
    /// The next chunk; `None` at the end, once the payload proved whole.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        match self.chunks.next().await {
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                self.hasher.update(&chunk);
                if self.read > self.reference.size {
                    return Err(self.damaged());
                }
                Ok(Some(chunk))
            }
            Some(Err(error)) => Err(plugin_status(error)),
            None => {
                let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
                if self.read != self.reference.size || sha256 != self.reference.sha256 {
                    return Err(self.damaged());
                }
                Ok(None)
            }
        }
    }

    fn damaged(&self) -> Status {
        Status::data_loss(format!(
            "the claim-check object {} does not match its reference ({} bytes, sha256 {}): it was changed or damaged in the object store",
            self.reference.object, self.reference.size, self.reference.sha256
        ))
    }
}

/// A claimed queue delivery's receipt as the client sees it: the plugin's receipt with
/// the payload's object named in front, so that an Ack on any gateway, after any restart,
/// deletes the object. The object part names an object of the namespace acked in, and
/// is used only once the plugin has accepted the Ack: a consumer can delete only the
/// payload of a message that was delivered to it, which acking that message does too.
pub mod receipt {
    const PREFIX: &str = "prism-claim:";

    /// The receipt a client gets for a delivery whose payload is `object` of `namespace`.
    pub fn wrap(namespace: &str, object: &str, plugin_receipt: &str) -> String {
        let id = object.strip_prefix(namespace).and_then(|rest| rest.strip_prefix('/')).unwrap_or(object);
        format!("{PREFIX}{id}:{plugin_receipt}")
    }

    /// The object's id within its namespace (when the gateway wrapped the receipt) and
    /// the plugin's receipt; a receipt the gateway did not wrap is the plugin's as it is.
    pub fn unwrap(receipt: &str) -> (Option<&str>, &str) {
        let parsed = receipt.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':'));
        match parsed {
            Some((id, plugin_receipt)) if super::is_object_id(id) => (Some(id), plugin_receipt),
            _ => (None, receipt),
        }
    }
}

/// Whether `id` is what [`ClaimCheck::upload`] names an object with, after the namespace.
fn is_object_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The bytes a stored value stands for: a reference's payload size, else its own
/// length — what response budgets count, before anything is fetched.
pub fn payload_size(claim: Option<&ClaimCheck>, value: &[u8]) -> usize {
    match (claim, Reference::decode(value)) {
        (Some(_), Some(Ok(reference))) => usize::try_from(reference.size).unwrap_or(usize::MAX),
        _ => value.len(),
    }
}

/// In a namespace with a claim check, values written by RPCs that do not claim
/// (batches, transactions, compare-and-swap) must not look like references.
pub fn check_not_marked(claim: Option<&ClaimCheck>, field: &str, value: &[u8]) -> Result<(), Status> {
    if claim.is_some() && value.starts_with(MARKER) {
        return Err(Status::invalid_argument(format!(
            "{field} starts with the claim-check marker bytes, which this RPC cannot store in a namespace with a claim check; write it with Set"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_plain_values_are_not_references() {
        let reference = Reference { object: "ns/0af3".into(), size: 5 << 30, sha256: "ab".repeat(32) };
        assert_eq!(Reference::decode(&reference.encode()).unwrap().unwrap(), reference);
        assert!(Reference::decode(b"plain value").is_none());
        assert!(Reference::decode(b"").is_none());
    }

    #[test]
    fn only_a_refused_write_gives_its_object_up() {
        for refused in [Status::invalid_argument("x"), Status::unimplemented("x"), Status::aborted("x")] {
            assert!(certainly_not_written(&refused), "{refused:?}");
        }
        // The write may have landed: the object must stay.
        for unsure in [Status::unavailable("x"), Status::deadline_exceeded("x"), Status::internal("x")] {
            assert!(!certainly_not_written(&unsure), "{unsure:?}");
        }
    }

    #[test]
    fn a_wrapped_receipt_names_its_object_and_any_other_receipt_is_the_plugins() {
        let id = "0123456789abcdef0123456789abcdef";
        let wrapped = receipt::wrap("ns", &format!("ns/{id}"), "plugin:receipt:with:colons");
        assert_eq!(receipt::unwrap(&wrapped), (Some(id), "plugin:receipt:with:colons"));
        for plain in ["42", "prism-claim:", "prism-claim:nothex:r", "prism-claim:0123:r", ""] {
            assert_eq!(receipt::unwrap(plain), (None, plain), "{plain}");
        }
    }

    #[test]
    fn a_marked_value_that_is_no_reference_is_data_loss() {
        let mut damaged = MARKER.to_vec();
        damaged.extend_from_slice(b"v1 12 not-a-hash ns/x");
        assert_eq!(Reference::decode(&damaged).unwrap().unwrap_err().code(), tonic::Code::DataLoss);
    }
}
