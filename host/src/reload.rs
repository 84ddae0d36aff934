//! Live reload: re-read `plugins.toml`, load changed plugin libraries, build what changed,
//! and switch traffic in one routing swap — or change nothing and say why.
//!
//! A reload is all or nothing. Namespaces whose plugin and config are unchanged keep
//! their instances; the others get new instances that must be healthy before the swap.
//! Where the old and new instance both have `state_transfer`, the old namespace's gate
//! is closed (waiting for its calls in flight), its state exported into the new instance,
//! and only then is traffic switched, so no write is lost. Replaced namespaces are
//! retired: their open streams end with UNAVAILABLE, and their instances are shut down
//! once nothing uses them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_abi::host::Instance;
use plugin_abi::{HealthStatus, Interface};

use crate::config::Config;
use crate::gateway::{Gateway, Namespace, Routing};
use crate::loader::LoadedPlugin;
use crate::loader::Loader;
use crate::resolve::{self, ResolvedNamespace, ResolvedSlot};

/// The result of one reload attempt, or of the last one for a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub at_unix_ms: i64,
    pub ok: bool,
    pub message: String,
}

impl Outcome {
    fn now(ok: bool, message: impl Into<String>) -> Outcome {
        let at_unix_ms = plugin_abi::unix_millis();
        Outcome { at_unix_ms, ok, message: message.into() }
    }
}

/// What the admin API and `prism status` report.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// The last reload of the config as a whole.
    pub config: Option<Outcome>,
    /// Per configured plugin: the last time its library was (or failed to be) loaded.
    pub plugins: BTreeMap<String, Outcome>,
    pub reloads: u64,
    /// The latest reload attempts, newest last, at most [`HISTORY`].
    pub history: std::collections::VecDeque<Attempt>,
}

/// One reload attempt, as the console's history shows it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What asked for it: the file watcher, `prism reload`, a signal.
    pub trigger: String,
    pub outcome: Outcome,
}

/// Reload attempts kept for the console.
pub const HISTORY: usize = 50;

pub struct Reloader {
    gateway: Arc<Gateway>,
    config_path: PathBuf,
    loader: Arc<Loader>,
    status: Mutex<ReloadStatus>,
    running: tokio::sync::Mutex<()>,
    watching: std::sync::atomic::AtomicBool,
    /// The sections only a restart applies, as the gateway started with them.
    started_with: StartOnly,
}

/// The config sections read once, when the gateway starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartOnly {
    pub admin: Option<crate::observe::config::AdminConfig>,
    pub tracing: Option<crate::observe::config::TracingConfig>,
}

/// Why a reload changed nothing.
struct Refused(String);

impl Reloader {
    pub fn new(gateway: Arc<Gateway>, config_path: PathBuf, loader: Arc<Loader>) -> Reloader {
        let mut status = ReloadStatus::default();
        for plugin in gateway.routing().plugins.values() {
            status.plugins.insert(plugin.name.clone(), Outcome::now(true, loaded_message(plugin)));
        }
        Reloader {
            gateway,
            config_path,
            loader,
            status: Mutex::new(status),
            running: Default::default(),
            watching: Default::default(),
            started_with: StartOnly::default(),
        }
    }

    /// Records the `[admin]` and `[tracing]` the gateway started with, so a reload that
    /// changes them can say they wait for a restart.
    pub fn started_with(mut self, sections: StartOnly) -> Reloader {
        self.started_with = sections;
        self
    }

