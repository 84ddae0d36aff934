//! StreamService. Reads and group feeds are pulled: the response stream asks the plugin
//! for the next batch only when the client has taken the last one, so a slow reader
//! holds no more than one batch in the host (a log, unlike a topic, can wait).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use plugin_abi::host::Instance;
use plugin_abi::{Feed, GroupEvent, NewRecord};
use tonic::{Request, Response, Status};

use super::{check_value, MAX_KEY_BYTES};
use crate::api::read_request::Start;
use crate::api::stream_service_server::StreamService;
use crate::api::*;
use crate::gateway::NamespaceRef;
use crate::patterns::STREAM;
use crate::shared::plugin_status;
use crate::store::need;
use crate::store::Stores;

const SLOT: &str = "log";
/// Records taken across the plugin boundary per call.
const BATCH: usize = 256;
const MAX_NAME: usize = 200;

pub struct StreamApi {
    stores: Arc<Stores>,
}

impl StreamApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        StreamApi { stores }
    }

    async fn resolve(&self, namespace: &str, stream: &str) -> Result<(NamespaceRef, Arc<Instance>), Status> {
        let namespace = self.stores.gateway.namespace(namespace, STREAM).await?;
        check_name("stream", stream)?;
        let log = namespace.slot(SLOT).expect("stream namespaces always bind 'log'").instance.clone();
        Ok((namespace, log))
    }
}

/// Names that every backend accepts (Kafka's topic rule, which is the strictest).
pub fn check_name(field: &str, name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} '{name}' must be 1-{MAX_NAME} letters, digits, '.', '_' or '-'"
        )))
    }
}

fn record(record: plugin_abi::StreamRecord) -> StreamRecord {
    StreamRecord {
        partition: record.partition,
        offset: record.offset,
        key: record.key.map(Into::into),
        payload: record.payload.into(),
        headers: record.headers.into_iter().collect(),
        timestamp_unix_ms: record.timestamp_unix_ms,
        ack_id: record.ack_id,
    }
}

type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Turns a plugin feed into a response stream that pulls one batch at a time, keeping
/// the instance alive while the client reads and stopping after `limit` items.
fn pulled<E: Send + 'static, T: Send + 'static>(
    events: Feed<E>,
    instance: Arc<Instance>,
    limit: Option<u64>,
    convert: fn(E) -> Option<T>,
) -> Responses<T> {
    struct State<E, T> {
        events: Feed<E>,
        ready: std::collections::VecDeque<T>,
        left: Option<u64>,
        _instance: Arc<Instance>,
    }
    let state = State { events, ready: Default::default(), left: limit, _instance: instance };
    Box::pin(futures_util::stream::unfold(state, move |mut state| async move {
        if state.left == Some(0) {
            return None;
        }
        while state.ready.is_empty() {
            match state.events.next_batch(BATCH).await? {
                Ok(batch) => state.ready.extend(batch.into_iter().filter_map(convert)),
                Err(error) => {
                    state.left = Some(0);
                    return Some((Err(plugin_status(error)), state));
                }
            }
        }
        state.left = state.left.map(|left| left - 1);
        let item = state.ready.pop_front()?;
        Some((Ok(item), state))
    }))
}

