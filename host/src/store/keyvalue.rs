//! A key-value namespace as the services use it: values in and out with their claim
//! checks resolved, transaction ids mapped, and responses kept within their budget.
//! Everything a `KeyValueService` handler does beyond translating protobuf and checking
//! its own input.

use std::sync::Arc;

use bytes::Bytes;
use plugin_abi::host::Instance;
use plugin_abi::CasResult;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::claim_check::{payload_size, ClaimCheck, Payload, Reference, CHUNK_BYTES};
use super::{need, Stores};
use crate::auth::methods::Permission;
use crate::gateway::{Namespace, NamespaceRef};
use crate::patterns::KEYVALUE;
use crate::shared::plugin_status;

/// The key-value pattern's one slot.
pub const STORE: &str = "store";

/// Reads of a key that keeps being replaced while its payload is fetched, before ABORTED.
const REREADS: usize = 3;

/// How a transaction ends.
pub enum Ending {
    Commit,
    Rollback,
}

/// Where a streamed value's chunks come from (a SetStream, already checked).
pub trait Chunks: Send {
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, Status>> + Send;
}

/// A value read out in chunks of at most 1 MiB: its size comes with the first.
pub type ValueChunks = tokio::sync::mpsc::Receiver<Result<(u64, Vec<u8>), Status>>;

/// Entries read out one at a time, as the client takes them.
pub type Entries = tokio::sync::mpsc::Receiver<Result<(String, Vec<u8>), Status>>;

/// One key-value namespace, resolved for one call.
pub struct KeyValueStore {
    pub namespace: NamespaceRef,
    instance: Arc<Instance>,
    claim: Option<ClaimCheck>,
    stores: Arc<Stores>,
}

impl Stores {
    /// The key-value namespace `name`, for one call.
    pub async fn keyvalue(self: &Arc<Self>, name: &str) -> Result<KeyValueStore, Status> {
        let namespace = self.gateway.namespace(name, KEYVALUE).await?;
        let instance =
            namespace.slot(STORE).expect("keyvalue namespaces always bind 'store'").instance.clone();
        let claim = self.claim_check(&namespace);
        Ok(KeyValueStore { namespace, instance, claim, stores: self.clone() })
    }
}