    pub fn set_watching(&self, watching: bool) {
        self.watching.store(watching, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn watching(&self) -> bool {
        self.watching.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Distinct plugin libraries this process has opened, and their size in bytes.
    pub fn libraries_loaded(&self) -> (usize, u64) {
        self.loader.loaded()
    }

    /// The plugin files and the config, as they are configured now.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config_path.clone()];
        files.extend(self.gateway.routing().plugins.values().map(|plugin| plugin.source.clone()));
        files
    }

    /// Re-reads the config and applies what changed. Reloads run one at a time.
    pub async fn reload(&self, trigger: &str) -> Outcome {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let outcome = match self.try_reload().await {
            Ok(summary) => Outcome::now(true, summary),
            Err(Refused(why)) => Outcome::now(false, why),
        };
        if outcome.ok {
            tracing::info!(%trigger, took_ms = started.elapsed().as_millis() as u64, "reload: {}", outcome.message);
        } else {
            tracing::error!(%trigger, "reload refused, the running config keeps serving: {}", outcome.message);
        }
        crate::observe::count_reload(outcome.ok);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.reloads += 1;
        status.config = Some(outcome.clone());
        if status.history.len() == HISTORY {
            status.history.pop_front();
        }
        status.history.push_back(Attempt { trigger: trigger.to_owned(), outcome: outcome.clone() });
        outcome
    }

    /// Replaces one namespace's instances with fresh ones of the same plugin and config
    /// (handing state over where it can): how an unhealthy instance is recovered.
    pub async fn recreate(&self, namespace: &str) -> Result<(), String> {
        let _one_at_a_time = self.running.lock().await;
        let routing = self.gateway.routing();
        if !routing.namespaces.contains_key(namespace) {
            return Err(format!("namespace '{namespace}' is no longer configured"));
        }
        let wanted: Vec<ResolvedNamespace> = routing.namespaces.values().map(|ns| as_resolved(ns)).collect();
        let plugins = routing.plugins.clone();
        let policy = (routing.auth.clone(), routing.quotas.clone());
        drop(routing);
        self.apply(plugins, wanted, policy, Some(namespace)).await.map(|_| ()).map_err(|Refused(why)| why)
    }

    async fn try_reload(&self) -> Result<String, Refused> {
        let config = Config::load(&self.config_path)
            .map_err(|errors| Refused(errors.to_string().trim().to_owned()))?;
        refuse_removing_everything(&config, &self.gateway.routing())?;
        let restart_note = self.restart_note(&config);
        let current = self.gateway.routing().plugins.clone();
        let loader = self.loader.clone();
        let resolved =
            tokio::task::spawn_blocking(move || resolve::resolve_reusing(config, &loader, &current))
                .await
                .map_err(|e| Refused(format!("the reload task failed: {e}")))?;
        let mut resolved = resolved.map_err(|errors| self.refused_by_plugins(&errors))?;
        if let Some(auth) = &resolved.config.auth {
            auth.start();
        }
        let running_quotas = self.gateway.routing().quotas.clone();
        if let (Some(new), Some(running)) = (resolved.config.quotas.as_mut(), running_quotas) {
            if let Some(new) = Arc::get_mut(new) {
                new.keep_budgets_of(&running);
            }
        }
        let policy = (resolved.config.auth.clone(), resolved.config.quotas.clone());
        let summary = self.apply(resolved.plugins, resolved.namespaces, policy, None).await?;
        Ok(format!("{summary}{restart_note}"))
    }

    /// What the reload cannot change: the sections only a restart applies, if they changed.
    fn restart_note(&self, config: &Config) -> String {
        let running = &self.gateway.settings;
        let mut incoming = config.contents.server.clone();
        incoming.listen = running.listen;
        let mut waiting: Vec<&str> = Vec::new();
        if incoming != *running {
            waiting.push("[server]");
        }
        if config.contents.admin != self.started_with.admin {
            waiting.push("[admin]");
        }
        if config.contents.tracing != self.started_with.tracing {
            waiting.push("[tracing]");
        }
        if waiting.is_empty() {
            String::new()
        } else {
            format!("; {} settings changed and take effect after a restart", waiting.join(", "))
        }
    }

    /// Records each plugin the resolver refused in the reload status, and says why.
    fn refused_by_plugins(&self, errors: &crate::shared::ConfigErrors) -> Refused {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        for error in &errors.errors {
            if let Some(plugin) = error.key.strip_prefix("plugins.").and_then(|k| k.split('.').next()) {
                let message = format!("{}: {} (fix: {})", error.key, error.message, error.fix);
                status.plugins.insert(plugin.to_owned(), Outcome::now(false, message));
            }
        }
        Refused(errors.to_string().trim().to_owned())
    }

    /// Builds the namespaces that differ from the running ones (and `force`), hands state
    /// over, swaps, and retires what was replaced: plan, stage, commit.
    async fn apply(
        &self,
        plugins: BTreeMap<String, Arc<LoadedPlugin>>,
        wanted: Vec<ResolvedNamespace>,
        (auth, quotas): (Option<Arc<crate::auth::Auth>>, Option<Arc<crate::quota::Quotas>>),
        force: Option<&str>,
    ) -> Result<String, Refused> {
        let before = self.gateway.routing();
        let plan = Plan::new(&before, wanted, force);
        let mut staged = Staged::new(plan.kept);
        let drain = Duration::from_millis(self.gateway.settings.reload_drain_ms);
        if let Err(Refused(why)) = self.stage(&mut staged, plan.changed, plan.exclusive, drain).await {
            // Undone: what was built stops first (it may hold files the previous versions
            // need), the previous versions of exclusive namespaces already stopped start
            // again, and dropping `staged` opens the gates.
            staged.shut_down_built().await;
            let stopped = std::mem::take(&mut staged.stopped);
            return Err(Refused(match self.restart_previous(&before, stopped).await {
                Some(outcome) => format!("{why}; {outcome}"),
                None => why,
            }));
        }
        let new_routing =
            Routing { namespaces: std::mem::take(&mut staged.namespaces), plugins, auth, quotas };
        Ok(self.commit(staged, &before, new_routing))
    }

    /// Builds the changed namespaces, then moves state: into those built beside their
    /// predecessors, then through each exclusive handover.
    async fn stage(
        &self,
        staged: &mut Staged,
        changed: Vec<(ResolvedNamespace, Option<Arc<Namespace>>)>,
        exclusive: Vec<(ResolvedNamespace, Arc<Namespace>)>,
        drain: Duration,
    ) -> Result<(), Refused> {
        staged.build(changed).await?;
        staged.hand_over_states(drain).await?;
        for (resolved, old) in exclusive {
            self.hand_over_exclusively(staged, resolved, old, drain).await?;
        }
        Ok(())
    }

    /// The exclusive handover of one namespace: its old instances stop (state exported,
    /// gate closed) before the new ones start, so the two never run side by side. The
    /// stopped namespace and its state are kept in `staged`, to start it again if the
    /// reload is refused.
    async fn hand_over_exclusively(
        &self,
        staged: &mut Staged,
        resolved: ResolvedNamespace,
        old: Arc<Namespace>,
        drain: Duration,
    ) -> Result<(), Refused> {
        let gate = close_gate(&old, drain).await?;
        let states =
            export_states(&old).await.map_err(|why| Refused(format!("{why}; nothing was changed")))?;
        // Down before its successor starts: that is what exclusive means.
        old.shutdown().await;
        staged.shut_already.extend(old.slots.iter().map(|bound| bound.instance.clone()));
        staged.gates.push(gate);
        let name = old.name.clone();
        staged.stopped.push((old.clone(), states));
        let (_, states) = staged.stopped.last().expect("just pushed");
        let new = start_with_states(resolved, states, &name).await.map_err(Refused)?;
        staged.namespaces.insert(name, new.clone());
        staged.built.push((new, Some(old)));
        Ok(())
    }

    /// Starts the previous versions of `stopped` (exclusive namespaces a refused reload
    /// had shut down) again, with their exported state, and routes to them. What
    /// happened, when there was anything to restart.
    async fn restart_previous(
        &self,
        before: &Routing,
        stopped: Vec<(Arc<Namespace>, SlotStates)>,
    ) -> Option<String> {
        if stopped.is_empty() {
            return None;
        }
        let mut routing = Routing {
            namespaces: before.namespaces.clone(),
            plugins: before.plugins.clone(),
            auth: before.auth.clone(),
            quotas: before.quotas.clone(),
        };
        let mut failed = Vec::new();
        for (old, states) in &stopped {
            match start_with_states(as_resolved(old), states, &old.name).await {
                Ok(restored) => {
                    routing.namespaces.insert(old.name.clone(), restored);
                }
                Err(again) => {
                    tracing::error!(namespace = %old.name, "restarting the previous version failed too: {again}");
                    failed.push(format!("'{}'", old.name));
                }
            }
        }
        self.gateway.swap(routing);
        for (old, _) in &stopped {
            old.retire();
        }
        Some(match failed.is_empty() {
            true => "the previous version was started again in its place, with its state".to_owned(),
            false => format!(
                "restarting the previous version of {} failed too; the health checks will retry",
                failed.join(", ")
            ),
        })
    }

    /// Routes to the staged namespaces, retires the replaced ones (shut down once
    /// unused), records the plugins loaded, and says what changed.
    fn commit(&self, mut staged: Staged, before: &Routing, new_routing: Routing) -> String {
        let built = std::mem::take(&mut staged.built);
        let changed_plugins: Vec<String> = new_routing
            .plugins
            .iter()
            .filter(|(name, plugin)| before.plugins.get(*name).is_none_or(|old| !Arc::ptr_eq(old, plugin)))
            .map(|(name, _)| name.clone())
            .collect();
        let removed: Vec<Arc<Namespace>> = before
            .namespaces
            .iter()
            .filter(|(name, old)| new_routing.namespaces.get(*name).is_none_or(|new| !Arc::ptr_eq(new, old)))
            .map(|(_, old)| old.clone())
            .collect();
        // Instances to leave running (still routed) or that are down already.
        let still_used: Vec<Arc<Instance>> = new_routing
            .namespaces
            .values()
            .flat_map(|ns| ns.slots.iter().map(|bound| bound.instance.clone()))
            .chain(std::mem::take(&mut staged.shut_already))
            .collect();
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            for name in &changed_plugins {
                let plugin = &new_routing.plugins[name];
                status.plugins.insert(name.clone(), Outcome::now(true, loaded_message(plugin)));
            }
        }
        self.gateway.swap(new_routing);
        for old in &removed {
            old.retire();
        }
        // Opens the old gates: calls that waited now find the new routing.
        drop(staged);
        let rebuilt: Vec<String> = built.iter().map(|(ns, _)| ns.name.clone()).collect();
        let gone: Vec<String> =
            removed.iter().map(|ns| ns.name.clone()).filter(|n| !rebuilt.contains(n)).collect();
        warn_of_dropped_state(removed.iter().filter(|ns| gone.contains(&ns.name)));
        tokio::spawn(shut_down_when_unused(removed, still_used));
        let list = |names: &[String]| if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        format!(
            "plugins reloaded: {}; namespaces rebuilt: {}; removed: {}",
            list(&changed_plugins),
            list(&rebuilt),
            list(&gone)
        )
    }
}

/// What a reload will do, decided before anything starts: namespaces kept as they run,
/// built anew (beside the old one, if any), or handed over exclusively.
struct Plan {
    kept: BTreeMap<String, Arc<Namespace>>,
    changed: Vec<(ResolvedNamespace, Option<Arc<Namespace>>)>,
    exclusive: Vec<(ResolvedNamespace, Arc<Namespace>)>,
}

impl Plan {
    fn new(before: &Routing, wanted: Vec<ResolvedNamespace>, force: Option<&str>) -> Plan {
        let mut plan = Plan { kept: BTreeMap::new(), changed: Vec::new(), exclusive: Vec::new() };
        for resolved in wanted {
            let old = before.namespaces.get(&resolved.name).cloned();
            match old {
                Some(old) if force != Some(resolved.name.as_str()) && same_bindings(&old, &resolved) => {
                    plan.kept.insert(resolved.name.clone(), old);
                }
                // Replaced last, old instance down first: see `export_states`.
                Some(old) if is_exclusive(&old, &resolved) => plan.exclusive.push((resolved, old)),
                old => plan.changed.push((resolved, old)),
            }
        }
        plan
    }
}

/// A reload in progress: the namespaces of the new routing (kept and built), the old
/// namespaces' gates it holds closed, and the instances it already shut down. Dropped
/// before it is committed, it opens the gates and shuts what it built down in the
/// background, so an abandoned reload leaves nothing running; a refused one shuts down
/// and waits ([`Staged::shut_down_built`]), then restarts what it had stopped.
struct Staged {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    /// Each built namespace with the one it replaces.
    built: Vec<(Arc<Namespace>, Option<Arc<Namespace>>)>,
    gates: Vec<tokio::sync::OwnedRwLockWriteGuard<()>>,
    shut_already: Vec<Arc<Instance>>,
    /// Exclusive namespaces whose old instances it shut down, with their state.
    stopped: Vec<(Arc<Namespace>, SlotStates)>,
}

impl Staged {
    fn new(kept: BTreeMap<String, Arc<Namespace>>) -> Staged {
        Staged {
            namespaces: kept,
            built: Vec::new(),
            gates: Vec::new(),
            shut_already: Vec::new(),
            stopped: Vec::new(),
        }
    }

