use std::pin::Pin;
use std::sync::Arc;

use plugin_abi::host::Instance;
use plugin_abi::{CasResult, KeyTtl};
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{check_batch, check_key, check_value, need, optional_ttl};
use crate::api::key_value_service_server::KeyValueService;
use crate::api::*;
use crate::claim_check::{check_not_marked, payload_size, ClaimCheck, Reference, CHUNK_BYTES};
use crate::gateway::{Gateway, Namespace, NamespaceRef};
use crate::patterns::KEYVALUE;
use crate::shared::plugin_status;

const STORE: &str = "store";
const DEFAULT_SCAN_LIMIT: u32 = 100;
/// How long a transaction may stay open when the client names no timeout.
const DEFAULT_TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct KeyValueApi {
    gateway: Arc<Gateway>,
}

impl KeyValueApi {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        KeyValueApi { gateway }
    }

    async fn store(&self, namespace: &str) -> Result<(NamespaceRef, Arc<Instance>), Status> {
        let namespace = self.gateway.namespace(namespace, KEYVALUE).await?;
        let instance =
            namespace.slot(STORE).expect("keyvalue namespaces always bind 'store'").instance.clone();
        Ok((namespace, instance))
    }

    fn max_value(&self) -> usize {
        self.gateway.settings.max_value_bytes
    }

    fn claim_check(&self, namespace: &NamespaceRef) -> Option<ClaimCheck> {
        namespace.claim_check(&self.gateway.settings)
    }

    /// The payload a stored value stands for (a claimed one fetched and checked).
    async fn resolve(&self, claim: Option<&ClaimCheck>, value: Vec<u8>) -> Result<Vec<u8>, Status> {
        match claim {
            Some(claim) => claim.resolve(value, self.max_value()).await,
            None => Ok(value),
        }
    }

    /// Finishes a SetStream's upload and stores the reference in the namespace as it is
    /// now (a reload may have replaced its instances meanwhile).
    async fn complete_upload(
        &self,
        upload: crate::claim_check::Upload,
        claim: ClaimCheck,
        namespace: &str,
        key: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<SetStreamResponse, Status> {
        let reference = upload.finish().await?;
        let (size, sha256) = (reference.size, reference.sha256.clone());
        let (namespace, store) = match self.store(namespace).await {
            Ok(bound) => bound,
            Err(status) => {
                claim.release(Some(&reference.encode())).await;
                return Err(status);
            }
        };
        // A reload during the upload may have changed the namespace's claim check: a
        // reference to the old store would read as raw bytes, or as a lost object.
        if !self.claim_check(&namespace).is_some_and(|current| current.same_store(&claim)) {
            claim.release(Some(&reference.encode())).await;
            return Err(Status::aborted(
                "the namespace's claim_check slot changed (a reload) while the value was uploaded; send it again",
            ));
        }
        replace_claimed(&claim, &namespace, &store, key, reference.encode(), ttl).await?;
        Ok(SetStreamResponse { size, sha256 })
    }

    /// Commits or rolls back a client's transaction, and forgets its id once the plugin
    /// has ended it (after a timeout or an outage the client may try again).
    async fn end_transaction(
        &self,
        namespace: &str,
        transaction_id: u64,
        ending: Ending,
    ) -> Result<(), Status> {
        let (namespace, store) = self.store(namespace).await?;
        let operation = match ending {
            Ending::Commit => "CommitTransaction",
            Ending::Rollback => "RollbackTransaction",
        };
        let tx = need(&namespace, STORE, store.keyvalue_transactional(), operation)?;
        let transactions = &self.gateway.transactions;
        let id = transactions.find(transaction_id, &namespace.name, &store)?;
        let ended = match ending {
            Ending::Commit => tx.commit(id).await,
            Ending::Rollback => tx.rollback(id).await,
        }
        .map_err(plugin_status);
        if ended.as_ref().err().is_none_or(crate::transactions::ended_by) {
            transactions.end(transaction_id);
        }
        ended
    }

    fn budget(&self) -> super::ResponseBudget {
        super::ResponseBudget::new(&self.gateway.settings)
    }
}

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

type EntryStream = Pin<Box<dyn Stream<Item = Result<KeyValue, Status>> + Send>>;