impl KeyValueStore {
    /// The bound instance, for calls that need nothing of this layer.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    pub fn claim_check(&self) -> Option<&ClaimCheck> {
        self.claim.as_ref()
    }

    /// The claim check alone, letting go of the namespace (and its gate).
    pub fn into_claim_check(self) -> Option<ClaimCheck> {
        self.claim
    }

    fn max_value(&self) -> usize {
        self.stores.gateway.settings.max_value_bytes
    }

    /// A value as a claiming write may take it: not one that looks like a reference.
    pub fn check_not_marked(&self, field: &str, value: &[u8]) -> Result<(), Status> {
        super::claim_check::check_not_marked(self.claim.as_ref(), field, value)
    }

    /// The value of `key` and its version (0 inside a transaction, or when the plugin
    /// keeps none), its payload fetched when it is claimed.
    pub async fn get(&self, key: &str, transaction: u64) -> Result<Option<(Vec<u8>, u64)>, Status> {
        if transaction != 0 {
            // A transaction is written as a whole: reading inside one needs write too.
            let auth = self.stores.gateway.routing().auth.clone();
            let namespace = &self.namespace.name;
            crate::auth::authorize_also(
                auth.as_deref(),
                namespace,
                Permission::Write,
                "a Get inside a transaction",
            )?;
            let tx = self.need_tx("Get in a transaction")?;
            let id = self.find_transaction(transaction)?;
            let Some(value) = tx.tx_get(id, key).await.map_err(plugin_status)? else { return Ok(None) };
            let value = match &self.claim {
                Some(claim) => claim.resolve(value, self.max_value()).await?,
                None => value,
            };
            return Ok(Some((value, 0)));
        }
        let Some((value, version)) = stored(&self.namespace, &self.instance, key).await? else {
            return Ok(None);
        };
        match &self.claim {
            Some(claim) => {
                resolve_key(claim, &self.namespace, &self.instance, key, value, version, self.max_value())
                    .await
            }
            None => Ok(Some((value, version))),
        }
    }

    /// Writes `value` over `key` outside a transaction, through the object store when
    /// the namespace claims it.
    pub async fn set(
        self,
        key: String,
        value: Vec<u8>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), Status> {
        let Some(claim) = &self.claim else {
            return write_value(&self.namespace, &self.instance, &key, value, ttl).await;
        };
        let value = match claim.claims(&value) {
            true => claim.claim(&value).await?.encode(),
            false => value,
        };
        replace_claimed(claim, &self.namespace, &self.instance, &key, value, ttl).await
    }

    /// Writes `value` over `key` inside transaction `transaction`.
    pub async fn tx_set(&self, transaction: u64, key: &str, value: Vec<u8>) -> Result<(), Status> {
        self.check_not_marked("value", &value)?;
        let tx = self.need_tx("Set in a transaction")?;
        let id = self.find_transaction(transaction)?;
        tx.tx_set(id, key, value).await.map_err(plugin_status)
    }

    /// Deletes `key` (inside `transaction`, or only at `expected_version` when either is
    /// not 0), and the object its value referred to. Whether it existed.
    pub async fn delete(&self, key: &str, transaction: u64, expected_version: u64) -> Result<bool, Status> {
        let previous = match (&self.claim, transaction) {
            (Some(_), 0) => stored(&self.namespace, &self.instance, key).await?.map(|(value, _)| value),
            _ => None,
        };
        let deleted = if transaction != 0 {
            let tx = self.need_tx("Delete in a transaction")?;
            let id = self.find_transaction(transaction)?;
            tx.tx_delete(id, key).await.map_err(plugin_status)?
        } else if expected_version > 0 {
            let cas =
                need(&self.namespace, STORE, self.instance.keyvalue_cas(), "Delete with expected_version")?;
            match cas.delete_if_version(key, expected_version).await.map_err(plugin_status)? {
                CasResult::Swapped { .. } => true,
                CasResult::Conflict { current_version } => {
                    return Err(conflict(key, expected_version, current_version))
                }
            }
        } else {
            let basic = need(&self.namespace, STORE, self.instance.keyvalue_basic(), "Delete")?;
            basic.delete(key).await.map_err(plugin_status)?
        };
        if let (Some(claim), true) = (&self.claim, deleted) {
            claim.release(previous.as_deref()).await;
        }
        Ok(deleted)
    }

    /// Writes `value` over `key` if its version is `expected` (0: if absent); the new version.
    pub async fn compare_and_swap(
        self,
        key: String,
        expected: u64,
        value: Vec<u8>,
        ttl: Option<std::time::Duration>,
    ) -> Result<u64, Status> {
        let cas = need(&self.namespace, STORE, self.instance.keyvalue_cas(), "CompareAndSwap")?;
        match cas.compare_and_swap(&key, expected, value, ttl).await.map_err(plugin_status)? {
            CasResult::Swapped { version } => Ok(version),
            CasResult::Conflict { current_version } => Err(conflict(&key, expected, current_version)),
        }
    }

    /// The values of `keys` (repeats included), each distinct key fetched once, in
    /// chunks that cannot pass the response budget; the response is counted against it
    /// too, so a batch naming one large value a thousand times is refused, not buffered.
    pub async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, Status> {
        let batch = need(&self.namespace, STORE, self.instance.keyvalue_batch(), "BatchGet")?;
        let mut distinct: Vec<&str> = keys.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut found: std::collections::HashMap<&str, Option<Bytes>> =
            std::collections::HashMap::with_capacity(distinct.len());
        let mut fetched = self.stores.budget();
        let mut pending = &distinct[..];
        while !pending.is_empty() {
            // Sized by what is left, so memory never passes the budget by more than one entry.
            let (chunk, rest) = pending.split_at(fetched.entries_that_fit().max(1).min(pending.len()));
            pending = rest;
            let values = batch.batch_get(chunk.iter().map(|key| key.to_string()).collect()).await;
            for (key, value) in chunk.iter().zip(values.map_err(plugin_status)?) {
                let size = value.as_deref().map_or(0, |value| payload_size(self.claim.as_ref(), value));
                fetched.spend(key.len() + size);
                found.insert(key, value.map(Bytes::from));
            }
            // Every distinct key is in the response at least once.
            if fetched.exceeded() {
                return Err(fetched.refusal("BatchGet", found.len(), keys.len()));
            }
        }
        if let Some(claim) = &self.claim {
            for (key, value) in found.iter_mut() {
                if let Some(stored) = value.take() {
                    let current = resolve_key(
                        claim,
                        &self.namespace,
                        &self.instance,
                        key,
                        stored.into(),
                        0,
                        self.max_value(),
                    );
                    *value = current.await?.map(|(payload, _)| payload.into());
                }
            }
        }
        let mut budget = self.stores.budget();
        let mut values = Vec::with_capacity(keys.len());
        for (done, key) in keys.iter().enumerate() {
            let value = found.get(key.as_str()).cloned().flatten();
            budget.spend(key.len() + value.as_ref().map_or(0, Bytes::len));
            if budget.exceeded() {
                return Err(budget.refusal("BatchGet", done, keys.len()));
            }
            values.push(value);
        }
        Ok(values)
    }

    /// Scanned entries with their claimed payloads fetched; a key deleted while its
    /// payload was being fetched is left out.
    pub async fn resolve_entries(
        &self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, Vec<u8>)>, Status> {
        let Some(claim) = &self.claim else { return Ok(entries) };
        let mut resolved = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let current =
                resolve_key(claim, &self.namespace, &self.instance, &key, value, 0, self.max_value());
            if let Some((value, _)) = current.await? {
                resolved.push((key, value));
            }
        }
        Ok(resolved)
    }

    /// Every entry under `prefix`, as the client reads them, payloads fetched. The
    /// namespace's gate is not held while the client reads.
    pub fn scan_stream(self, prefix: &str) -> Result<Entries, Status> {
        let scan = need(&self.namespace, STORE, self.instance.keyvalue_scan(), "ScanStream")?;
        let mut entries = scan.scan_stream(prefix);
        let (claim, max_value, instance) =
            (self.claim, self.stores.gateway.settings.max_value_bytes, self.instance);
        let shared = self.namespace.shared();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            // Holding the instance keeps it alive until the client stops reading.
            while let Some(item) = entries.next().await {
                let item = match (item, &claim) {
                    (Ok((key, value)), Some(claim)) => {
                        match resolve_key(claim, &shared, &instance, &key, value, 0, max_value).await {
                            Ok(Some((value, _))) => Ok((key, value)),
                            Ok(None) => continue, // deleted while its payload was being fetched
                            Err(status) => Err(status),
                        }
                    }
                    (item, _) => item.map_err(plugin_status),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    break; // client gone (dropping `entries` cancels the plugin's pump) or error sent
                }
            }
        });
        Ok(receiver)
    }

    /// The value of `key` in chunks of at most 1 MiB, a claimed payload straight from
    /// the object store, checked as it streams.
    pub async fn read_chunks(self, key: &str) -> Result<ValueChunks, Status> {
        let missing = || Status::not_found(format!("key '{key}' does not exist"));
        let Some((mut value, _)) = stored(&self.namespace, &self.instance, key).await? else {
            return Err(missing());
        };
        let mut opened = None;
        if let Some(claim) = &self.claim {
            // As in `resolve_key`: an object gone because the key was replaced meanwhile
            // means reading the key again.
            for _ in 0..REREADS {
                let Some(reference) = Reference::decode(&value) else { break };
                if let Some(payload) = claim.try_open(reference?).await? {
                    opened = Some(payload);
                    break;
                }
                match stored(&self.namespace, &self.instance, key).await? {
                    None => return Err(missing()),
                    Some((current, _)) if current != value => value = current,
                    Some(_) => {
                        return Err(super::claim_check::gone(payload_size(Some(claim), &value) as u64))
                    }
                }
            }
            if opened.is_none() && Reference::decode(&value).is_some() {
                return Err(replaced_while_read(key));
            }
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        match opened {
            Some(payload) => {
                tokio::spawn(send_payload(payload, sender, self.instance));
            }
            None => {
                tokio::spawn(send_value(value, sender));
            }
        }
        Ok(receiver)
    }

    fn need_tx(&self, operation: &str) -> Result<plugin_abi::host::KeyValueTransactionalHandle<'_>, Status> {
        need(&self.namespace, STORE, self.instance.keyvalue_transactional(), operation)
    }

    /// Begins a transaction that the plugin rolls back after `timeout`; the id clients see.
    pub async fn begin(&self, timeout: std::time::Duration) -> Result<u64, Status> {
        let plugin_id = self.need_tx("BeginTransaction")?.begin(timeout).await.map_err(plugin_status)?;
        let owner = crate::auth::current_principal();
        Ok(self.stores.transactions.begin(&self.namespace.name, &self.instance, plugin_id, timeout, owner))
    }

    /// The plugin's id of client transaction `transaction`, which the caller must have begun.
    fn find_transaction(&self, transaction: u64) -> Result<plugin_abi::TransactionId, Status> {
        let caller = crate::auth::current_principal();
        self.stores.transactions.find(transaction, &self.namespace.name, &self.instance, caller.as_deref())
    }

    /// Which gateway holds the transactions begun here.
    pub fn transactions_gateway(&self) -> String {
        self.stores.transactions.gateway()
    }

    /// Commits or rolls back a client's transaction, and forgets its id once the plugin
    /// has ended it (after a timeout or an outage the client may try again).
    pub async fn end(&self, transaction: u64, ending: Ending) -> Result<(), Status> {
        let operation = match ending {
            Ending::Commit => "CommitTransaction",
            Ending::Rollback => "RollbackTransaction",
        };
        let tx = self.need_tx(operation)?;
        let transactions = &self.stores.transactions;
        let id = self.find_transaction(transaction)?;
        let ended = match ending {
            Ending::Commit => tx.commit(id).await,
            Ending::Rollback => tx.rollback(id).await,
        }
        .map_err(plugin_status);
        if ended.as_ref().err().is_none_or(super::transactions::ended_by) {
            transactions.end(transaction);
        }
        ended
    }

    /// Applies every mutation (a value to set, or `None` to delete) or none, in one
    /// transaction; for each, whether a deleted key existed.
    pub async fn mutate(
        self,
        mutations: Vec<(String, Option<Vec<u8>>)>,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, bool)>, Status> {
        let tx = self.need_tx("Mutate")?;
        let id = tx.begin(timeout).await.map_err(plugin_status)?;
        let mut results = Vec::with_capacity(mutations.len());
        for (key, value) in mutations {
            let outcome = match value {
                Some(value) => tx.tx_set(id, &key, value).await.map(|()| false),
                None => tx.tx_delete(id, &key).await,
            };
            match outcome {
                Ok(deleted) => results.push((key, deleted)),
                Err(error) => {
                    // All or none: undo what this request did so far.
                    let _ = tx.rollback(id).await;
                    return Err(plugin_status(error));
                }
            }
        }
        tx.commit(id).await.map_err(plugin_status)?;
        Ok(results)
    }
}

