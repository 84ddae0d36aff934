//! The running gateway: namespaces bound to plugin instances, behind one atomically
//! swappable routing snapshot, so a request resolves its namespace without a global lock.
//!
//! A reload builds a new snapshot and swaps it in. The namespaces it replaces are
//! *retired*: calls already running finish on them, open streams end (see
//! [`Namespace::retired`]), and a handover of state first closes the namespace's gate
//! so no call writes to the old instance after its state was exported.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use plugin_abi::host::Instance;
use plugin_abi::{Health, HealthStatus, PluginError};
use tonic::Status;

use crate::config::ServerConfig;
use crate::loader::LoadedPlugin;
use crate::patterns::{Pattern, Slot};
use crate::resolve::{Resolved, ResolvedNamespace};
use crate::shared::shown;

/// The namespace a request without one goes to.
pub const DEFAULT_NAMESPACE: &str = "default";

pub struct BoundSlot {
    pub slot: &'static Slot,
    pub plugin: Arc<LoadedPlugin>,
    pub instance: Arc<Instance>,
    /// The supervisor of the instance's process (`isolation = "process"`).
    pub process: Option<Arc<crate::isolation::Supervisor>>,
    /// The slot's `config` table as the plugin got it, and where the binding is in the
    /// config file: what a reload compares, and recreates the instance from.
    pub config_toml: String,
    pub key: String,
}

pub struct Namespace {
    pub name: String,
    pub pattern: &'static Pattern,
    pub slots: Vec<BoundSlot>,
    health: RwLock<Health>,
    /// Calls holding a [`NamespaceRef`] now.
    in_flight: std::sync::atomic::AtomicI64,
    /// Server streams open now (they do not hold a `NamespaceRef`: see `until_retired`).
    open_streams: Arc<std::sync::atomic::AtomicI64>,
    /// Every call holds a read pass; a state handover takes the write side.
    gate: Arc<tokio::sync::RwLock<()>>,
    retired: tokio::sync::watch::Sender<bool>,
    /// Pub/sub subscriptions open now, for the console and the outbox gauges.
    subscriptions: std::sync::Mutex<Vec<std::sync::Weak<Subscription>>>,
}

/// What the console and the metrics show of one open subscription. Its outbox keeps
/// `waiting` current; the namespace only holds it weakly, so it goes with the stream.
#[derive(Debug)]
pub struct Subscription {
    pub topic: String,
    /// Empty for a plain (non-durable) subscription.
    pub durable_name: String,
    pub opened: std::time::Instant,
    /// Messages in the outbox now.
    pub waiting: std::sync::atomic::AtomicUsize,
    /// Messages dropped for this subscriber so far (slow_subscriber = "drop_oldest").
    pub dropped: std::sync::atomic::AtomicU64,
}

/// A namespace a call is using: while it is held, no state handover can start.
pub struct NamespaceRef {
    namespace: Arc<Namespace>,
    _pass: tokio::sync::OwnedRwLockReadGuard<()>,
    /// The call's place in its in-flight quotas, given back when the call is done.
    _admission: Option<crate::quota::Admission>,
}