#[tonic::async_trait]
impl KeyValueService for KeyValueApi {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let claim = self.claim_check(&namespace);
        if request.transaction_id != 0 {
            let tx = need(&namespace, STORE, store.keyvalue_transactional(), "Get in a transaction")?;
            let id = self.gateway.transactions.find(request.transaction_id, &namespace.name, &store)?;
            let value = tx.tx_get(id, &request.key).await.map_err(plugin_status)?;
            let found = value.is_some();
            let value = self.resolve(claim.as_ref(), value.unwrap_or_default()).await?;
            return Ok(Response::new(GetResponse { found, value: value.into(), version: 0 }));
        }
        let Some((value, version)) = stored(&namespace, &store, &request.key).await? else {
            return Ok(Response::new(GetResponse::default()));
        };
        let (value, version) = match &claim {
            Some(claim) => {
                let current =
                    resolve_key(claim, &namespace, &store, &request.key, value, version, self.max_value());
                match current.await? {
                    Some(current) => current,
                    None => return Ok(Response::new(GetResponse::default())),
                }
            }
            None => (value, version),
        };
        Ok(Response::new(GetResponse { found: true, value: value.into(), version }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        check_value("value", request.value.len(), self.max_value())?;
        if request.transaction_id != 0 {
            if request.ttl_ms != 0 {
                return Err(Status::invalid_argument("ttl_ms cannot be set inside a transaction"));
            }
            super::no_token_in_transaction(&request.idempotency_token)?;
            check_not_marked(self.claim_check(&namespace).as_ref(), "value", &request.value)?;
            let tx = need(&namespace, STORE, store.keyvalue_transactional(), "Set in a transaction")?;
            let id = self.gateway.transactions.find(request.transaction_id, &namespace.name, &store)?;
            tx.tx_set(id, &request.key, request.value.into()).await.map_err(plugin_status)?;
            return Ok(Response::new(SetResponse {}));
        }
        let ttl = optional_ttl("ttl_ms", request.ttl_ms)?;
        let claim = self.claim_check(&namespace);
        let call = self.gateway.idempotent(&namespace, "Set", &request.idempotency_token, &request)?;
        let write = async move {
            let Some(claim) = claim else {
                write_value(&namespace, &store, &request.key, request.value.into(), ttl).await?;
                return Ok(SetResponse {});
            };
            let value = match claim.claims(&request.value) {
                true => claim.claim(&request.value).await?.encode(),
                false => request.value.into(),
            };
            replace_claimed(&claim, &namespace, &store, &request.key, value, ttl).await?;
            Ok(SetResponse {})
        };
        super::once(call, write).await.map(Response::new)
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let claim = self.claim_check(&namespace);
        let previous = match (&claim, request.transaction_id) {
            (Some(_), 0) => stored(&namespace, &store, &request.key).await?.map(|(value, _)| value),
            _ => None,
        };
        let deleted = if request.transaction_id != 0 {
            if request.expected_version != 0 {
                return Err(Status::invalid_argument("expected_version cannot be used inside a transaction"));
            }
            let tx = need(&namespace, STORE, store.keyvalue_transactional(), "Delete in a transaction")?;
            let id = self.gateway.transactions.find(request.transaction_id, &namespace.name, &store)?;
            tx.tx_delete(id, &request.key).await.map_err(plugin_status)?
        } else if request.expected_version > 0 {
            let cas = need(&namespace, STORE, store.keyvalue_cas(), "Delete with expected_version")?;
            match cas
                .delete_if_version(&request.key, request.expected_version)
                .await
                .map_err(plugin_status)?
            {
                CasResult::Swapped { .. } => true,
                CasResult::Conflict { current_version } => {
                    return Err(conflict(&request.key, request.expected_version, current_version))
                }
            }
        } else {
            let basic = need(&namespace, STORE, store.keyvalue_basic(), "Delete")?;
            basic.delete(&request.key).await.map_err(plugin_status)?
        };
        if let (Some(claim), true) = (&claim, deleted) {
            claim.release(previous.as_deref()).await;
        }
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn set_stream(
        &self,
        request: Request<tonic::Streaming<SetStreamRequest>>,
    ) -> Result<Response<SetStreamResponse>, Status> {
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument("SetStream needs a first message naming the namespace and key")
        })?;
        let (namespace, store) = self.store(&first.namespace).await?;
        check_key("key", &first.key)?;
        let ttl = optional_ttl("ttl_ms", first.ttl_ms)?;
        let idle = (self.gateway.settings.request_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(self.gateway.settings.request_timeout_ms));
        let mut chunks = StreamedChunks { input, next: Some(first.chunk.into()), idle };
        let claim = self.claim_check(&namespace);
        // Receiving may take minutes: it must not hold the namespace's gate, which a
        // reload's state handover waits for. The namespace is looked up again to write,
        // so the value lands in whatever instance serves the namespace by then.
        drop((namespace, store));
        let Some(claim) = claim else {
            // No object store: the value is assembled here, so it is bounded like any value.
            let mut value = Vec::new();
            let mut hasher = Sha256::new();
            while let Some(chunk) = chunks.next().await? {
                if value.len() + chunk.len() > self.max_value() {
                    return Err(Status::invalid_argument(format!(
                        "the value passed {} bytes (server.max_value_bytes); bind a claim_check slot to the namespace to store larger values",
                        self.max_value()
                    )));
                }
                hasher.update(&chunk);
                value.extend_from_slice(&chunk);
            }
            let size = value.len() as u64;
            let (namespace, store) = self.store(&first.namespace).await?;
            write_value(&namespace, &store, &first.key, value, ttl).await?;
            let sha256 = hex::encode(hasher.finalize());
            return Ok(Response::new(SetStreamResponse { size, sha256 }));
        };
        let mut upload = claim.upload().await?;
        while let Some(chunk) = chunks.next().await? {
            upload.write(chunk).await?;
        }
        // Completing runs in a task of its own: a client that goes away now must not cut
        // a multipart completion half way, or leave an object no reference points at.
        let api = KeyValueApi { gateway: self.gateway.clone() };
        let (namespace, key) = (first.namespace, first.key);
        let completed =
            tokio::spawn(async move { api.complete_upload(upload, claim, &namespace, &key, ttl).await });
        let response =
            completed.await.map_err(|error| Status::internal(format!("SetStream completion: {error}")))??;
        Ok(Response::new(response))
    }