/// Writes a streamed value over `key` of namespace `name`: through an upload to the
/// object store when the namespace has a claim check (`claim`, from
/// [`KeyValueStore::into_claim_check`]), else assembled here (and so
/// bounded like any value). Its size and SHA-256.
pub async fn set_from_chunks(
    stores: &Arc<Stores>,
    name: &str,
    key: String,
    ttl: Option<std::time::Duration>,
    claim: Option<ClaimCheck>,
    mut chunks: impl Chunks,
) -> Result<(u64, String), Status> {
    // Receiving may take minutes: it must not hold the namespace's gate, which a
    // reload's state handover waits for. The namespace is looked up again to write,
    // so the value lands in whatever instance serves the namespace by then.
    let Some(claim) = claim else {
        let max = stores.gateway.settings.max_value_bytes;
        let mut value = Vec::new();
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await? {
            if value.len() + chunk.len() > max {
                return Err(Status::invalid_argument(format!(
                    "the value passed {max} bytes (server.max_value_bytes); bind a claim_check slot to the namespace to store larger values"
                )));
            }
            hasher.update(&chunk);
            value.extend_from_slice(&chunk);
        }
        let size = value.len() as u64;
        stores.keyvalue(name).await?.set(key, value, ttl).await?;
        return Ok((size, hex::encode(hasher.finalize())));
    };
    let mut upload = claim.upload().await?;
    while let Some(chunk) = chunks.next().await? {
        upload.write(chunk).await?;
    }
    // Completing runs in a task of its own: a client that goes away now must not cut
    // a multipart completion half way, or leave an object no reference points at.
    let (stores, name) = (stores.clone(), name.to_owned());
    let completed =
        tokio::spawn(async move { complete_upload(&stores, upload, claim, &name, &key, ttl).await });
    completed.await.map_err(|error| Status::internal(format!("SetStream completion: {error}")))?
}

