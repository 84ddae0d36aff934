//! The claim-check sweeper: deletes the objects of a namespace's claim check that nothing
//! refers to any more — values that expired or were overwritten by a write that does
//! not claim, payloads of messages consumed long ago — which the gateway could not
//! delete when it happened.
//!
//! Key-value namespaces are swept by mark and sweep: list the namespace's objects older
//! than the grace period, scan every stored value for references, delete the objects no
//! reference names. It is safe against writes in flight because a reference is only
//! ever written right after its object is uploaded, within one request: an object older
//! than the grace period (at least `server.request_timeout_ms`) whose reference is not
//! stored now never will be. The listing comes before the scans, so every reference
//! stored before them is seen, and the second scan re-checks what the first found
//! unreferenced (a store may date an object by when its upload began, so one that just
//! finished can look old while its reference is being written). A deletion finds out
//! whether the object was still there; only those count as reclaimed.
//!
//! Queue and pub/sub namespaces keep their references in the backend's messages, which
//! cannot be read without consuming them: their objects are deleted by age, once older
//! than `server.claim_check_message_retention_ms` (off unless the operator sets it).
//! Queues need it least: a claimed delivery's Ack deletes its object on any gateway.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use plugin_abi::host::{Instance, ObjectStoreBasicHandle};
use tonic::Status;

use super::claim_check::Reference;
use super::Stores;
use crate::gateway::Namespace;
use crate::patterns::{CLAIM_CHECK, KEYVALUE};
use crate::shared::plugin_status;

/// Objects listed per call to the object store.
const LIST_PAGE: u32 = 1000;
/// Entries read per scan call of a key-value namespace.
const SCAN_PAGE: u32 = 500;
/// Old objects one sweep of one namespace considers; the rest wait for the next sweep,
/// so a sweep's memory stays bounded (about 100 bytes an object).
pub const MAX_CANDIDATES: usize = 200_000;
/// Deletions in flight at once.
const DELETE_CONCURRENCY: usize = 8;

/// What one sweep of one namespace found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSweep {
    pub namespace: String,
    /// How its objects were judged: `references`, `age`, or `none`.
    pub method: &'static str,
    /// Objects listed under the namespace.
    pub listed: u64,
    /// Objects no reference names, older than the grace period (or the retention).
    pub unreferenced: u64,
    pub unreferenced_bytes: u64,
    /// Of those, deleted by this sweep (none in a dry run).
    pub reclaimed: u64,
    pub reclaimed_bytes: u64,
    /// False when more old objects were listed than one sweep considers.
    pub complete: bool,
    /// Why the namespace is not swept by design (a message namespace without a
    /// retention): not a failure.
    pub skipped: Option<String>,
    /// What kept the namespace from being swept, or failed part-way.
    pub error: Option<String>,
}

/// The settings a sweep runs with.
#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    pub grace: Duration,
    /// Age past which a message namespace's objects go; `None`: they are not swept.
    pub message_retention: Option<Duration>,
    /// Delete what is found (`false`: a dry run, which only reports).
    pub apply: bool,
}

impl Stores {
    /// Sweeps the claim checks of `only` (every namespace with one when `None`).
    pub async fn sweep_claim_checks(
        &self,
        only: Option<&str>,
        apply: bool,
    ) -> Result<Vec<NamespaceSweep>, Status> {
        let settings = SweepSettings {
            grace: Duration::from_millis(self.gateway.settings.claim_check_grace_ms),
            message_retention: match self.gateway.settings.claim_check_message_retention_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            apply,
        };
        let routing = self.gateway.routing();
        if let Some(name) = only {
            let namespace = routing
                .namespaces
                .get(name)
                .ok_or_else(|| Status::not_found(format!("namespace '{name}' is not configured")))?;
            if namespace.slot(CLAIM_CHECK).is_none() {
                return Err(Status::failed_precondition(format!(
                    "namespace '{name}' binds no claim_check slot: it has no objects to sweep"
                )));
            }
        }
        let mut report = Vec::new();
        for namespace in routing.namespaces.values() {
            if only.is_some_and(|name| name != namespace.name) || namespace.slot(CLAIM_CHECK).is_none() {
                continue;
            }
            let swept = sweep_namespace(namespace, settings).await;
            crate::observe::claim_check_reclaimed(&namespace.name, swept.reclaimed, swept.reclaimed_bytes);
            report.push(swept);
        }
        Ok(report)
    }
}