#[tonic::async_trait]
impl StreamService for StreamApi {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let request = request.into_inner();
        let (namespace, log) = self.resolve(&request.namespace, &request.stream).await?;
        check_value("payload", request.payload.len(), self.stores.gateway.settings.max_value_bytes)?;
        if let Some(key) = request.key.as_ref().filter(|key| key.len() > MAX_KEY_BYTES) {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes; record keys are at most {MAX_KEY_BYTES} bytes",
                key.len()
            )));
        }
        let call = self.stores.idempotent(&namespace, "Append", &request.idempotency_token, &request)?;
        let write = async move {
            let new_record = NewRecord {
                key: request.key.map(|key| key.to_vec()),
                payload: request.payload.to_vec(),
                headers: request.headers.into_iter().collect(),
            };
            let appended = match request.partition {
                Some(partition) => {
                    let partitioning =
                        need(&namespace, SLOT, log.stream_partitioning(), "Append to an explicit partition")?;
                    partitioning.append_to_partition(&request.stream, partition, new_record).await
                }
                None => {
                    let basic = need(&namespace, SLOT, log.stream_basic(), "Append")?;
                    basic.append(&request.stream, new_record).await
                }
            }
            .map_err(plugin_status)?;
            Ok(AppendResponse {
                partition: appended.partition,
                offset: appended.offset,
                timestamp_unix_ms: appended.timestamp_unix_ms,
            })
        };
        crate::store::idempotency::once(call, write).await.map(super::reply)
    }

    type ReadStream = Responses<ReadResponse>;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let (namespace, log) = self.resolve(&request.namespace, &request.stream).await?;
        let basic = need(&namespace, SLOT, log.stream_basic(), "Read")?;
        let from_offset = match request.start {
            None => 0,
            Some(Start::FromOffset(offset)) => offset,
            Some(Start::FromTimestampUnixMs(timestamp)) => {
                let replay = need(&namespace, SLOT, log.stream_replay(), "Read from a timestamp")?;
                replay
                    .offset_for_timestamp(&request.stream, request.partition, timestamp)
                    .await
                    .map_err(plugin_status)?
            }
            Some(Start::FromEnd(_)) => {
                let offsets = basic.offsets(&request.stream).await.map_err(plugin_status)?;
                let partition =
                    offsets.iter().find(|o| o.partition == request.partition).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "stream '{}' has {} partitions; partition {} does not exist",
                            request.stream,
                            offsets.len(),
                            request.partition
                        ))
                    })?;
                partition.next
            }
        };
        let events = basic
            .read(&request.stream, request.partition, from_offset, request.follow)
            .await
            .map_err(plugin_status)?;
        let limit = (request.max_records > 0).then_some(request.max_records);
        let responses =
            pulled(events, log.clone(), limit, |item| Some(ReadResponse { record: Some(record(item)) }));
        Ok(Response::new(super::until_retired(responses, &namespace)))
    }

    async fn get_offsets(
        &self,
        request: Request<GetOffsetsRequest>,
    ) -> Result<Response<GetOffsetsResponse>, Status> {
        let request = request.into_inner();
        let (namespace, log) = self.resolve(&request.namespace, &request.stream).await?;
        let basic = need(&namespace, SLOT, log.stream_basic(), "GetOffsets")?;
        let offsets = basic.offsets(&request.stream).await.map_err(plugin_status)?;
        let committed = if request.group.is_empty() {
            Vec::new()
        } else {
            check_name("group", &request.group)?;
            let groups = need(&namespace, SLOT, log.stream_consumer_groups(), "GetOffsets with a group")?;
            groups.committed(&request.stream, &request.group).await.map_err(plugin_status)?
        };
        let partitions = offsets
            .into_iter()
            .map(|o| PartitionOffsets {
                partition: o.partition,
                earliest: o.earliest,
                next: o.next,
                committed: committed.iter().find(|(p, _)| *p == o.partition).and_then(|(_, c)| *c),
            })
            .collect();
        Ok(super::reply(GetOffsetsResponse { partitions }))
    }

    type JoinGroupStream = Responses<JoinGroupResponse>;

    async fn join_group(
        &self,
        request: Request<JoinGroupRequest>,
    ) -> Result<Response<Self::JoinGroupStream>, Status> {
        let request = request.into_inner();
        let (namespace, log) = self.resolve(&request.namespace, &request.stream).await?;
        check_name("group", &request.group)?;
        let groups = need(&namespace, SLOT, log.stream_consumer_groups(), "JoinGroup")?;
        let events = groups.join(&request.stream, &request.group).await.map_err(plugin_status)?;
        let responses = pulled(events, log.clone(), None, |event| {
            let event = match event {
                GroupEvent::Assigned(partitions) => {
                    join_group_response::Event::Assignment(Assignment { partitions })
                }
                GroupEvent::Record(item) => join_group_response::Event::Record(record(item)),
            };
            Some(JoinGroupResponse { event: Some(event) })
        });
        Ok(Response::new(super::until_retired(responses, &namespace)))
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let request = request.into_inner();
        let (namespace, log) = self.resolve(&request.namespace, &request.stream).await?;
        check_name("group", &request.group)?;
        if request.ack_id.is_empty() {
            return Err(Status::invalid_argument(
                "ack_id must not be empty: use the ack_id of a record JoinGroup delivered",
            ));
        }
        let groups = need(&namespace, SLOT, log.stream_consumer_groups(), "Commit")?;
        groups.commit(&request.stream, &request.group, &request.ack_id).await.map_err(plugin_status)?;
        Ok(super::reply(CommitResponse {}))
    }
}