/// Finishes a SetStream's upload and stores the reference in the namespace as it is
/// now (a reload may have replaced its instances meanwhile).
async fn complete_upload(
    stores: &Arc<Stores>,
    upload: super::claim_check::Upload,
    claim: ClaimCheck,
    name: &str,
    key: &str,
    ttl: Option<std::time::Duration>,
) -> Result<(u64, String), Status> {
    let reference = upload.finish().await?;
    let (size, sha256) = (reference.size, reference.sha256.clone());
    let store = match stores.keyvalue(name).await {
        Ok(store) => store,
        Err(status) => {
            claim.release(Some(&reference.encode())).await;
            return Err(status);
        }
    };
    // A reload during the upload may have changed the namespace's claim check: a
    // reference to the old store would read as raw bytes, or as a lost object.
    if !store.claim.as_ref().is_some_and(|current| current.same_store(&claim)) {
        claim.release(Some(&reference.encode())).await;
        return Err(Status::aborted(
            "the namespace's claim_check slot changed (a reload) while the value was uploaded; send it again",
        ));
    }
    replace_claimed(&claim, &store.namespace, &store.instance, key, reference.encode(), ttl).await?;
    Ok((size, sha256))
}

/// A plain value, in chunks (an empty value still answers with its size).
async fn send_value(value: Vec<u8>, sender: tokio::sync::mpsc::Sender<Result<(u64, Vec<u8>), Status>>) {
    let size = value.len() as u64;
    let mut chunks: Vec<&[u8]> = value.chunks(CHUNK_BYTES).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (index, chunk) in chunks.into_iter().enumerate() {
        let size = if index == 0 { size } else { 0 };
        if sender.send(Ok((size, chunk.to_vec()))).await.is_err() {
            return;
        }
    }
}

