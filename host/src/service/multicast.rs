//! MulticastRegistryService: a pattern composed from three slots. Registrations are
//! key-value entries (`mcr/<identity>` → JSON with metadata and expiry) in `registry`;
//! messages go out on `messaging` topic `mcast.<namespace>.<identity>` to identities
//! with an open Subscribe on this gateway or announced by another (presence.rs), and
//! into `durability` queue of the same name for the others when that slot is bound. Every message crosses the backends in one
//! small envelope (id, time, headers, payload).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use plugin_abi::host::Instance;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

mod envelope;
mod presence;

use envelope::Envelope;
use presence::{Announcement, Presence};

use super::check_value;
use crate::api::multicast_registry_service_server::MulticastRegistryService;
use crate::api::*;
use crate::filter::{self, Filter};
use crate::gateway::NamespaceRef;
use crate::patterns::MULTICAST_REGISTRY;
use crate::shared::plugin_status;
use crate::store::need;
use crate::store::Stores;

const REGISTRY: &str = "registry";
const MESSAGING: &str = "messaging";
const DURABILITY: &str = "durability";
const KEY_PREFIX: &str = "mcr/";
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// How often a subscriber looks in its durability queue for messages queued meanwhile.
const QUEUE_POLL: Duration = Duration::from_millis(500);
const QUEUE_VISIBILITY: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Registration {
    metadata: BTreeMap<String, String>,
    registered_at: i64,
    /// 0 = never.
    expires_at: i64,
}

impl Registration {
    fn live(&self, now: i64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }
}

fn check_identity(identity: &str) -> Result<(), Status> {
    let valid = !identity.is_empty()
        && identity.len() <= 100
        && identity.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "identity '{identity}' must be 1-100 letters, digits, '_' or '-'"
        )))
    }
}

fn parse_filter(text: &str) -> Result<Filter, Status> {
    filter::parse(text).map_err(|error| Status::invalid_argument(format!("filter: {error}")))
}

fn channel(namespace: &str, identity: &str) -> String {
    format!("mcast.{namespace}.{identity}")
}

impl Envelope {
    fn into_message(self, from_queue: bool) -> MulticastMessage {
        MulticastMessage {
            message_id: self.id,
            payload: self.payload.into(),
            headers: self.headers,
            sent_at_unix_ms: self.sent_at,
            from_queue,
        }
    }
}

pub struct MulticastApi {
    stores: Arc<Stores>,
    presence: Arc<Presence>,
    /// This gateway's name in subscription announcements (presence.rs).
    announced_as: String,
    next_id: AtomicU64,
}

struct Slots {
    namespace: NamespaceRef,
    registry: Arc<Instance>,
    messaging: Arc<Instance>,
    durability: Option<Arc<Instance>>,
}

impl MulticastApi {
    pub fn new(stores: Arc<Stores>) -> Self {
        let announced_as = format!("{:016x}", fastrand::u64(..));
        MulticastApi { stores, presence: Arc::default(), announced_as, next_id: AtomicU64::new(1) }
    }

    async fn slots(&self, namespace: &str) -> Result<Slots, Status> {
        let namespace = self.stores.gateway.namespace(namespace, MULTICAST_REGISTRY).await?;
        let bound = |slot: &str| namespace.slot(slot).map(|bound| bound.instance.clone());
        let registry = bound(REGISTRY).expect("multicast-registry namespaces always bind 'registry'");
        let messaging = bound(MESSAGING).expect("multicast-registry namespaces always bind 'messaging'");
        let durability = bound(DURABILITY);
        Ok(Slots { namespace, registry, messaging, durability })
    }