/// A server stream's place in its namespace's count of open streams.
pub struct OpenStream(Arc<std::sync::atomic::AtomicI64>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for NamespaceRef {
    fn drop(&mut self) {
        self.namespace.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl NamespaceRef {
    /// The namespace itself, for work that outlives the call's hold on it (a server
    /// stream's task) and so must not keep a reload's state handover waiting.
    pub fn shared(&self) -> Arc<Namespace> {
        self.namespace.clone()
    }
}

impl Deref for NamespaceRef {
    type Target = Namespace;
    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}

impl crate::observe::call::NamespaceName for Namespace {
    fn namespace_name(&self) -> &str {
        &self.name
    }
}

impl Namespace {
    pub fn new(name: String, pattern: &'static Pattern, slots: Vec<BoundSlot>) -> Namespace {
        Namespace {
            name,
            pattern,
            slots,
            health: RwLock::new(Health::serving()),
            in_flight: Default::default(),
            open_streams: Arc::default(),
            gate: Arc::default(),
            retired: tokio::sync::watch::channel(false).0,
            subscriptions: Default::default(),
        }
    }

    /// Calls being served on the namespace now (a stream only while it is opened).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Server streams open on the namespace now.
    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a server stream as open until the returned guard is dropped.
    pub fn stream_opened(&self) -> OpenStream {
        self.open_streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(self.open_streams.clone())
    }

    /// Lists `subscription` among the namespace's open ones until it is dropped.
    pub fn track_subscription(&self, subscription: &Arc<Subscription>) {
        let mut open = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|weak| weak.strong_count() > 0);
        open.push(Arc::downgrade(subscription));
    }

    /// The subscriptions open on the namespace now, oldest first.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        let mut open = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|weak| weak.strong_count() > 0);
        open.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    pub fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Whether a slot's plugin process is being restarted by its supervisor, or was
    /// given up on after crashing too often.
    pub fn process_recovering(&self) -> bool {
        self.slots.iter().any(|bound| bound.process.as_ref().is_some_and(|process| process.recovering()))
    }

    /// Marks the namespace replaced: streams opened on it end.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Resolves once the namespace has been replaced or removed by a reload.
    pub fn retired(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut retired = self.retired.subscribe();
        async move {
            let _ = retired.wait_for(|retired| *retired).await;
        }
    }

    /// Creates one instance per slot; on failure, shuts down those already created.
    pub async fn create(resolved: ResolvedNamespace) -> Result<Namespace, StartError> {
        let mut slots: Vec<BoundSlot> = Vec::new();
        for slot in resolved.slots {
            match slot.plugin.plugin.create_in(&slot.config_toml, &resolved.name).await {
                Ok((mut instance, process)) => {
                    if let Some(observer) = crate::observe::plugin_observer(&slot.plugin.name) {
                        instance.observe_calls(observer);
                    }
                    slots.push(BoundSlot {
                        slot: slot.slot,
                        plugin: slot.plugin,
                        instance: Arc::new(instance),
                        process,
                        config_toml: slot.config_toml,
                        key: slot.key,
                    })
                }
                Err(error) => {
                    for bound in slots {
                        bound.instance.shutdown().await;
                    }
                    return Err(StartError { key: slot.key, plugin: slot.plugin.name.clone(), error });
                }
            }
        }
        Ok(Namespace::new(resolved.name, resolved.pattern, slots))
    }

    /// Lets each of the namespace's instances release its backend.
    pub async fn shutdown(&self) {
        for bound in &self.slots {
            bound.instance.shutdown().await;
        }
    }

    /// Waits for the calls in flight to finish and keeps new ones out until the guard drops.
    pub async fn close_gate(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    pub fn slot(&self, name: &str) -> Option<&BoundSlot> {
        self.slots.iter().find(|bound| bound.slot.name == name)
    }

    pub fn health(&self) -> Health {
        self.health.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls every instance at once, each bounded by `timeout` (a plugin whose health
    /// check hangs is reported unhealthy), and keeps the worst status.
    pub async fn refresh_health(&self, timeout: std::time::Duration) -> Health {
        let checks = self.slots.iter().map(|bound| async move {
            match tokio::time::timeout(timeout, bound.instance.health()).await {
                Ok(health) => health,
                Err(_) => Health {
                    status: HealthStatus::Unhealthy,
                    message: format!("health check did not answer within {} ms", timeout.as_millis()),
                },
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let rank = |h: &Health| match h.status {
            HealthStatus::Serving => 0,
            HealthStatus::Degraded => 1,
            HealthStatus::Unhealthy => 2,
        };
        let mut worst = Health::serving();
        for (bound, health) in self.slots.iter().zip(results) {
            if rank(&health) > rank(&worst) {
                worst = Health {
                    status: health.status,
                    message: format!(
                        "slot '{}' ({}): {}",
                        bound.slot.name, bound.plugin.name, health.message
                    ),
                };
            }
        }
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = worst.clone();
        worst
    }
}

/// One consistent view of everything the gateway serves.
pub struct Routing {
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// `[auth]` of the config these namespaces come from (None: open to every caller).
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// `[[quotas]]` of that config.
    pub quotas: Option<Arc<crate::quota::Quotas>>,
}

pub struct Gateway {
    routing: ArcSwap<Routing>,
    pub settings: ServerConfig,
}

/// Why an instance could not be created at start.
#[derive(Debug)]
pub struct StartError {
    pub key: String,
    pub plugin: String,
    pub error: PluginError,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: plugin '{}' could not start: {}", self.key, self.plugin, self.error)
    }
}

impl Gateway {
    /// Creates one instance per bound slot. On failure, instances already created are shut down.
    pub async fn start(resolved: Resolved) -> Result<Gateway, StartError> {
        let mut namespaces: BTreeMap<String, Arc<Namespace>> = BTreeMap::new();
        for namespace in resolved.namespaces {
            match Namespace::create(namespace).await {
                Ok(namespace) => {
                    namespaces.insert(namespace.name.clone(), Arc::new(namespace));
                }
                Err(error) => {
                    for namespace in namespaces.values() {
                        namespace.shutdown().await;
                    }
                    return Err(error);
                }
            }
        }
        if let Some(auth) = &resolved.config.auth {
            auth.start();
        }
        Ok(Gateway {
            routing: ArcSwap::from_pointee(Routing {
                namespaces,
                plugins: resolved.plugins,
                auth: resolved.config.auth.clone(),
                quotas: resolved.config.quotas.clone(),
            }),
            settings: resolved.config.contents.server.clone(),
        })
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The routing snapshot for a moment's look, without taking a reference count (what
    /// every call does, so it stays off the shared counter).
    pub fn current(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// Replaces the routing snapshot; returns the one it replaced.
    pub fn swap(&self, routing: Routing) -> Arc<Routing> {
        self.routing.swap(Arc::new(routing))
    }

    /// The namespace a request names (empty = default), which must use `pattern`.
    pub async fn namespace(&self, name: &str, pattern: &str) -> Result<NamespaceRef, Status> {
        let name = if name.is_empty() { DEFAULT_NAMESPACE } else { name };
        if !crate::shared::valid_name(name) {
            return Err(Status::invalid_argument(format!(
                "namespace {} ({} bytes) is not a valid name: names are 1-64 bytes of letters, digits, '-', '_' and '.'",
                shown(name),
                name.len()
            )));
        }
        // Before the lookup, so a caller refused learns nothing about which names exist.
        let routing = self.routing.load();
        crate::auth::authorize(routing.auth.as_deref(), name)?;
        let quotas = routing.quotas.clone();
        drop(routing);
        let mut admission = None;
        loop {
            let namespace = self.lookup(name, pattern)?;
            // After the lookup, so only configured namespaces ever get a budget.
            if let (None, Some(quotas)) = (&admission, &quotas) {
                admission = Some(crate::auth::with_principal(|principal| quotas.admit(principal, name))?);
            }
            let pass = namespace.gate.clone().read_owned().await;
            // Replaced while this call waited at the gate: use its successor.
            if !namespace.is_retired() {
                namespace.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::observe::call::note_namespace(&namespace);
                return Ok(NamespaceRef { namespace, _pass: pass, _admission: admission.take() });
            }
        }
    }

    fn lookup(&self, name: &str, pattern: &str) -> Result<Arc<Namespace>, Status> {
        let routing = self.routing.load();
        let Some(namespace) = routing.namespaces.get(name) else {
            if routing.auth.is_some() {
                return Err(Status::not_found(format!("namespace '{name}' is not configured")));
            }
            let known: Vec<&str> = routing.namespaces.keys().map(String::as_str).collect();
            return Err(Status::not_found(format!(
                "namespace '{name}' is not configured (configured: {})",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )));
        };
        if namespace.pattern.name != pattern {
            return Err(Status::failed_precondition(format!(
                "namespace '{name}' uses pattern '{}', not '{pattern}'; call the {} service for it",
                namespace.pattern.name, namespace.pattern.name
            )));
        }
        Ok(namespace.clone())
    }

    /// Lets every instance release its backend; call after the server stopped.
    pub async fn shutdown(&self) {
        let routing = self.routing.load_full();
        for namespace in routing.namespaces.values() {
            namespace.shutdown().await;
        }
    }
}