/// One namespace's sweep; what fails is reported in it, not raised.
async fn sweep_namespace(namespace: &Namespace, settings: SweepSettings) -> NamespaceSweep {
    let mut sweep =
        NamespaceSweep { namespace: namespace.name.clone(), complete: true, ..Default::default() };
    let bound = namespace.slot(CLAIM_CHECK).expect("only namespaces with a claim check are swept");
    let objects =
        bound.instance.object_store_basic().expect("the claim_check slot requires object_store_basic");
    let name = namespace.pattern.name;
    // The patterns with a claim_check slot: key-value, and the message patterns.
    let outcome = match (name == KEYVALUE, settings.message_retention) {
        (true, _) => {
            sweep.method = "references";
            let store =
                &namespace.slot(super::keyvalue::STORE).expect("key-value namespaces bind 'store'").instance;
            sweep_by_references(&mut sweep, &objects, store, settings).await
        }
        (false, Some(retention)) => {
            sweep.method = "age";
            sweep_by_age(&mut sweep, &objects, retention, settings.apply).await
        }
        (false, None) => {
            sweep.method = "none";
            sweep.skipped = Some(format!(
                "{name} payloads are referenced from messages the gateway cannot read without consuming them; \
                 set server.claim_check_message_retention_ms to delete them by age"
            ));
            Ok(())
        }
    };
    if let Err(error) = outcome {
        sweep.error = Some(error);
    }
    sweep
}

/// Objects of `namespace` older than `age`, by id (their name past `namespace/`), with
/// their sizes; at most [`MAX_CANDIDATES`].
async fn old_objects(
    sweep: &mut NamespaceSweep,
    objects: &ObjectStoreBasicHandle<'_>,
    age: Duration,
) -> Result<HashMap<String, u64>, String> {
    let prefix = format!("{}/", sweep.namespace);
    let cutoff = plugin_abi::unix_millis().saturating_sub(age.as_millis() as i64);
    let mut old = HashMap::new();
    let mut after = String::new();
    loop {
        let page = objects.list(&prefix, &after, LIST_PAGE).await.map_err(|error| {
            format!("cannot list the claim-check store: {}", plugin_status(error).message())
        })?;
        let Some(last) = page.last() else { return Ok(old) };
        after = last.key.clone();
        sweep.listed += page.len() as u64;
        // A store that does not say when an object was written gives 0: never old enough.
        for entry in
            page.into_iter().filter(|e| e.info.modified_unix_ms > 0 && e.info.modified_unix_ms < cutoff)
        {
            if old.len() == MAX_CANDIDATES {
                sweep.complete = false;
                return Ok(old);
            }
            old.insert(entry.key[prefix.len()..].to_owned(), entry.info.size);
        }
    }
}

/// Key-value namespaces: old objects that no stored value names.
async fn sweep_by_references(
    sweep: &mut NamespaceSweep,
    objects: &ObjectStoreBasicHandle<'_>,
    store: &Instance,
    settings: SweepSettings,
) -> Result<(), String> {
    let Some(scan) = store.keyvalue_scan() else {
        return Err("its store slot's plugin lacks keyvalue_scan, so its references cannot be read".into());
    };
    // Listed first: an object uploaded after this is younger than the grace period anyway.
    let mut unreferenced = old_objects(sweep, objects, settings.grace).await?;
    // Twice: a write that finished uploading just before the listing may store its
    // reference behind the first scan's cursor, never behind the second's.
    for _ in 0..2 {
        forget_referenced(&scan, &sweep.namespace, &mut unreferenced).await?;
    }
    delete_all(sweep, objects, unreferenced, settings.apply).await;
    Ok(())
}