/// A claimed payload: the object store's chunks, gathered into messages of up to 1 MiB.
/// Holding `_instance` keeps the namespace's store alive while the client reads.
async fn send_payload(
    mut payload: Payload,
    sender: tokio::sync::mpsc::Sender<Result<(u64, Vec<u8>), Status>>,
    _instance: Arc<Instance>,
) {
    let mut size = Some(payload.reference.size);
    let mut pending = Vec::new();
    loop {
        let last = match payload.next().await {
            Ok(Some(chunk)) => {
                pending.extend_from_slice(&chunk);
                false
            }
            Ok(None) => true,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        while pending.len() >= CHUNK_BYTES || (last && (!pending.is_empty() || size.is_some())) {
            let rest = pending.split_off(pending.len().min(CHUNK_BYTES));
            let chunk = std::mem::replace(&mut pending, rest);
            if sender.send(Ok((size.take().unwrap_or(0), chunk))).await.is_err() {
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// The payload of `key`'s stored `value` (and its version). A claimed payload whose
/// object is gone was usually replaced by a Set or Delete between reading the key and
/// fetching the object, so the key is read again: `None` when it is gone by then;
/// DATA_LOSS only when it still refers to the missing object.
async fn resolve_key(
    claim: &ClaimCheck,
    namespace: &Namespace,
    store: &Instance,
    key: &str,
    mut value: Vec<u8>,
    mut version: u64,
    max: usize,
) -> Result<Option<(Vec<u8>, u64)>, Status> {
    for _ in 0..REREADS {
        if Reference::decode(&value).is_none() {
            return Ok(Some((value, version)));
        }
        let reference = value.clone();
        if let Some(payload) = claim.try_resolve(value, max).await? {
            return Ok(Some((payload, version)));
        }
        match stored(namespace, store, key).await? {
            None => return Ok(None),
            Some((current, current_version)) if current != reference => {
                (value, version) = (current, current_version)
            }
            Some(_) => {
                return Err(crate::store::claim_check::gone(payload_size(Some(claim), &reference) as u64))
            }
        }
    }
    Err(replaced_while_read(key))
}

/// The value stored under `key` as the backend holds it (a claimed one still a
/// reference), with its version when the plugin keeps versions.
async fn stored(
    namespace: &Namespace,
    store: &Instance,
    key: &str,
) -> Result<Option<(Vec<u8>, u64)>, Status> {
    if let Some(cas) = store.keyvalue_cas() {
        let found = cas.get_versioned(key).await.map_err(plugin_status)?;
        return Ok(found.map(|found| (found.value, found.version)));
    }
    let basic = need(namespace, STORE, store.keyvalue_basic(), "Get")?;
    Ok(basic.get(key).await.map_err(plugin_status)?.map(|value| (value, 0)))
}

async fn write_value(
    namespace: &NamespaceRef,
    store: &Instance,
    key: &str,
    value: Vec<u8>,
    ttl: Option<std::time::Duration>,
) -> Result<(), Status> {
    match ttl {
        Some(ttl) => {
            let ttl_ops = need(namespace, STORE, store.keyvalue_ttl(), "Set with ttl_ms")?;
            ttl_ops.set_with_ttl(key, value, ttl).await
        }
        None => {
            let basic = need(namespace, STORE, store.keyvalue_basic(), "Set")?;
            basic.set(key, value).await
        }
    }
    .map_err(plugin_status)
}

/// Writes `value` (a plain value or a reference) over `key` in a namespace with a claim
/// check, then deletes the object the old value referred to; if the write fails, the
/// object the new value refers to is deleted instead.
async fn replace_claimed(
    claim: &ClaimCheck,
    namespace: &NamespaceRef,
    store: &Instance,
    key: &str,
    value: Vec<u8>,
    ttl: Option<std::time::Duration>,
) -> Result<(), Status> {
    // Only references matter here, and they are small: a plain value is never copied.
    let written_reference = Reference::decode(&value).is_some().then(|| value.clone());
    let previous_reference = stored(namespace, store, key)
        .await?
        .map(|(value, _)| value)
        .filter(|value| Reference::decode(value).is_some());
    match write_value(namespace, store, key, value, ttl).await {
        Ok(()) => {
            if previous_reference.is_some() && previous_reference != written_reference {
                claim.release(previous_reference.as_deref()).await;
            }
            Ok(())
        }
        Err(status) => {
            if let Some(reference) = &written_reference {
                claim.abandon(reference, &status).await;
            }
            Err(status)
        }
    }
}

/// FAILED_PRECONDITION for a version mismatch, with the current version in the
/// `prism-current-version` metadata.
fn conflict(key: &str, expected: u64, current: u64) -> Status {
    let message = if current == 0 {
        format!("version mismatch on key '{key}': expected version {expected}, but the key does not exist")
    } else {
        format!("version mismatch on key '{key}': expected version {expected}, current version is {current}")
    };
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("prism-current-version", current.to_string().parse().expect("digits are valid metadata"));
    Status::with_metadata(tonic::Code::FailedPrecondition, message, metadata)
}

fn replaced_while_read(key: &str) -> Status {
    Status::aborted(format!(
        "key '{key}' was replaced {REREADS} times while it was being read; read it again"
    ))
}
