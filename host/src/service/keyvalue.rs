use std::pin::Pin;
use std::sync::Arc;

use plugin_abi::KeyTtl;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{check_batch, check_key, check_value, optional_ttl};
use crate::api::key_value_service_server::KeyValueService;
use crate::api::*;
use crate::shared::plugin_status;
use crate::store::claim_check::{payload_size, CHUNK_BYTES};
use crate::store::idempotency::{once, Call};
use crate::store::keyvalue::{set_from_chunks, Chunks, Ending, STORE};
use crate::store::pages::{gather, Limits};
use crate::store::{need, Stores};

const DEFAULT_SCAN_LIMIT: u32 = 100;
/// How long a transaction may stay open when the client names no timeout.
const DEFAULT_TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct KeyValueApi {
    stores: Arc<Stores>,
}

impl KeyValueApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        KeyValueApi { stores }
    }

    fn max_value(&self) -> usize {
        self.stores.gateway.settings.max_value_bytes
    }
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<KeyValue, Status>> + Send>>;

#[tonic::async_trait]
impl KeyValueService for KeyValueApi {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_key("key", &request.key)?;
        let response = match store.get(&request.key, request.transaction_id).await? {
            Some((value, version)) => GetResponse { found: true, value: value.into(), version },
            None => GetResponse::default(),
        };
        Ok(super::reply(response))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_key("key", &request.key)?;
        check_value("value", request.value.len(), self.max_value())?;
        if request.transaction_id != 0 {
            if request.ttl_ms != 0 {
                return Err(Status::invalid_argument("ttl_ms cannot be set inside a transaction"));
            }
            super::no_token_in_transaction(&request.idempotency_token)?;
            store.tx_set(request.transaction_id, &request.key, request.value.into()).await?;
            return Ok(super::reply(SetResponse {}));
        }
        let ttl = optional_ttl("ttl_ms", request.ttl_ms)?;
        let call = self.stores.idempotent(&store.namespace, "Set", &request.idempotency_token, &request)?;
        let write =
            async move { store.set(request.key, request.value.into(), ttl).await.map(|()| SetResponse {}) };
        once(call, write).await.map(super::reply)
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_key("key", &request.key)?;
        if request.transaction_id != 0 && request.expected_version != 0 {
            return Err(Status::invalid_argument("expected_version cannot be used inside a transaction"));
        }
        let deleted = store.delete(&request.key, request.transaction_id, request.expected_version).await?;
        Ok(super::reply(DeleteResponse { deleted }))
    }

    async fn set_stream(
        &self,
        request: Request<tonic::Streaming<SetStreamRequest>>,
    ) -> Result<Response<SetStreamResponse>, Status> {
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument("SetStream needs a first message naming the namespace and key")
        })?;
        let store = self.stores.keyvalue(&first.namespace).await?;
        check_key("key", &first.key)?;
        let ttl = optional_ttl("ttl_ms", first.ttl_ms)?;
        let settings = &self.stores.gateway.settings;
        let idle = (settings.request_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(settings.request_timeout_ms));
        // A retry is matched by what the first message says, its chunk aside.
        let named = SetStreamRequest { chunk: Default::default(), ..first.clone() };
        let call = self.stores.idempotent(&store.namespace, "SetStream", &first.idempotency_token, &named)?;
        let claim = store.into_claim_check();
        let chunks = StreamedChunks { input, next: Some(first.chunk.into()), idle };
        let stores = self.stores.clone();
        let write = async move {
            let stored = set_from_chunks(&stores, &first.namespace, first.key, ttl, claim, chunks).await?;
            Ok(SetStreamResponse { size: stored.0, sha256: stored.1 })
        };
        once(call.map(Call::paced_by_the_client), write).await.map(super::reply)
    }

    type GetStreamStream = Pin<Box<dyn Stream<Item = Result<GetStreamResponse, Status>> + Send>>;

    async fn get_stream(
        &self,
        request: Request<GetStreamRequest>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_key("key", &request.key)?;
        let chunks = ReceiverStream::new(store.read_chunks(&request.key).await?);
        let messages =
            chunks.map(|chunk| chunk.map(|(size, chunk)| GetStreamResponse { size, chunk: chunk.into() }));
        Ok(Response::new(Box::pin(messages)))
    }

    async fn exists(&self, request: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_key("key", &request.key)?;
        let basic = need(namespace, STORE, store.keyvalue_basic(), "Exists")?;
        let exists = basic.exists(&request.key).await.map_err(plugin_status)?;
        Ok(super::reply(ExistsResponse { exists }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_prefix(&request.prefix)?;
        let max = self.stores.gateway.settings.max_scan_limit;
        let limit = match request.limit {
            0 => DEFAULT_SCAN_LIMIT.min(max),
            limit if limit > max => {
                return Err(Status::invalid_argument(format!(
                    "limit {limit} is above this server's page limit of {max} (server.max_scan_limit)"
                )))
            }
            limit => limit,
        };
        let scan = need(&store.namespace, STORE, store.instance().keyvalue_scan(), "Scan")?;
        let cursor = (!request.cursor.is_empty()).then_some(request.cursor.clone());
        let limits =
            Limits { count: limit as usize, max_bytes: request.max_page_bytes, plugin_page: limit as usize };
        // A claimed value counts as its payload's size, so pages and the response budget
        // hold for what the response will carry once the payloads are fetched.
        let claim = store.claim_check();
        let (entries, cursor) =
            gather(&scan, &request.prefix, cursor, limits, self.stores.budget(), |key, value| {
                let size = (key.len() + payload_size(claim, &value)) as u64;
                Some(((key, value), size))
            })
            .await?;
        let entries = store.resolve_entries(entries).await?;
        let entries = entries.into_iter().map(|(key, value)| KeyValue { key, value: value.into() }).collect();
        Ok(super::reply(ScanResponse { entries, next_cursor: cursor.unwrap_or_default() }))
    }

    type ScanStreamStream = EntryStream;

    async fn scan_stream(
        &self,
        request: Request<ScanStreamRequest>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_prefix(&request.prefix)?;
        let entries = ReceiverStream::new(store.scan_stream(&request.prefix)?);
        let entries = entries.map(|entry| entry.map(|(key, value)| KeyValue { key, value: value.into() }));
        Ok(Response::new(Box::pin(entries)))
    }

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_prefix(&request.prefix)?;
        let scan = need(namespace, STORE, store.keyvalue_scan(), "Count")?;
        let count = scan.count(&request.prefix).await.map_err(plugin_status)?;
        Ok(super::reply(CountResponse { count }))
    }

    async fn expire(&self, request: Request<ExpireRequest>) -> Result<Response<ExpireResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_key("key", &request.key)?;
        let Some(ttl) = optional_ttl("ttl_ms", request.ttl_ms)? else {
            return Err(Status::invalid_argument(
                "ttl_ms must be a positive number of milliseconds; use Persist to remove a TTL or Delete to remove the key",
            ));
        };
        let ttl_ops = need(namespace, STORE, store.keyvalue_ttl(), "Expire")?;
        let applied = ttl_ops.expire(&request.key, ttl).await.map_err(plugin_status)?;
        Ok(super::reply(ExpireResponse { applied }))
    }

    async fn get_ttl(&self, request: Request<GetTtlRequest>) -> Result<Response<GetTtlResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_key("key", &request.key)?;
        let ttl_ops = need(namespace, STORE, store.keyvalue_ttl(), "GetTtl")?;
        let response = match ttl_ops.get_ttl(&request.key).await.map_err(plugin_status)? {
            KeyTtl::Missing => GetTtlResponse { found: false, has_expiry: false, ttl_ms: 0 },
            KeyTtl::NoExpiry => GetTtlResponse { found: true, has_expiry: false, ttl_ms: 0 },
            KeyTtl::ExpiresIn(left) => GetTtlResponse {
                found: true,
                has_expiry: true,
                ttl_ms: i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
            },
        };
        Ok(super::reply(response))
    }

    async fn persist(&self, request: Request<PersistRequest>) -> Result<Response<PersistResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_key("key", &request.key)?;
        let ttl_ops = need(namespace, STORE, store.keyvalue_ttl(), "Persist")?;
        let persisted = ttl_ops.persist(&request.key).await.map_err(plugin_status)?;
        Ok(super::reply(PersistResponse { persisted }))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_batch_keys(&request.keys)?;
        let values = store.batch_get(&request.keys).await?;
        let results = request
            .keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| BatchGetResult {
                key,
                found: value.is_some(),
                value: value.unwrap_or_default(),
            })
            .collect();
        Ok(super::reply(BatchGetResponse { results }))
    }

    async fn batch_set(
        &self,
        request: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_batch("entries", request.entries.len())?;
        for (index, entry) in request.entries.iter().enumerate() {
            check_key(&format!("entries[{index}].key"), &entry.key)?;
            check_value(&format!("entries[{index}].value"), entry.value.len(), self.max_value())?;
            kv.check_not_marked(&format!("entries[{index}].value"), &entry.value)?;
        }
        let batch = need(namespace, STORE, store.keyvalue_batch(), "BatchSet")?;
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
        Ok(super::reply(BatchSetResponse { results }))
    }

    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let request = request.into_inner();
        let kv = self.stores.keyvalue(&request.namespace).await?;
        let (namespace, store) = (&kv.namespace, kv.instance());
        check_batch_keys(&request.keys)?;
        let batch = need(namespace, STORE, store.keyvalue_batch(), "BatchDelete")?;
        let deleted = batch.batch_delete(request.keys.clone()).await.map_err(plugin_status)?;
        let results = request
            .keys
            .into_iter()
            .zip(deleted)
            .map(|(key, deleted)| BatchDeleteResult { key, deleted })
            .collect();
        Ok(super::reply(BatchDeleteResponse { results }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_key("key", &request.key)?;
        check_value("value", request.value.len(), self.max_value())?;
        store.check_not_marked("value", &request.value)?;
        let ttl = optional_ttl("ttl_ms", request.ttl_ms)?;
        let call = self.stores.idempotent(
            &store.namespace,
            "CompareAndSwap",
            &request.idempotency_token,
            &request,
        )?;
        let write = async move {
            let swapped =
                store.compare_and_swap(request.key, request.expected_version, request.value.into(), ttl);
            swapped.await.map(|version| CompareAndSwapResponse { version })
        };
        once(call, write).await.map(super::reply)
    }

    async fn begin_transaction(
        &self,
        request: Request<BeginTransactionRequest>,
    ) -> Result<Response<BeginTransactionResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        let timeout = match optional_ttl("timeout_ms", request.timeout_ms)? {
            Some(timeout) => timeout,
            None => DEFAULT_TRANSACTION_TIMEOUT,
        };
        let transaction_id = store.begin(timeout).await?;
        let mut response = super::reply(BeginTransactionResponse { transaction_id });
        // Which gateway holds it: a transaction's calls must all come back here.
        if let Ok(gateway) = store.transactions_gateway().parse() {
            response.metadata_mut().insert("prism-gateway", gateway);
        }
        Ok(response)
    }

    async fn commit_transaction(
        &self,
        request: Request<CommitTransactionRequest>,
    ) -> Result<Response<CommitTransactionResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        store.end(request.transaction_id, Ending::Commit).await?;
        Ok(super::reply(CommitTransactionResponse {}))
    }

    async fn rollback_transaction(
        &self,
        request: Request<RollbackTransactionRequest>,
    ) -> Result<Response<RollbackTransactionResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        store.end(request.transaction_id, Ending::Rollback).await?;
        Ok(super::reply(RollbackTransactionResponse {}))
    }

    async fn mutate(&self, request: Request<MutateRequest>) -> Result<Response<MutateResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.keyvalue(&request.namespace).await?;
        check_batch("mutations", request.mutations.len())?;
        for (index, mutation) in request.mutations.iter().enumerate() {
            check_key(&format!("mutations[{index}].key"), &mutation.key)?;
            match &mutation.operation {
                Some(mutation::Operation::Set(value)) => {
                    check_value(&format!("mutations[{index}].set"), value.len(), self.max_value())?;
                    store.check_not_marked(&format!("mutations[{index}].set"), value)?;
                }
                Some(mutation::Operation::Delete(true)) => {}
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "mutations[{index}] needs an operation: set (bytes) or delete (true)"
                    )))
                }
            }
        }
        let call =
            self.stores.idempotent(&store.namespace, "Mutate", &request.idempotency_token, &request)?;
        let write = async move {
            let mutations = request.mutations.into_iter().map(|mutation| match mutation.operation {
                Some(mutation::Operation::Set(value)) => (mutation.key, Some(value.into())),
                _ => (mutation.key, None),
            });
            let results = store.mutate(mutations.collect(), DEFAULT_TRANSACTION_TIMEOUT).await?;
            let results = results.into_iter().map(|(key, deleted)| MutationResult { key, deleted }).collect();
            Ok(MutateResponse { results })
        };
        once(call, write).await.map(super::reply)
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

impl Chunks for StreamedChunks {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        self.next_chunk().await
    }
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

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let chunk = match self.next.take() {
                Some(chunk) => chunk,
                None => match self.receive().await? {
                    Some(message)
                        if !message.namespace.is_empty()
                            || !message.key.is_empty()
                            || !message.idempotency_token.is_empty() =>
                    {
                        return Err(Status::invalid_argument(
                            "only the first SetStream message names the namespace, key and idempotency_token; later ones carry chunks only",
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
