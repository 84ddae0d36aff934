//! Who has an open Subscribe, on this gateway and on the others. Each gateway counts its
//! own subscribers in memory; when the registry slot's plugin has `keyvalue_ttl` (so an
//! entry outlives no dead gateway by more than `SHARED_TTL`), each subscription is also
//! announced in the registry as `mcp/{identity}/{gateway}-{n}`, refreshed while it lasts
//! and deleted when it ends, so a Multicast on any gateway sharing the registry and the
//! messaging backend publishes to an identity subscribed on another. A gateway killed or
//! stopped with subscriptions open may not delete theirs: others take those identities
//! for present until the TTL runs out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_abi::host::Instance;

/// Where subscriptions are announced in the registry (registrations are `mcr/`).
pub const SHARED_PREFIX: &str = "mcp/";
/// How long an announcement lives unless refreshed: the longest a gateway that died
/// with open subscriptions is still taken for present.
pub const SHARED_TTL: Duration = Duration::from_secs(15);
/// How often a live subscription refreshes its announcement.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Identities with an open Subscribe on this gateway, per namespace.
#[derive(Default)]
pub struct Presence {
    subscribed: Mutex<HashMap<(String, String), usize>>,
}

impl Presence {
    pub fn is_subscribed(&self, namespace: &str, identity: &str) -> bool {
        let subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        subscribed.get(&(namespace.to_owned(), identity.to_owned())).is_some_and(|n| *n > 0)
    }

    pub fn enter(self: &Arc<Self>, namespace: &str, identity: &str) -> PresenceGuard {
        let key = (namespace.to_owned(), identity.to_owned());
        *self.subscribed.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_insert(0) += 1;
        PresenceGuard { presence: self.clone(), key }
    }
}

pub struct PresenceGuard {
    presence: Arc<Presence>,
    key: (String, String),
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let mut subscribed = self.presence.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = subscribed.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                subscribed.remove(&self.key);
            }
        }
    }
}

/// One subscription's announcement in the registry, refreshed by a task of its own (so a
/// client that reads slowly cannot hold the refresh back past the TTL); dropping it
/// stops the refresh and deletes the entry.
pub struct Announcement {
    registry: Arc<Instance>,
    key: String,
    refresher: tokio::task::AbortHandle,
}

impl Announcement {
    /// Announces `identity` on this gateway, when the registry can expire entries.
    pub async fn start(registry: &Arc<Instance>, identity: &str, subscription: &str) -> Option<Announcement> {
        registry.keyvalue_ttl()?;
        let key = format!("{SHARED_PREFIX}{identity}/{subscription}");
        write(registry, &key).await;
        let (task_registry, task_key) = (registry.clone(), key.clone());
        let refresher = tokio::spawn(async move {
            let mut every = tokio::time::interval(REFRESH);
            every.tick().await; // the first tick is now: just written
            loop {
                every.tick().await;
                write(&task_registry, &task_key).await;
            }
        })
        .abort_handle();
        Some(Announcement { registry: registry.clone(), key, refresher })
    }
}

/// Writes an announcement with a fresh TTL. A failure is logged: the subscription still
/// works on this gateway, others may queue for it meanwhile.
async fn write(registry: &Instance, key: &str) {
    let Some(ttl) = registry.keyvalue_ttl() else { return };
    if let Err(error) = ttl.set_with_ttl(key, Vec::new(), SHARED_TTL).await {
        tracing::warn!(key, %error, "cannot announce a multicast subscription in the registry");
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        self.refresher.abort();
        let (registry, key) = (self.registry.clone(), std::mem::take(&mut self.key));
        tokio::spawn(async move {
            if let Some(basic) = registry.keyvalue_basic() {
                let _ = basic.delete(&key).await;
            }
        });
    }
}

/// The identities announced by any gateway's subscriptions in `registry`.
pub async fn announced(registry: &Instance) -> Result<HashSet<String>, plugin_abi::PluginError> {
    let mut identities = HashSet::new();
    let (Some(scan), Some(_)) = (registry.keyvalue_scan(), registry.keyvalue_ttl()) else {
        return Ok(identities);
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = scan.scan(SHARED_PREFIX, cursor.as_deref(), 1000).await?;
        for (key, _) in &page.entries {
            if let Some((identity, _)) = key[SHARED_PREFIX.len()..].split_once('/') {
                identities.insert(identity.to_owned());
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(identities),
        }
    }
}
