//! The baselines the gateway is measured against: a bare tonic KeyValueService answering
//! Get/Set/Delete/Exists from a sharded in-process map, straight from Redis (plain
//! GET/SET/DEL/EXISTS on one multiplexed connection), from PostgreSQL (one table,
//! pooled connections, prepared statements) or from a SQLite file (`sqlite_baseline`)
//! — no plugin, ABI or routing.
//! Other RPCs answer UNIMPLEMENTED: the load tool never calls them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use bytes::Bytes;
use prism_api::key_value_service_server::{KeyValueService, KeyValueServiceServer};
use prism_api::*;
use redis::AsyncCommands;
use tonic::{Request, Response, Status};

const SHARDS: usize = 16;

enum Store {
    Map(Vec<RwLock<HashMap<String, Bytes>>>),
    Redis(redis::aio::ConnectionManager),
    /// Table `prism_baseline_kv (key BYTEA PRIMARY KEY, value BYTEA)`.
    Postgres(deadpool_postgres::Pool),
    /// Table `prism_baseline_kv (key BLOB PRIMARY KEY, value BLOB)` in a WAL file.
    Sqlite(crate::sqlite_baseline::Sqlite),
}

fn sqlite_status(error: String) -> Status {
    Status::unavailable(format!("sqlite: {error}"))
}

fn postgres_status(error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("postgres: {error}"))
}

const PG_GET: &str = "SELECT value FROM prism_baseline_kv WHERE key = $1";
const PG_SET: &str = "INSERT INTO prism_baseline_kv (key, value) VALUES ($1, $2) \
                      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const PG_DELETE: &str = "DELETE FROM prism_baseline_kv WHERE key = $1";

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
            Store::Postgres(pool) => {
                let client = pool.get().await.map_err(postgres_status)?;
                let statement = client.prepare_cached(PG_GET).await.map_err(postgres_status)?;
                let row = client
                    .query_opt(&statement, &[&request.key.as_bytes()])
                    .await
                    .map_err(postgres_status)?;
                row.map(|row| Bytes::from(row.get::<_, Vec<u8>>(0)))
            }
            Store::Sqlite(sqlite) => sqlite.get(request.key).await.map_err(sqlite_status)?.map(Bytes::from),
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
            Store::Postgres(pool) => {
                let client = pool.get().await.map_err(postgres_status)?;
                let statement = client.prepare_cached(PG_SET).await.map_err(postgres_status)?;
                let value: &[u8] = &request.value;
                client
                    .execute(&statement, &[&request.key.as_bytes(), &value])
                    .await
                    .map_err(postgres_status)?;
            }
            Store::Sqlite(sqlite) => sqlite.set(request.key, request.value).await.map_err(sqlite_status)?,
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
            Store::Postgres(pool) => {
                let client = pool.get().await.map_err(postgres_status)?;
                client.execute(PG_DELETE, &[&request.key.as_bytes()]).await.map_err(postgres_status)? > 0
            }
            Store::Sqlite(sqlite) => sqlite.delete(request.key).await.map_err(sqlite_status)?,
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
            Store::Postgres(pool) => {
                let client = pool.get().await.map_err(postgres_status)?;
                let statement = client.prepare_cached(PG_GET).await.map_err(postgres_status)?;
                client
                    .query_opt(&statement, &[&request.key.as_bytes()])
                    .await
                    .map_err(postgres_status)?
                    .is_some()
            }
            Store::Sqlite(sqlite) => sqlite.get(request.key).await.map_err(sqlite_status)?.is_some(),
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

    async fn set_stream(
        &self,
        _: Request<tonic::Streaming<SetStreamRequest>>,
    ) -> Result<Response<SetStreamResponse>, Status> {
        Err(not_in_baseline())
    }

    type GetStreamStream = tokio_stream::Empty<Result<GetStreamResponse, Status>>;

    async fn get_stream(
        &self,
        _: Request<GetStreamRequest>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
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

async fn postgres(url: &str) -> Result<deadpool_postgres::Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build().map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS prism_baseline_kv (key BYTEA PRIMARY KEY, value BYTEA NOT NULL)",
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(pool)
}

/// Where the baseline keeps its data.
pub enum Backend {
    Map,
    Redis(String),
    Postgres(String),
    /// A SQLite database file.
    Sqlite(String),
}

/// Serves the baseline from an in-process map, Redis, PostgreSQL or SQLite.
pub async fn serve(listen: SocketAddr, backend: Backend) {
    let store = match backend {
        Backend::Map => Store::Map((0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect()),
        Backend::Postgres(url) => match postgres(&url).await {
            Ok(pool) => Store::Postgres(pool),
            Err(error) => {
                eprintln!("error: cannot use PostgreSQL at {url}: {error}");
                std::process::exit(1);
            }
        },
        Backend::Sqlite(path) => match crate::sqlite_baseline::Sqlite::open(&path) {
            Ok(sqlite) => Store::Sqlite(sqlite),
            Err(error) => {
                eprintln!("error: cannot use the SQLite database {path}: {error}");
                std::process::exit(1);
            }
        },
        Backend::Redis(url) => {
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
            // Nagle off, as the gateway does, so the comparison is like for like.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
    if let Err(error) = result {
        eprintln!("error: {error}");
    }
}