    type GetStreamStream = Pin<Box<dyn Stream<Item = Result<GetStreamResponse, Status>> + Send>>;

    async fn get_stream(
        &self,
        request: Request<GetStreamRequest>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let missing = || Status::not_found(format!("key '{}' does not exist", request.key));
        let Some((mut value, _)) = stored(&namespace, &store, &request.key).await? else {
            return Err(missing());
        };
        let claim = self.claim_check(&namespace);
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let mut opened = None;
        if let Some(claim) = &claim {
            // As in `resolve_key`: an object gone because the key was replaced meanwhile
            // means reading the key again.
            for _ in 0..REREADS {
                let Some(reference) = Reference::decode(&value) else { break };
                if let Some(payload) = claim.try_open(reference?).await? {
                    opened = Some(payload);
                    break;
                }
                match stored(&namespace, &store, &request.key).await? {
                    None => return Err(missing()),
                    Some((current, _)) if current != value => value = current,
                    Some(_) => {
                        return Err(crate::claim_check::gone(payload_size(Some(claim), &value) as u64))
                    }
                }
            }
            if opened.is_none() && Reference::decode(&value).is_some() {
                return Err(replaced_while_read(&request.key));
            }
        }
        let Some(mut payload) = opened else {
            let size = value.len() as u64;
            tokio::spawn(async move {
                let mut chunks: Vec<&[u8]> = value.chunks(CHUNK_BYTES).collect();
                if chunks.is_empty() {
                    chunks.push(&[]); // an empty value still answers with its size
                }
                for (index, chunk) in chunks.into_iter().enumerate() {
                    let size = if index == 0 { size } else { 0 };
                    if sender
                        .send(Ok(GetStreamResponse { size, chunk: chunk.to_vec().into() }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(receiver))));
        };
        tokio::spawn(async move {
            let _store = store;
            let mut size = Some(payload.reference.size);
            // The object store's chunks, gathered into messages of up to 1 MiB.
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
                    let message = GetStreamResponse { size: size.take().unwrap_or(0), chunk: chunk.into() };
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn exists(&self, request: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let basic = need(&namespace, STORE, store.keyvalue_basic(), "Exists")?;
        let exists = basic.exists(&request.key).await.map_err(plugin_status)?;
        Ok(Response::new(ExistsResponse { exists }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_prefix(&request.prefix)?;
        let max = self.gateway.settings.max_scan_limit;
        let limit = match request.limit {
            0 => DEFAULT_SCAN_LIMIT.min(max),
            limit if limit > max => {
                return Err(Status::invalid_argument(format!(
                    "limit {limit} is above this server's page limit of {max} (server.max_scan_limit)"
                )))
            }
            limit => limit,
        };
        let scan = need(&namespace, STORE, store.keyvalue_scan(), "Scan")?;
        let cursor = (!request.cursor.is_empty()).then_some(request.cursor.clone());
        let limits = super::pages::Limits {
            count: limit as usize,
            max_bytes: request.max_page_bytes,
            plugin_page: limit as usize,
        };
        let claim = self.claim_check(&namespace);
        // A claimed value counts as its payload's size, so pages and the response budget
        // hold for what the response will carry once the payloads are fetched.
        let (entries, cursor) =
            super::pages::gather(&scan, &request.prefix, cursor, limits, self.budget(), |key, value| {
                let size = (key.len() + payload_size(claim.as_ref(), &value)) as u64;
                Some((KeyValue { key, value: value.into() }, size))
            })
            .await?;
        let entries = match claim {
            Some(claim) => {
                let mut resolved = Vec::with_capacity(entries.len());
                for entry in entries {
                    let value = entry.value.into();
                    let current =
                        resolve_key(&claim, &namespace, &store, &entry.key, value, 0, self.max_value());
                    // A key deleted while its payload was being fetched is left out.
                    if let Some((value, _)) = current.await? {
                        resolved.push(KeyValue { key: entry.key, value: value.into() });
                    }
                }
                resolved
            }
            None => entries,
        };
        Ok(Response::new(ScanResponse { entries, next_cursor: cursor.unwrap_or_default() }))
    }

    type ScanStreamStream = EntryStream;

    async fn scan_stream(
        &self,
        request: Request<ScanStreamRequest>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_prefix(&request.prefix)?;
        let mut entries =
            need(&namespace, STORE, store.keyvalue_scan(), "ScanStream")?.scan_stream(&request.prefix);
        let claim = self.claim_check(&namespace);
        let max_value = self.max_value();
        // The task reads keys again (resolve_key) without holding the namespace's gate.
        let shared = namespace.shared();
        let (sender, receiver) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            // Holding the instance keeps it alive until the client stops reading.
            let store = store;
            while let Some(item) = entries.next().await {
                let item = match (item, &claim) {
                    (Ok((key, value)), Some(claim)) => {
                        match resolve_key(claim, &shared, &store, &key, value, 0, max_value).await {
                            Ok(Some((value, _))) => Ok(KeyValue { key, value: value.into() }),
                            Ok(None) => continue, // deleted while its payload was being fetched
                            Err(status) => Err(status),
                        }
                    }
                    (item, _) => {
                        item.map(|(key, value)| KeyValue { key, value: value.into() }).map_err(plugin_status)
                    }
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    break; // client gone (dropping `entries` cancels the plugin's pump) or error sent
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_prefix(&request.prefix)?;
        let scan = need(&namespace, STORE, store.keyvalue_scan(), "Count")?;
        let count = scan.count(&request.prefix).await.map_err(plugin_status)?;
        Ok(Response::new(CountResponse { count }))
    }

    async fn expire(&self, request: Request<ExpireRequest>) -> Result<Response<ExpireResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let Some(ttl) = optional_ttl("ttl_ms", request.ttl_ms)? else {
            return Err(Status::invalid_argument(
                "ttl_ms must be a positive number of milliseconds; use Persist to remove a TTL or Delete to remove the key",
            ));
        };
        let ttl_ops = need(&namespace, STORE, store.keyvalue_ttl(), "Expire")?;
        let applied = ttl_ops.expire(&request.key, ttl).await.map_err(plugin_status)?;
        Ok(Response::new(ExpireResponse { applied }))
    }

    async fn get_ttl(&self, request: Request<GetTtlRequest>) -> Result<Response<GetTtlResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let ttl_ops = need(&namespace, STORE, store.keyvalue_ttl(), "GetTtl")?;
        let response = match ttl_ops.get_ttl(&request.key).await.map_err(plugin_status)? {
            KeyTtl::Missing => GetTtlResponse { found: false, has_expiry: false, ttl_ms: 0 },
            KeyTtl::NoExpiry => GetTtlResponse { found: true, has_expiry: false, ttl_ms: 0 },
            KeyTtl::ExpiresIn(left) => GetTtlResponse {
                found: true,
                has_expiry: true,
                ttl_ms: i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
            },
        };
        Ok(Response::new(response))
    }

    async fn persist(&self, request: Request<PersistRequest>) -> Result<Response<PersistResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let ttl_ops = need(&namespace, STORE, store.keyvalue_ttl(), "Persist")?;
        let persisted = ttl_ops.persist(&request.key).await.map_err(plugin_status)?;
        Ok(Response::new(PersistResponse { persisted }))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_batch_keys(&request.keys)?;
        let batch = need(&namespace, STORE, store.keyvalue_batch(), "BatchGet")?;
        let claim = self.claim_check(&namespace);
        // Each distinct key is fetched once, in chunks that cannot exceed the response
        // budget, and the response (repeats included) is counted against it: a batch
        // naming one large value a thousand times is refused, not a gigabyte buffered.
        let mut budget = self.budget();
        let mut distinct: Vec<&str> = request.keys.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut found: std::collections::HashMap<&str, Option<bytes::Bytes>> =
            std::collections::HashMap::with_capacity(distinct.len());
        let mut fetched = self.budget();
        let mut pending = &distinct[..];
        while !pending.is_empty() {
            // Sized by what is left, so memory never passes the budget by more than one entry.
            let (chunk, rest) = pending.split_at(fetched.entries_that_fit().max(1).min(pending.len()));
            pending = rest;
            let keys: Vec<String> = chunk.iter().map(|key| key.to_string()).collect();
            let values = batch.batch_get(keys).await.map_err(plugin_status)?;
            for (key, value) in chunk.iter().zip(values) {
                fetched.spend(
                    key.len() + value.as_deref().map_or(0, |value| payload_size(claim.as_ref(), value)),
                );
                found.insert(key, value.map(bytes::Bytes::from));
            }
            // Every distinct key is in the response at least once.
            if fetched.exceeded() {
                return Err(fetched.refusal("BatchGet", found.len(), request.keys.len()));
            }
        }
        if let Some(claim) = &claim {
            for (key, value) in found.iter_mut() {
                if let Some(stored) = value.take() {
                    let current =
                        resolve_key(claim, &namespace, &store, key, stored.into(), 0, self.max_value());
                    *value = current.await?.map(|(payload, _)| payload.into());
                }
            }
        }
        let mut results = Vec::with_capacity(request.keys.len());
        for (done, key) in request.keys.iter().enumerate() {
            let value = found.get(key.as_str()).cloned().flatten();
            budget.spend(key.len() + value.as_ref().map_or(0, bytes::Bytes::len));
            if budget.exceeded() {
                return Err(budget.refusal("BatchGet", done, request.keys.len()));
            }
            results.push(BatchGetResult {
                key: key.clone(),
                found: value.is_some(),
                value: value.unwrap_or_default(),
            });
        }
        Ok(Response::new(BatchGetResponse { results }))
    }

    async fn batch_set(
        &self,
        request: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_batch("entries", request.entries.len())?;
        let claim = self.claim_check(&namespace);
        for (index, entry) in request.entries.iter().enumerate() {
            check_key(&format!("entries[{index}].key"), &entry.key)?;
            check_value(&format!("entries[{index}].value"), entry.value.len(), self.max_value())?;
            check_not_marked(claim.as_ref(), &format!("entries[{index}].value"), &entry.value)?;
        }
        let batch = need(&namespace, STORE, store.keyvalue_batch(), "BatchSet")?;
        let keys: Vec<String> = request.entries.iter().map(|entry| entry.key.clone()).collect();
        let entries = request.entries.into_iter().map(|entry| (entry.key, entry.value.into())).collect();
        let outcomes = batch.batch_set(entries).await.map_err(plugin_status)?;
        let results = keys
            .into_iter()
            .zip(outcomes)
            .map(|(key, outcome)| match outcome {
                Ok(()) => ItemStatus { key, code: 0, message: String::new() },
                Err(error) => {
                    let status = plugin_status(error);
                    ItemStatus { key, code: status.code() as i32, message: status.message().to_owned() }
                }
            })
            .collect();
        Ok(Response::new(BatchSetResponse { results }))
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_batch_keys(&request.keys)?;
        let batch = need(&namespace, STORE, store.keyvalue_batch(), "BatchDelete")?;
        let deleted = batch.batch_delete(request.keys.clone()).await.map_err(plugin_status)?;
        let results = request
            .keys
            .into_iter()
            .zip(deleted)
            .map(|(key, deleted)| BatchDeleteResult { key, deleted })
            .collect();
        Ok(Response::new(BatchDeleteResponse { results }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        check_value("value", request.value.len(), self.max_value())?;
        check_not_marked(self.claim_check(&namespace).as_ref(), "value", &request.value)?;
        let ttl = optional_ttl("ttl_ms", request.ttl_ms)?;
        let call =
            self.gateway.idempotent(&namespace, "CompareAndSwap", &request.idempotency_token, &request)?;
        let write = async move {
            let cas = need(&namespace, STORE, store.keyvalue_cas(), "CompareAndSwap")?;
            let outcome = cas
                .compare_and_swap(&request.key, request.expected_version, request.value.into(), ttl)
                .await
                .map_err(plugin_status)?;
            match outcome {
                CasResult::Swapped { version } => Ok(CompareAndSwapResponse { version }),
                CasResult::Conflict { current_version } => {
                    Err(conflict(&request.key, request.expected_version, current_version))
                }
            }
        };
        super::once(call, write).await.map(Response::new)
    }

    async fn begin_transaction(
        &self,
        request: Request<BeginTransactionRequest>,
    ) -> Result<Response<BeginTransactionResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        let timeout = match optional_ttl("timeout_ms", request.timeout_ms)? {
            Some(timeout) => timeout,
            None => DEFAULT_TRANSACTION_TIMEOUT,
        };
        let tx = need(&namespace, STORE, store.keyvalue_transactional(), "BeginTransaction")?;
        let plugin_id = tx.begin(timeout).await.map_err(plugin_status)?;
        let transactions = &self.gateway.transactions;
        let transaction_id = transactions.begin(&namespace.name, &store, plugin_id, timeout);
        let mut response = Response::new(BeginTransactionResponse { transaction_id });
        // Which gateway holds it: a transaction's calls must all come back here.
        if let Ok(gateway) = transactions.gateway().parse() {
            response.metadata_mut().insert("prism-gateway", gateway);
        }
        Ok(response)
    }

    async fn commit_transaction(
        &self,
        request: Request<CommitTransactionRequest>,
    ) -> Result<Response<CommitTransactionResponse>, Status> {
        let request = request.into_inner();
        self.end_transaction(&request.namespace, request.transaction_id, Ending::Commit).await?;
        Ok(Response::new(CommitTransactionResponse {}))
    }

    async fn rollback_transaction(
        &self,
        request: Request<RollbackTransactionRequest>,
    ) -> Result<Response<RollbackTransactionResponse>, Status> {
        let request = request.into_inner();
        self.end_transaction(&request.namespace, request.transaction_id, Ending::Rollback).await?;
        Ok(Response::new(RollbackTransactionResponse {}))
    }

    async fn mutate(&self, request: Request<MutateRequest>) -> Result<Response<MutateResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_batch("mutations", request.mutations.len())?;
        let claim = self.claim_check(&namespace);
        for (index, mutation) in request.mutations.iter().enumerate() {
            check_key(&format!("mutations[{index}].key"), &mutation.key)?;
            match &mutation.operation {
                Some(mutation::Operation::Set(value)) => {
                    check_value(&format!("mutations[{index}].set"), value.len(), self.max_value())?;
                    check_not_marked(claim.as_ref(), &format!("mutations[{index}].set"), value)?;
                }
                Some(mutation::Operation::Delete(true)) => {}
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "mutations[{index}] needs an operation: set (bytes) or delete (true)"
                    )))
                }
            }
        }
        let call = self.gateway.idempotent(&namespace, "Mutate", &request.idempotency_token, &request)?;
        let write = async move {
            let tx = need(&namespace, STORE, store.keyvalue_transactional(), "Mutate")?;
            let id = tx.begin(DEFAULT_TRANSACTION_TIMEOUT).await.map_err(plugin_status)?;
            let mut results = Vec::with_capacity(request.mutations.len());
            for mutation in request.mutations {
                let outcome = match mutation.operation {
                    Some(mutation::Operation::Set(value)) => {
                        tx.tx_set(id, &mutation.key, value.into()).await.map(|()| false)
                    }
                    _ => tx.tx_delete(id, &mutation.key).await,
                };
                match outcome {
                    Ok(deleted) => results.push(MutationResult { key: mutation.key, deleted }),
                    Err(error) => {
                        // All or none: undo what this request did so far.
                        let _ = tx.rollback(id).await;
                        return Err(plugin_status(error));
                    }
                }
            }
            tx.commit(id).await.map_err(plugin_status)?;
            Ok(MutateResponse { results })
        };
        super::once(call, write).await.map(Response::new)
    }
}

enum Ending {
    Commit,
    Rollback,
}

/// Reads of a key that keeps being replaced while its payload is fetched, before ABORTED.
const REREADS: usize = 3;

fn replaced_while_read(key: &str) -> Status {
    Status::aborted(format!(
        "key '{key}' was replaced {REREADS} times while it was being read; read it again"
    ))
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
            Some(_) => return Err(crate::claim_check::gone(payload_size(Some(claim), &reference) as u64)),
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

/// The chunks of a SetStream, each checked: at most 1 MiB, and no message after the
/// first naming a namespace or key.
struct StreamedChunks {
    input: tonic::Streaming<SetStreamRequest>,
    next: Option<Vec<u8>>,
    /// Longest wait for the next message (`request_timeout_ms`): a client that stops
    /// sending does not hold its upload open for ever.
    idle: Option<std::time::Duration>,
}

impl StreamedChunks {
    async fn receive(&mut self) -> Result<Option<SetStreamRequest>, Status> {
        let Some(idle) = self.idle else { return self.input.message().await };
        tokio::time::timeout(idle, self.input.message()).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no SetStream message arrived for {} ms (server.request_timeout_ms); the upload was abandoned",
                idle.as_millis()
            )))
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let chunk = match self.next.take() {
                Some(chunk) => chunk,
                None => match self.receive().await? {
                    Some(message) if !message.namespace.is_empty() || !message.key.is_empty() => {
                        return Err(Status::invalid_argument(
                            "only the first SetStream message names the namespace and key; later ones carry chunks only",
                        ))
                    }
                    Some(message) => message.chunk.into(),
                    None => return Ok(None),
                },
            };
            if chunk.len() > CHUNK_BYTES {
                return Err(Status::invalid_argument(format!(
                    "a SetStream chunk is {} bytes; send chunks of at most {CHUNK_BYTES} bytes",
                    chunk.len()
                )));
            }
            if !chunk.is_empty() {
                return Ok(Some(chunk));
            }
        }
    }
}

fn check_prefix(prefix: &str) -> Result<(), Status> {
    if prefix.len() > super::MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "prefix is {} bytes; keys (and so prefixes) are at most {} bytes",
            prefix.len(),
            super::MAX_KEY_BYTES
        )));
    }
    Ok(())
}

/// BatchGet and BatchDelete: at most the batch limit, every key valid.
fn check_batch_keys(keys: &[String]) -> Result<(), Status> {
    check_batch("keys", keys.len())?;
    for (index, key) in keys.iter().enumerate() {
        check_key(&format!("keys[{index}]"), key)?;
    }
    Ok(())
}