    async fn read(&self, slots: &Slots, identity: &str) -> Result<Option<Registration>, Status> {
        let basic = need(&slots.namespace, REGISTRY, slots.registry.keyvalue_basic(), "Register")?;
        let Some(bytes) = basic.get(&format!("{KEY_PREFIX}{identity}")).await.map_err(plugin_status)? else {
            return Ok(None);
        };
        let registration: Registration = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("registration of '{identity}' is unreadable: {e}")))?;
        Ok(registration.live(plugin_abi::unix_millis()).then_some(registration))
    }

    /// Live registrations under the registry that pass `filter`, gathered a scan page
    /// at a time (service/pages.rs): at most `limit`, no more than
    /// `server.max_response_bytes` of registry records, and no more than `max_bytes` of
    /// kept ones when asked. Returns them and the scan cursor to continue from.
    async fn matching(
        &self,
        slots: &Slots,
        filter: &Filter,
        cursor: Option<String>,
        limit: u32,
        max_bytes: u64,
    ) -> Result<(Vec<(String, Registration)>, Option<String>), Status> {
        let scan = need(&slots.namespace, REGISTRY, slots.registry.keyvalue_scan(), "Enumerate")?;
        let now = plugin_abi::unix_millis();
        let budget = self.stores.budget();
        let limits =
            crate::store::pages::Limits { count: limit as usize, max_bytes, plugin_page: MAX_PAGE as usize };
        crate::store::pages::gather(&scan, KEY_PREFIX, cursor, limits, budget, |key, value| {
            let size = (key.len() + value.len()) as u64;
            let registration = serde_json::from_slice::<Registration>(&value).ok()?;
            (registration.live(now) && filter.matches(&registration.metadata))
                .then(|| ((key[KEY_PREFIX.len()..].to_owned(), registration), size))
        })
        .await
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<MulticastMessage, Status>> + Send>>;

#[tonic::async_trait]
impl MulticastRegistryService for MulticastApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let slots = self.slots(&request.namespace).await?;
        check_identity(&request.identity)?;
        let ttl = super::optional_ttl("ttl_ms", request.ttl_ms)?;
        let existing = self.read(&slots, &request.identity).await?;
        if existing.is_some() && !request.replace {
            return Err(Status::already_exists(format!(
                "identity '{}' is already registered; set replace to overwrite it",
                request.identity
            )));
        }
        let now = plugin_abi::unix_millis();
        let expires_at = match ttl {
            None => 0,
            Some(ttl) => {
                i64::try_from(ttl.as_millis()).ok().and_then(|ms| now.checked_add(ms)).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "ttl_ms {} is too large; use at most a few years",
                        request.ttl_ms
                    ))
                })?
            }
        };
        let registration = Registration { metadata: request.metadata, registered_at: now, expires_at };
        let value = serde_json::to_vec(&registration).expect("a registration always serialises");
        check_value("metadata", value.len(), self.stores.gateway.settings.max_value_bytes)?;
        let key = format!("{KEY_PREFIX}{}", request.identity);
        // The expiry in the record makes TTLs hold on any registry; keyvalue_ttl, where the
        // plugin has it, also lets the backend reclaim the entry.
        match (ttl, slots.registry.keyvalue_ttl()) {
            (Some(ttl), Some(expiring)) => expiring.set_with_ttl(&key, value, ttl).await,
            _ => {
                let basic = need(&slots.namespace, REGISTRY, slots.registry.keyvalue_basic(), "Register")?;
                basic.set(&key, value).await
            }
        }
        .map_err(plugin_status)?;
        Ok(super::reply(RegisterResponse { replaced: existing.is_some() }))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let request = request.into_inner();
        let slots = self.slots(&request.namespace).await?;
        check_identity(&request.identity)?;
        let live = self.read(&slots, &request.identity).await?.is_some();
        let basic = need(&slots.namespace, REGISTRY, slots.registry.keyvalue_basic(), "Deregister")?;
        basic.delete(&format!("{KEY_PREFIX}{}", request.identity)).await.map_err(plugin_status)?;
        Ok(super::reply(DeregisterResponse { deregistered: live }))
    }

    async fn enumerate(
        &self,
        request: Request<EnumerateRequest>,
    ) -> Result<Response<EnumerateResponse>, Status> {
        let request = request.into_inner();
        let slots = self.slots(&request.namespace).await?;
        let filter = parse_filter(&request.filter)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            size if size > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size {size} is over the limit of {MAX_PAGE}"
                )))
            }
            size => size,
        };
        let cursor = (!request.cursor.is_empty()).then_some(request.cursor);
        let (found, next) = self.matching(&slots, &filter, cursor, page_size, request.max_page_bytes).await?;
        let identities = found
            .into_iter()
            .map(|(identity, registration)| RegisteredIdentity {
                identity,
                metadata: registration.metadata,
                registered_at_unix_ms: registration.registered_at,
                expires_at_unix_ms: registration.expires_at,
            })
            .collect();
        Ok(super::reply(EnumerateResponse { identities, next_cursor: next.unwrap_or_default() }))
    }

    async fn multicast(
        &self,
        request: Request<MulticastRequest>,
    ) -> Result<Response<MulticastResponse>, Status> {
        let request = request.into_inner();
        let slots = self.slots(&request.namespace).await?;
        let filter = parse_filter(&request.filter)?;
        check_value("payload", request.payload.len(), self.stores.gateway.settings.max_value_bytes)?;
        let pubsub = need(&slots.namespace, MESSAGING, slots.messaging.pubsub_basic(), "Multicast")?;
        let queue = match &slots.durability {
            Some(durability) => {
                Some(need(&slots.namespace, DURABILITY, durability.queue_basic(), "Multicast")?)
            }
            None => None,
        };
        let mut targets = Vec::new();
        let mut cursor = None;
        loop {
            let (found, next) = self.matching(&slots, &filter, cursor, MAX_PAGE, 0).await?;
            targets.extend(found.into_iter().map(|(identity, _)| identity));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let message_id =
            format!("mc-{:x}-{}", plugin_abi::unix_millis(), self.next_id.fetch_add(1, Ordering::Relaxed));
        let envelope = Envelope {
            id: message_id.clone(),
            sent_at: plugin_abi::unix_millis(),
            headers: request.headers,
            payload: request.payload.to_vec(),
        }
        .encode();
        let namespace = slots.namespace.name.clone();
        // Subscribed here, or on another gateway sharing the registry.
        let elsewhere = presence::announced(&slots.registry).await.map_err(plugin_status)?;
        let sends = targets.iter().map(|identity| {
            let (pubsub, queue, envelope, namespace) = (&pubsub, &queue, envelope.clone(), &namespace);
            let subscribed = self.presence.is_subscribed(namespace, identity) || elsewhere.contains(identity);
            async move {
                let topic = channel(namespace, identity);
                let (status, result) = if subscribed {
                    (DeliveryStatus::Delivered, pubsub.publish(&topic, envelope, Vec::new()).await.map(drop))
                } else if let Some(queue) = queue {
                    (DeliveryStatus::Queued, queue.enqueue(&topic, envelope).await.map(drop))
                } else {
                    (DeliveryStatus::NotDelivered, Ok(()))
                };
                match result {
                    Ok(()) => {
                        Delivery { identity: identity.clone(), status: status as i32, error: String::new() }
                    }
                    Err(error) => Delivery {
                        identity: identity.clone(),
                        status: DeliveryStatus::Failed as i32,
                        error: error.message().to_owned(),
                    },
                }
            }
        });
        let deliveries = futures_util::future::join_all(sends).await;
        let count =
            |status: DeliveryStatus| deliveries.iter().filter(|d| d.status == status as i32).count() as u32;
        Ok(super::reply(MulticastResponse {
            message_id,
            targets: targets.len() as u32,
            delivered: count(DeliveryStatus::Delivered),
            queued: count(DeliveryStatus::Queued),
            deliveries,
        }))
    }

    type SubscribeStream = Messages;

    async fn subscribe(
        &self,
        request: Request<MulticastSubscribeRequest>,
    ) -> Result<Response<Messages>, Status> {
        let request = request.into_inner();
        let slots = self.slots(&request.namespace).await?;
        check_identity(&request.identity)?;
        if self.read(&slots, &request.identity).await?.is_none() {
            return Err(Status::not_found(format!(
                "identity '{}' is not registered (or its registration lapsed); Register it first",
                request.identity
            )));
        }
        let pubsub = need(&slots.namespace, MESSAGING, slots.messaging.pubsub_basic(), "Subscribe")?;
        let topic = channel(&slots.namespace.name, &request.identity);
        // Live first, then presence, then the queue: a multicast either sees the identity
        // present (and publishes to a live subscription) or queues for it.
        let mut live = pubsub.subscribe(&topic).await.map_err(plugin_status)?;
        let presence = self.presence.enter(&slots.namespace.name, &request.identity);
        let subscription = format!("{}-{}", self.announced_as, self.next_id.fetch_add(1, Ordering::Relaxed));
        let announcement = Announcement::start(&slots.registry, &request.identity, &subscription).await;
        let (sender, receiver) = mpsc::channel::<Outgoing>(256);
        let durability = slots.durability.clone();
        let acker = slots.durability.clone();
        let queue = topic.clone();
        let messaging = slots.messaging.clone();
        let pump = tokio::spawn(async move {
            let _presence = presence;
            let _messaging = messaging;
            let mut poll = tokio::time::interval(QUEUE_POLL);
            let _announcement = announcement;
            loop {
                tokio::select! {
                    batch = live.next_batch(256) => match batch {
                        Some(Ok(batch)) => {
                            for message in batch {
                                let Some(envelope) = Envelope::decode(&message.payload) else { continue };
                                if sender.send((Ok(envelope.into_message(false)), None)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Some(Err(error)) => {
                            let _ = sender.send((Err(plugin_status(error)), None)).await;
                            return;
                        }
                        None => return,
                    },
                    _ = poll.tick(), if durability.is_some() => {
                        let durability = durability.as_ref().expect("checked");
                        if drain_queue(durability, &topic, &sender).await.is_err() {
                            return;
                        }
                    }
                    () = sender.closed() => return,
                }
            }
        });
        let guard = AbortOnDrop(pump.abort_handle());
        // A queued message is acked only when the client's stream asks for the next one
        // (so the previous one has been taken); one left unacked comes back after the
        // queue's visibility timeout.
        let state = Delivering { receiver, _pump: guard, acker, queue, taken: None };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            state.ack_taken().await;
            let (item, receipt) = state.receiver.recv().await?;
            state.taken = receipt;
            Some((item, state))
        });
        Ok(Response::new(super::until_retired(Box::pin(stream), &slots.namespace)))
    }
}

/// A Subscribe response stream: what the pump sends, and the queue receipt of the last
/// item handed out, acked when the next one is asked for.
struct Delivering {
    receiver: mpsc::Receiver<Outgoing>,
    _pump: AbortOnDrop,
    acker: Option<Arc<Instance>>,
    queue: String,
    taken: Option<String>,
}

impl Delivering {
    async fn ack_taken(&mut self) {
        let (Some(receipt), Some(basic)) =
            (self.taken.take(), self.acker.as_ref().and_then(|d| d.queue_basic()))
        else {
            return;
        };
        if let Err(error) = basic.ack(&self.queue, &receipt).await {
            tracing::warn!(queue = %self.queue, %error, "cannot ack a delivered multicast message; it may come again");
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A message for the subscriber, with the queue receipt to ack once the client took it.
type Outgoing = (Result<MulticastMessage, Status>, Option<String>);

/// Hands every visible queued message to the subscriber's stream (which acks it when taken).
async fn drain_queue(durability: &Instance, queue: &str, sender: &mpsc::Sender<Outgoing>) -> Result<(), ()> {
    let Some(visibility) = durability.queue_visibility() else {
        return Ok(());
    };
    loop {
        let messages = match visibility.dequeue_with_visibility(queue, 32, QUEUE_VISIBILITY).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%queue, %error, "cannot read a multicast durability queue; retrying");
                return Ok(());
            }
        };
        if messages.is_empty() {
            return Ok(());
        }
        for message in messages {
            let Some(envelope) = Envelope::decode(&message.payload) else { continue };
            sender.send((Ok(envelope.into_message(true)), Some(message.receipt))).await.map_err(|_| ())?;
        }
    }
}
