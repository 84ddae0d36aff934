//! The running gateway: namespaces bound to plugin instances, behind one atomically
//! swappable routing snapshot, so a request resolves its namespace without a lock.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use plugin_abi::host::Instance;
use plugin_abi::{Health, HealthStatus, PluginError};
use tonic::Status;

use crate::config::ServerConfig;
use crate::patterns::{Pattern, Slot};
use crate::resolve::{LoadedPlugin, Resolved};

/// The namespace a request without one goes to.
pub const DEFAULT_NAMESPACE: &str = "default";

pub struct BoundSlot {
    pub slot: &'static Slot,
    pub plugin: Arc<LoadedPlugin>,
    pub instance: Arc<Instance>,
}

pub struct Namespace {
    pub name: String,
    pub pattern: &'static Pattern,
    pub slots: Vec<BoundSlot>,
    health: RwLock<Health>,
}

impl Namespace {
    pub fn slot(&self, name: &str) -> Option<&BoundSlot> {
        self.slots.iter().find(|bound| bound.slot.name == name)
    }

    pub fn health(&self) -> Health {
        self.health.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls every instance and keeps the worst status.
    pub async fn refresh_health(&self) -> Health {
        let mut worst = Health::serving();
        for bound in &self.slots {
            let health = bound.instance.health().await;
            let rank = |h: &Health| match h.status {
                HealthStatus::Serving => 0,
                HealthStatus::Degraded => 1,
                HealthStatus::Unhealthy => 2,
            };
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
        let mut namespaces = BTreeMap::new();
        let mut created: Vec<Arc<Instance>> = Vec::new();
        for namespace in resolved.namespaces {
            let mut slots = Vec::new();
            for slot in namespace.slots {
                match slot.plugin.plugin.create(&slot.config_toml).await {
                    Ok(instance) => {
                        let instance = Arc::new(instance);
                        created.push(instance.clone());
                        slots.push(BoundSlot { slot: slot.slot, plugin: slot.plugin, instance });
                    }
                    Err(error) => {
                        for instance in created {
                            instance.shutdown().await;
                        }
                        return Err(StartError { key: slot.key, plugin: slot.plugin.name.clone(), error });
                    }
                }
            }
            let bound = Namespace {
                name: namespace.name.clone(),
                pattern: namespace.pattern,
                slots,
                health: RwLock::new(Health::serving()),
            };
            namespaces.insert(namespace.name, Arc::new(bound));
        }
        Ok(Gateway {
            routing: ArcSwap::from_pointee(Routing { namespaces, plugins: resolved.plugins }),
            settings: resolved.config.contents.server.clone(),
        })
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The namespace a request names (empty = default), which must use `pattern`.
    pub fn namespace(&self, name: &str, pattern: &str) -> Result<Arc<Namespace>, Status> {
        let name = if name.is_empty() { DEFAULT_NAMESPACE } else { name };
        let routing = self.routing.load();
        let Some(namespace) = routing.namespaces.get(name) else {
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
            for bound in &namespace.slots {
                bound.instance.shutdown().await;
            }
        }
    }
}