    /// Creates the changed namespaces' instances, each checked healthy.
    async fn build(
        &mut self,
        changed: Vec<(ResolvedNamespace, Option<Arc<Namespace>>)>,
    ) -> Result<(), Refused> {
        for (resolved, old) in changed {
            let namespace = build(resolved).await.map_err(Refused)?;
            self.namespaces.insert(namespace.name.clone(), namespace.clone());
            self.built.push((namespace, old));
        }
        Ok(())
    }

    /// Moves state from each replaced namespace into its successor, with the old gate
    /// closed and kept closed until traffic has moved.
    async fn hand_over_states(&mut self, drain: Duration) -> Result<(), Refused> {
        for (new, old) in &self.built {
            let Some(old) = old else { continue };
            let pairs = handover_pairs(old, new);
            if pairs.is_empty() {
                continue;
            }
            self.gates.push(close_gate(old, drain).await?);
            for (slot, from, to) in pairs {
                let snapshot = from.state_transfer().expect("checked").export_state().await;
                let moved = match snapshot {
                    Ok(snapshot) => to.state_transfer().expect("checked").import_state(snapshot).await,
                    Err(error) => Err(error),
                };
                moved.map_err(|error| {
                    Refused(format!(
                        "namespace '{}' slot '{slot}': handing its state to the new instance failed: {error}",
                        old.name
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Shuts down what was built, and waits for that; the gates stay closed.
    async fn shut_down_built(&mut self) {
        for (namespace, _) in self.built.drain(..) {
            namespace.shutdown().await;
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let built = std::mem::take(&mut self.built);
        if !built.is_empty() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    for (namespace, _) in built {
                        namespace.shutdown().await;
                    }
                });
            }
        }
    }
}

/// Closes `old`'s gate, waiting up to `drain` for its calls in flight.
async fn close_gate(
    old: &Namespace,
    drain: Duration,
) -> Result<tokio::sync::OwnedRwLockWriteGuard<()>, Refused> {
    tokio::time::timeout(drain, old.close_gate()).await.map_err(|_| {
        Refused(format!(
            "namespace '{}' still had calls running after {} ms (server.reload_drain_ms); nothing was changed, try again",
            old.name,
            drain.as_millis()
        ))
    })
}

/// Warns, per slot, that a removed namespace's in-process state goes with it.
fn warn_of_dropped_state<'a>(removed: impl Iterator<Item = &'a Arc<Namespace>>) {
    for namespace in removed {
        for bound in namespace.slots.iter().filter(|bound| bound.instance.provides(Interface::StateTransfer))
        {
            tracing::warn!(
                namespace = %namespace.name,
                slot = bound.slot.name,
                plugin = %bound.plugin.name,
                "the reload removes this namespace; the state its instance holds in this process is dropped"
            );
        }
    }
}

/// A config with no namespaces is almost always an emptied or half-written file; taking
/// it would drop every namespace (and in-process state). Only a restart applies one.
fn refuse_removing_everything(config: &Config, running: &Routing) -> Result<(), Refused> {
    if !config.contents.namespaces.is_empty() || running.namespaces.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = running.namespaces.keys().map(String::as_str).collect();
    Err(Refused(format!(
        "{} declares no namespaces, so this reload would remove every running one ({}); the running config keeps serving. \
         If the file was emptied or is being rewritten, restore it; to really serve nothing, restart prism with it",
        config.file.display(),
        names.join(", ")
    )))
}

fn loaded_message(plugin: &LoadedPlugin) -> String {
    let metadata = plugin.plugin.metadata();
    format!("loaded {} {} (sha256 {})", metadata.name, metadata.version, plugin.sha256)
}

/// The running namespace as the resolver would produce it.
fn as_resolved(namespace: &Namespace) -> ResolvedNamespace {
    ResolvedNamespace {
        name: namespace.name.clone(),
        pattern: namespace.pattern,
        slots: namespace
            .slots
            .iter()
            .map(|bound| ResolvedSlot {
                slot: bound.slot,
                plugin: bound.plugin.clone(),
                config_toml: bound.config_toml.clone(),
                key: bound.key.clone(),
            })
            .collect(),
    }
}

fn same_bindings(old: &Namespace, new: &ResolvedNamespace) -> bool {
    old.pattern.name == new.pattern.name
        && old.slots.len() == new.slots.len()
        && new.slots.iter().all(|slot| {
            old.slot(slot.slot.name).is_some_and(|bound| {
                Arc::ptr_eq(&bound.plugin, &slot.plugin) && bound.config_toml == slot.config_toml
            })
        })
}

/// Slots whose old and new instance are the same configured plugin and both can hand state over.
fn handover_pairs(old: &Namespace, new: &Namespace) -> Vec<(&'static str, Arc<Instance>, Arc<Instance>)> {
    new.slots
        .iter()
        .filter_map(|bound| {
            let previous = old.slot(bound.slot.name)?;
            let both =
                previous.instance.state_transfer().is_some() && bound.instance.state_transfer().is_some();
            (both && previous.plugin.name == bound.plugin.name)
                .then(|| (bound.slot.name, previous.instance.clone(), bound.instance.clone()))
        })
        .collect()
}

/// Whether a namespace's old and new versions may not run side by side: a plugin of
/// either declares `exclusive` (it owns files or an embedded engine, or holds a lock).
fn is_exclusive(old: &Namespace, new: &ResolvedNamespace) -> bool {
    old.slots.iter().any(|bound| bound.plugin.plugin.metadata().exclusive)
        || new.slots.iter().any(|slot| slot.plugin.plugin.metadata().exclusive)
}

/// State exported from one slot of a namespace: slot, plugin, snapshot.
type SlotStates = Vec<(&'static str, String, Vec<u8>)>;

/// The first half of an exclusive handover, with `old`'s gate closed (calls arriving
/// meanwhile wait): each slot's state, exported before the old instances are shut down.
async fn export_states(old: &Namespace) -> Result<SlotStates, String> {
    let mut states = Vec::new();
    for bound in &old.slots {
        if let Some(transfer) = bound.instance.state_transfer() {
            let state = transfer.export_state().await.map_err(|error| {
                format!(
                    "namespace '{}' slot '{}': exporting its state failed: {error}",
                    old.name, bound.slot.name
                )
            })?;
            states.push((bound.slot.name, bound.plugin.name.clone(), state));
        }
    }
    Ok(states)
}

/// The second half: new instances, given the exported state. Also how the old version
/// is started again when the new one cannot start, from the same snapshot.
async fn start_with_states(
    resolved: ResolvedNamespace,
    states: &SlotStates,
    name: &str,
) -> Result<Arc<Namespace>, String> {
    let namespace = build(resolved).await?;
    for (slot, plugin, state) in states {
        let Some(bound) = namespace.slot(slot).filter(|bound| &bound.plugin.name == plugin) else { continue };
        let Some(transfer) = bound.instance.state_transfer() else { continue };
        if let Err(error) = transfer.import_state(state.clone()).await {
            namespace.shutdown().await;
            return Err(format!("namespace '{name}' slot '{slot}': handing its state over failed: {error}"));
        }
    }
    Ok(namespace)
}

/// How long a new instance's first health check may take before the instance is refused.
const START_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates a namespace's instances and checks they are healthy.
async fn build(resolved: ResolvedNamespace) -> Result<Arc<Namespace>, String> {
    let name = resolved.name.clone();
    let namespace = Namespace::create(resolved).await.map_err(|error| {
        format!(
            "namespace '{name}' ({}): plugin '{}' could not start: {}",
            error.key, error.plugin, error.error
        )
    })?;
    for bound in &namespace.slots {
        let health = match tokio::time::timeout(START_HEALTH_TIMEOUT, bound.instance.health()).await {
            Ok(health) => health,
            Err(_) => plugin_abi::Health {
                status: HealthStatus::Unhealthy,
                message: format!("its health check did not answer within {START_HEALTH_TIMEOUT:?}"),
            },
        };
        if health.status == HealthStatus::Unhealthy {
            namespace.shutdown().await;
            return Err(format!(
                "namespace '{name}' slot '{}': the new '{}' instance is unhealthy: {}",
                bound.slot.name, bound.plugin.name, health.message
            ));
        }
    }
    Ok(Arc::new(namespace))
}

/// How long a replaced instance may stay in use (calls finishing, streams closing)
/// before it is shut down anyway.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// Waits until nothing uses the replaced namespaces and their instances, then shuts the
/// instances down (except those the new routing still uses).
async fn shut_down_when_unused(retired: Vec<Arc<Namespace>>, still_used: Vec<Arc<Instance>>) {
    let deadline = Instant::now() + RETIRE_GRACE;
    let mut instances: Vec<Arc<Instance>> = Vec::new();
    for namespace in &retired {
        for bound in &namespace.slots {
            let reused = still_used.iter().any(|kept| Arc::ptr_eq(kept, &bound.instance));
            if !reused && !instances.iter().any(|known| Arc::ptr_eq(known, &bound.instance)) {
                instances.push(bound.instance.clone());
            }
        }
    }
    drop(still_used);
    while Instant::now() < deadline && retired.iter().any(|namespace| Arc::strong_count(namespace) > 1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(retired);
    while Instant::now() < deadline && instances.iter().any(|instance| Arc::strong_count(instance) > 1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for instance in instances {
        if Arc::strong_count(&instance) > 1 {
            tracing::warn!(plugin = %instance.metadata().name, "a replaced instance was still in use after 30 s; shutting it down anyway");
        }
        instance.shutdown().await;
    }
}