/// Removes from `objects` every one that a value of the namespace refers to.
async fn forget_referenced(
    scan: &plugin_abi::host::KeyValueScanHandle<'_>,
    namespace: &str,
    objects: &mut HashMap<String, u64>,
) -> Result<(), String> {
    let owned = format!("{namespace}/");
    let mut cursor: Option<String> = None;
    loop {
        let page = scan.scan("", cursor.as_deref(), SCAN_PAGE).await.map_err(|error| {
            format!("cannot scan the namespace's keys: {}", plugin_status(error).message())
        })?;
        for (_, value) in &page.entries {
            if let Some(Ok(reference)) = Reference::decode(value) {
                if let Some(id) = reference.object.strip_prefix(&owned) {
                    objects.remove(id);
                }
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(());
        }
    }
}

/// Queue and pub/sub namespaces: objects older than the stated retention.
async fn sweep_by_age(
    sweep: &mut NamespaceSweep,
    objects: &ObjectStoreBasicHandle<'_>,
    retention: Duration,
    apply: bool,
) -> Result<(), String> {
    let old = old_objects(sweep, objects, retention).await?;
    delete_all(sweep, objects, old, apply).await;
    Ok(())
}

/// Counts `unreferenced` and, when `apply`, deletes each that is still there.
async fn delete_all(
    sweep: &mut NamespaceSweep,
    objects: &ObjectStoreBasicHandle<'_>,
    unreferenced: HashMap<String, u64>,
    apply: bool,
) {
    sweep.unreferenced = unreferenced.len() as u64;
    sweep.unreferenced_bytes = unreferenced.values().sum();
    if !apply {
        return;
    }
    let namespace = sweep.namespace.clone();
    let deletions = futures_util::stream::iter(unreferenced).map(|(id, size)| {
        let object = format!("{namespace}/{id}");
        async move {
            match objects.delete(&object).await {
                Ok(deleted) => Ok(deleted.then_some(size)),
                Err(error) => Err(format!("cannot delete {object}: {}", plugin_status(error).message())),
            }
        }
    });
    let mut deletions = deletions.buffer_unordered(DELETE_CONCURRENCY);
    while let Some(outcome) = deletions.next().await {
        match outcome {
            Ok(Some(size)) => {
                sweep.reclaimed += 1;
                sweep.reclaimed_bytes += size;
            }
            // Deleted meanwhile (an Ack, an overwrite releasing it): nothing reclaimed here.
            Ok(None) => {}
            Err(error) => {
                sweep.error.get_or_insert(error);
            }
        }
    }
}

/// Sweeps every claim check every `every`, for as long as the gateway serves; the first
/// sweep waits one interval, so a restart loop does not sweep on every start.
pub async fn sweep_on_schedule(stores: std::sync::Arc<Stores>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Ok(report) = stores.sweep_claim_checks(None, true).await else { continue };
        for swept in report {
            log(&swept);
        }
    }
}

/// One log line per namespace swept: info when it reclaimed something, a warning when
/// it could not sweep, nothing when there was nothing to do.
pub fn log(swept: &NamespaceSweep) {
    let NamespaceSweep { namespace, method, listed, reclaimed, reclaimed_bytes, .. } = swept;
    if let Some(error) = &swept.error {
        tracing::warn!(
            namespace,
            method,
            listed,
            reclaimed,
            reclaimed_bytes,
            error,
            "claim-check sweep incomplete"
        );
    } else if *reclaimed > 0 || !swept.complete {
        tracing::info!(
            namespace,
            method,
            listed,
            reclaimed,
            reclaimed_bytes,
            complete = swept.complete,
            "claim-check sweep reclaimed unreferenced objects"
        );
    }
}
