//! The baselines the gateway is measured against: a bare tonic KeyValueService answering
//! Get/Set/Delete/Exists from a sharded in-process map, or straight from Redis (plain
//! GET/SET/DEL/EXISTS on one multiplexed connection) — no plugin, ABI or routing.
//! Other RPCs answer UNIMPLEMENTED: the load tool never calls them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use bytes::Bytes;
use prism_host::api::key_value_service_server::{KeyValueService, KeyValueServiceServer};
use prism_host::api::*;
use redis::AsyncCommands;
use tonic::{Request, Response, Status};

const SHARDS: usize = 16;

enum Store {
    Map(Vec<RwLock<HashMap<String, Bytes>>>),
    Redis(redis::aio::ConnectionManager),
}

struct MapServer {
    store: Store,
}

fn redis_status(error: redis::RedisError) -> Status {
    Status::unavailable(format!("redis: {error}"))
}

impl MapServer {
    fn shard<'a>(
        shards: &'a [RwLock<HashMap<String, Bytes>>],
        key: &str,
    ) -> &'a RwLock<HashMap<String, Bytes>> {
        let hash = key
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        &shards[hash as usize % SHARDS]
    }
}

fn not_in_baseline() -> Status {
    Status::unimplemented("the baseline server answers only Get, Set, Delete and Exists")
}

#[tonic::async_trait]
impl KeyValueService for MapServer {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let found: Option<Bytes> = match &self.store {
            Store::Map(shards) => {
                Self::shard(shards, &request.key).read().unwrap().get(&request.key).cloned()
            }
            Store::Redis(connection) => {
                let mut connection = connection.clone();
                let value: Option<Vec<u8>> = connection.get(&request.key).await.map_err(redis_status)?;
                value.map(Bytes::from)
            }
        };
        Ok(Response::new(match found {
            Some(value) => GetResponse { found: true, value, version: 0 },
            None => GetResponse::default(),
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let request = request.into_inner();
        match &self.store {
            Store::Map(shards) => {
                Self::shard(shards, &request.key).write().unwrap().insert(request.key, request.value);
            }
            Store::Redis(connection) => {
                let mut connection = connection.clone();
                connection
                    .set::<_, _, ()>(&request.key, request.value.as_ref())
                    .await
                    .map_err(redis_status)?;
            }
        }
        Ok(Response::new(SetResponse {}))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let request = request.into_inner();
        let deleted = match &self.store {
            Store::Map(shards) => {
                Self::shard(shards, &request.key).write().unwrap().remove(&request.key).is_some()
            }
            Store::Redis(connection) => {
                let mut connection = connection.clone();
                connection.del::<_, u64>(&request.key).await.map_err(redis_status)? > 0
            }
        };
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn exists(&self, request: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        let request = request.into_inner();
        let exists = match &self.store {
            Store::Map(shards) => {
                Self::shard(shards, &request.key).read().unwrap().contains_key(&request.key)
            }
            Store::Redis(connection) => {
                let mut connection = connection.clone();
                connection.exists(&request.key).await.map_err(redis_status)?
            }
        };
        Ok(Response::new(ExistsResponse { exists }))
    }

    async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        Err(not_in_baseline())
    }

    type ScanStreamStream = tokio_stream::Empty<Result<KeyValue, Status>>;

    async fn scan_stream(
        &self,
        _: Request<ScanStreamRequest>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        Err(not_in_baseline())
    }

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn expire(&self, _: Request<ExpireRequest>) -> Result<Response<ExpireResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn get_ttl(&self, _: Request<GetTtlRequest>) -> Result<Response<GetTtlResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn persist(&self, _: Request<PersistRequest>) -> Result<Response<PersistResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn batch_get(&self, _: Request<BatchGetRequest>) -> Result<Response<BatchGetResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn batch_set(&self, _: Request<BatchSetRequest>) -> Result<Response<BatchSetResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn batch_delete(
        &self,
        _: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn compare_and_swap(
        &self,
        _: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn begin_transaction(
        &self,
        _: Request<BeginTransactionRequest>,
    ) -> Result<Response<BeginTransactionResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn commit_transaction(
        &self,
        _: Request<CommitTransactionRequest>,
    ) -> Result<Response<CommitTransactionResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn rollback_transaction(
        &self,
        _: Request<RollbackTransactionRequest>,
    ) -> Result<Response<RollbackTransactionResponse>, Status> {
        Err(not_in_baseline())
    }

    async fn mutate(&self, _: Request<MutateRequest>) -> Result<Response<MutateResponse>, Status> {
        Err(not_in_baseline())
    }
}

/// Serves the baseline from an in-process map, or from Redis when `redis_url` is given.
pub async fn serve(listen: SocketAddr, redis_url: Option<String>) {
    let store = match redis_url {
        None => Store::Map((0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect()),
        Some(url) => {
            let connected =
                async { redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await };
            match connected.await {
                Ok(connection) => Store::Redis(connection),
                Err(error) => {
                    eprintln!("error: cannot connect to {url}: {error}");
                    std::process::exit(1);
                }
            }
        }
    };
    let server = MapServer { store };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {listen}: {error}");
            std::process::exit(1);
        }
    };
    println!("prism-load baseline: serving on {}", listener.local_addr().expect("bound"));
    let result = tonic::transport::Server::builder()
        .add_service(KeyValueServiceServer::new(server))
        .serve_with_incoming_shutdown(
            prism_host::server::incoming(listener),
            prism_host::server::shutdown_signal(),
        )
        .await;
    if let Err(error) = result {
        eprintln!("error: {error}");
    }
}
