//! The baseline the gateway is measured against: a bare tonic KeyValueService answering
//! Get/Set/Delete/Exists from a sharded in-process map, with no plugin, ABI or routing.
//! Other RPCs answer UNIMPLEMENTED: the load tool never calls them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use bytes::Bytes;
use prism_host::api::key_value_service_server::{KeyValueService, KeyValueServiceServer};
use prism_host::api::*;
use tonic::{Request, Response, Status};

const SHARDS: usize = 16;

struct MapServer {
    shards: Vec<RwLock<HashMap<String, Bytes>>>,
}

impl MapServer {
    fn shard(&self, key: &str) -> &RwLock<HashMap<String, Bytes>> {
        let hash = key
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        &self.shards[hash as usize % SHARDS]
    }
}

fn not_in_baseline() -> Status {
    Status::unimplemented("the baseline server answers only Get, Set, Delete and Exists")
}

#[tonic::async_trait]
impl KeyValueService for MapServer {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let found = self.shard(&request.key).read().unwrap().get(&request.key).cloned();
        Ok(Response::new(match found {
            Some(value) => GetResponse { found: true, value, version: 0 },
            None => GetResponse::default(),
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let request = request.into_inner();
        self.shard(&request.key).write().unwrap().insert(request.key, request.value);
        Ok(Response::new(SetResponse {}))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let request = request.into_inner();
        let deleted = self.shard(&request.key).write().unwrap().remove(&request.key).is_some();
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn exists(&self, request: Request<ExistsRequest>) -> Result<Response<ExistsResponse>, Status> {
        let request = request.into_inner();
        let exists = self.shard(&request.key).read().unwrap().contains_key(&request.key);
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
}

pub async fn serve(listen: SocketAddr) {
    let server = MapServer { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect() };
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
