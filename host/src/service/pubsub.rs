//! PubSubService. Each subscription gets a bounded outbox between the plugin's stream and
//! the client: the plugin side is drained as fast as messages come, the client reads at
//! its own pace, and when the outbox is full the configured policy applies — so a slow
//! subscriber never grows host memory without bound.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::Stream;

use plugin_abi::topics::{check_pattern, check_topic};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::check_value;
use crate::api::pub_sub_service_server::PubSubService;
use crate::api::*;
use crate::config::SlowSubscriber;
use crate::gateway::Subscription;
use crate::shared::plugin_status;
use crate::store::idempotency::once;
use crate::store::pubsub::{Payloads, SLOT};
use crate::store::{need, Stores};

pub struct PubSubApi {
    stores: Arc<Stores>,
}

impl PubSubApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        PubSubApi { stores }
    }

    /// Publishes one message (of `Publish` or `PublishStream`), once per idempotency token.
    async fn publish_one(&self, request: PublishRequest) -> Result<String, Status> {
        let store = self.stores.pubsub(&request.namespace).await?;
        check_topic(&request.topic).map_err(|e| Status::invalid_argument(format!("topic: {e}")))?;
        check_value("payload", request.payload.len(), self.stores.gateway.settings.max_value_bytes)?;
        let call =
            self.stores.idempotent(&store.namespace, "Publish", &request.idempotency_token, &request)?;
        let write = async move {
            let metadata = request.metadata.into_iter().collect();
            let message_id = store.publish(&request.topic, request.payload.into(), metadata).await?;
            Ok(PublishResponse { message_id })
        };
        once(call, write).await.map(|published| published.message_id)
    }
}

fn message(message: plugin_abi::Message) -> PubSubMessage {
    PubSubMessage {
        message_id: message.id,
        topic: message.topic,
        payload: message.payload.into(),
        metadata: message.metadata.into_iter().collect(),
        published_at_unix_ms: message.published_at_unix_ms,
        ack_id: message.ack_id,
        delivery_count: message.delivery_count,
    }
}

/// How long an unacked durable message waits for redelivery when the client names none.
const DEFAULT_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn check_durable_name(name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "durable_name '{name}' must be 1-128 letters, digits, '_' or '-'"
        )))
    }
}

/// Messages waiting for one subscriber, bounded by `capacity`.
struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    capacity: usize,
    policy: SlowSubscriber,
    /// What the console and the outbox gauges read.
    shown: Arc<Subscription>,
    /// `prism_subscriber_dropped_messages_total` for the namespace, when metrics are on.
    dropped_metric: Option<prometheus::IntCounter>,
}

#[derive(Default)]
struct OutboxState {
    waiting: VecDeque<PubSubMessage>,
    dropped: u64,
    /// Set when no more messages will come: `Ok` for a clean end, or the final error.
    end: Option<Result<(), Status>>,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message; returns false when the subscription must end (policy: disconnect).
    fn push(&self, message: PubSubMessage) -> bool {
        let mut state = self.lock();
        if state.waiting.len() >= self.capacity {
            match self.policy {
                SlowSubscriber::DropOldest => {
                    state.waiting.pop_front();
                    state.dropped += 1;
                    self.shown.dropped.fetch_add(1, Ordering::Relaxed);
                    if let Some(metric) = &self.dropped_metric {
                        metric.inc();
                    }
                }
                SlowSubscriber::Disconnect => {
                    state.end = Some(Err(Status::resource_exhausted(format!(
                        "subscriber too slow: {} messages were waiting (server.subscriber_buffer); resubscribe \
                         and read faster, or use slow_subscriber = \"drop_oldest\"",
                        self.capacity
                    ))));
                    drop(state);
                    self.ready.notify_one();
                    return false;
                }
            }
        }
        state.waiting.push_back(message);
        self.shown.waiting.store(state.waiting.len(), Ordering::Relaxed);
        drop(state);
        self.ready.notify_one();
        true
    }

    fn finish(&self, end: Result<(), Status>) {
        self.lock().end.get_or_insert(end);
        self.ready.notify_one();
    }

