use std::sync::Arc;

use plugin_abi::host::Instance;
use plugin_abi::ListEnd as End;
use tonic::{Request, Response, Status};

use super::{check_batch, check_key, check_value};
use crate::api::list_service_server::ListService;
use crate::api::*;
use crate::gateway::NamespaceRef;
use crate::patterns::LIST;
use crate::shared::plugin_status;
use crate::store::need;
use crate::store::Stores;

const STORE: &str = "store";
/// Most values one Pop may return.
const MAX_POP: u32 = 1000;

pub struct ListApi {
    stores: Arc<Stores>,
}

impl ListApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        ListApi { stores }
    }

    async fn store(&self, namespace: &str) -> Result<(NamespaceRef, Arc<Instance>), Status> {
        let namespace = self.stores.gateway.namespace(namespace, LIST).await?;
        let instance = namespace.slot(STORE).expect("list namespaces always bind 'store'").instance.clone();
        Ok((namespace, instance))
    }
}

fn end(value: i32) -> Result<End, Status> {
    match ListEnd::try_from(value) {
        Ok(ListEnd::Left) => Ok(End::Left),
        Ok(ListEnd::Right) => Ok(End::Right),
        _ => Err(Status::invalid_argument("end must be LIST_END_LEFT or LIST_END_RIGHT")),
    }
}

fn to_bytes(values: Vec<Vec<u8>>) -> Vec<bytes::Bytes> {
    values.into_iter().map(bytes::Bytes::from).collect()
}

#[tonic::async_trait]
impl ListService for ListApi {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let at = end(request.end)?;
        if request.values.is_empty() {
            return Err(Status::invalid_argument("values must hold at least one value"));
        }
        check_batch("values", request.values.len())?;
        let max = self.stores.gateway.settings.max_value_bytes;
        for (index, value) in request.values.iter().enumerate() {
            check_value(&format!("values[{index}]"), value.len(), max)?;
        }
        let list = need(&namespace, STORE, store.list_basic(), "Push")?;
        let values = request.values.into_iter().map(Vec::from).collect();
        let length = list.push(&request.key, at, values).await.map_err(plugin_status)?;
        Ok(super::reply(PushResponse { length }))
    }

    async fn pop(&self, request: Request<PopRequest>) -> Result<Response<PopResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let at = end(request.end)?;
        let count = match request.count {
            0 => 1,
            count if count > MAX_POP => {
                return Err(Status::invalid_argument(format!(
                    "count {count} is above the limit of {MAX_POP}"
                )))
            }
            count => count,
        };
        let list = need(&namespace, STORE, store.list_basic(), "Pop")?;
        let values = list.pop(&request.key, at, count).await.map_err(plugin_status)?;
        Ok(super::reply(PopResponse { values: to_bytes(values) }))
    }

    async fn length(&self, request: Request<LengthRequest>) -> Result<Response<LengthResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let list = need(&namespace, STORE, store.list_basic(), "Length")?;
        let length = list.length(&request.key).await.map_err(plugin_status)?;
        Ok(super::reply(LengthResponse { length }))
    }

    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let list = need(&namespace, STORE, store.list_range(), "Range")?;
        let values = list.range(&request.key, request.start, request.stop).await.map_err(plugin_status)?;
        Ok(super::reply(RangeResponse { values: to_bytes(values) }))
    }

    async fn trim(&self, request: Request<TrimRequest>) -> Result<Response<TrimResponse>, Status> {
        let request = request.into_inner();
        let (namespace, store) = self.store(&request.namespace).await?;
        check_key("key", &request.key)?;
        let list = need(&namespace, STORE, store.list_range(), "Trim")?;
        list.trim(&request.key, request.start, request.stop).await.map_err(plugin_status)?;
        Ok(super::reply(TrimResponse {}))
    }
}