    /// The next item for the client: a message (with the drop count before it), the final
    /// error, or `None` at the end.
    async fn next(&self) -> Option<Result<SubscribeResponse, Status>> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if let Some(message) = state.waiting.pop_front() {
                    self.shown.waiting.store(state.waiting.len(), Ordering::Relaxed);
                    let dropped_before = std::mem::take(&mut state.dropped);
                    return Some(Ok(SubscribeResponse { message: Some(message), dropped_before }));
                }
                match state.end.take() {
                    Some(Ok(())) => return None,
                    Some(Err(status)) => {
                        state.end = Some(Ok(())); // end after reporting the error once
                        return Some(Err(status));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }
}

/// Aborts the pump (dropping the plugin stream, which unsubscribes) when the client goes.
struct PumpGuard(tokio::task::AbortHandle);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages taken across the plugin boundary per call.
const BATCH: usize = 256;

/// Moves messages from the plugin to the outbox; with a claim check, a claimed payload
/// is fetched (and checked) first, and a message whose payload cannot be is skipped
/// (see [`Payloads::deliverable`]).
async fn pump(mut stream: plugin_abi::Subscription, outbox: Arc<Outbox>, payloads: Payloads) {
    loop {
        match stream.next_batch(BATCH).await {
            Some(Ok(batch)) => {
                for mut item in batch {
                    if !payloads.deliverable(&mut item).await {
                        continue;
                    }
                    if !outbox.push(message(item)) {
                        return;
                    }
                }
            }
            Some(Err(error)) => return outbox.finish(Err(plugin_status(error))),
            None => return outbox.finish(Ok(())),
        }
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PubSubService for PubSubApi {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let message_id = self.publish_one(request.into_inner()).await?;
        Ok(super::reply(PublishResponse { message_id }))
    }

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<PublishRequest>>,
    ) -> Result<Response<PublishStreamResponse>, Status> {
        let mut requests = request.into_inner();
        let mut response = PublishStreamResponse::default();
        while let Some(request) = requests.message().await? {
            response.last_message_id = self.publish_one(request).await.map_err(|status| {
                Status::new(
                    status.code(),
                    format!("{} (after {} messages were published)", status.message(), response.published),
                )
            })?;
            response.published += 1;
        }
        Ok(super::reply(response))
    }

    async fn ack(&self, request: Request<PubSubAckRequest>) -> Result<Response<PubSubAckResponse>, Status> {
        let request = request.into_inner();
        let store = self.stores.pubsub(&request.namespace).await?;
        check_durable_name(&request.durable_name)?;
        if request.ack_id.is_empty() {
            return Err(Status::invalid_argument(
                "ack_id must not be empty: use the ack_id of a delivered message",
            ));
        }
        let persistent = need(&store.namespace, SLOT, store.broker().pubsub_persistent(), "Ack")?;
        persistent.ack(&request.durable_name, &request.ack_id).await.map_err(plugin_status)?;
        Ok(super::reply(PubSubAckResponse {}))
    }

    type SubscribeStream = Events;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Events>, Status> {
        let request = request.into_inner();
        let store = self.stores.pubsub(&request.namespace).await?;
        let (namespace, broker) = (&store.namespace, store.broker().clone());
        let wildcard =
            check_pattern(&request.topic).map_err(|e| Status::invalid_argument(format!("topic: {e}")))?;
        let stream = if !request.durable_name.is_empty() {
            check_durable_name(&request.durable_name)?;
            let ack_wait = match super::optional_ttl("ack_wait_ms", request.ack_wait_ms)? {
                Some(wait) => wait,
                None => DEFAULT_ACK_WAIT,
            };
            let persistent = need(namespace, SLOT, broker.pubsub_persistent(), "a durable Subscribe")?;
            persistent.subscribe_durable(&request.durable_name, &request.topic, ack_wait).await
        } else if wildcard {
            let wildcards = need(namespace, SLOT, broker.pubsub_wildcards(), "Subscribe to a pattern")?;
            wildcards.subscribe_pattern(&request.topic).await
        } else {
            let basic = need(namespace, SLOT, broker.pubsub_basic(), "Subscribe")?;
            basic.subscribe(&request.topic).await
        }
        .map_err(plugin_status)?;
        let settings = &self.stores.gateway.settings;
        let shown = Arc::new(Subscription {
            topic: request.topic.clone(),
            durable_name: request.durable_name.clone(),
            opened: std::time::Instant::now(),
            waiting: Default::default(),
            dropped: Default::default(),
        });
        namespace.track_subscription(&shown);
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            capacity: settings.subscriber_buffer,
            policy: settings.slow_subscriber,
            dropped_metric: crate::observe::metrics()
                .map(|metrics| metrics.subscriber_dropped(&namespace.name)),
            shown,
        });
        let durable = (!request.durable_name.is_empty()).then_some(request.durable_name.as_str());
        let pump = tokio::spawn(pump(stream, outbox.clone(), store.payloads(durable)));
        // Keeps the instance alive for as long as the client reads.
        let state = (outbox, PumpGuard(pump.abort_handle()), broker);
        let events = futures_util::stream::unfold(state, |state| async move {
            let item = state.0.next().await?;
            Some((item, state))
        });
        Ok(Response::new(super::until_retired(Box::pin(events), namespace)))
    }
}
