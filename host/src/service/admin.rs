use std::sync::Arc;

use plugin_abi::HealthStatus;
use tonic::{Request, Response, Status};

use crate::api::admin_service_server::AdminService;
use crate::api::*;
use crate::gateway::Gateway;
use crate::patterns::PATTERNS;
use crate::reload::{Outcome, Reloader};
use crate::resolve::declared_interfaces;

pub struct AdminApi {
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    stores: Arc<crate::store::Stores>,
}

impl AdminApi {
    pub fn new(gateway: Arc<Gateway>, reloader: Arc<Reloader>, stores: Arc<crate::store::Stores>) -> Self {
        AdminApi { gateway, reloader, stores }
    }
}

fn sweep_message(swept: crate::store::sweeper::NamespaceSweep) -> ClaimCheckSweep {
    ClaimCheckSweep {
        namespace: swept.namespace,
        method: swept.method.into(),
        listed: swept.listed,
        unreferenced: swept.unreferenced,
        unreferenced_bytes: swept.unreferenced_bytes,
        reclaimed: swept.reclaimed,
        reclaimed_bytes: swept.reclaimed_bytes,
        complete: swept.complete,
        error: swept.error.map(|error| crate::secrets::redact(&error).into_owned()).unwrap_or_default(),
        skipped: swept.skipped.unwrap_or_default(),
    }
}

fn outcome(outcome: Outcome) -> ReloadOutcome {
    let message = crate::secrets::redact(&outcome.message).into_owned();
    ReloadOutcome { ok: outcome.ok, message, at_unix_ms: outcome.at_unix_ms }
}

pub fn health_name(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Serving => "SERVING",
        HealthStatus::Degraded => "DEGRADED",
        HealthStatus::Unhealthy => "UNHEALTHY",
    }
}

/// The supervised processes running instances of plugin `name`.
fn processes_of(routing: &crate::gateway::Routing, name: &str) -> Vec<crate::api::PluginProcess> {
    let mut found = Vec::new();
    for namespace in routing.namespaces.values() {
        for bound in namespace.slots.iter().filter(|bound| bound.plugin.name == name) {
            let Some(process) = &bound.process else { continue };
            let status = process.status();
            found.push(crate::api::PluginProcess {
                namespace: status.namespace,
                slot: bound.slot.name.to_owned(),
                state: status.state.to_owned(),
                pid: status.pid.unwrap_or_default(),
                restarts: status.restarts,
                message: crate::secrets::redact(&status.message).into_owned(),
                rss_bytes: status.rss_bytes.unwrap_or_default(),
                sandbox: status.sandbox,
            });
        }
    }
    found
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn sweep_claim_checks(
        &self,
        request: Request<SweepClaimChecksRequest>,
    ) -> Result<Response<SweepClaimChecksResponse>, Status> {
        let request = request.into_inner();
        let only = Some(request.namespace.as_str()).filter(|name| !name.is_empty());
        let report = self.stores.sweep_claim_checks(only, request.apply).await?;
        if request.apply {
            report.iter().for_each(crate::store::sweeper::log);
        }
        let namespaces = report.into_iter().map(sweep_message).collect();
        Ok(super::reply(SweepClaimChecksResponse { namespaces, applied: request.apply }))
    }

    async fn list_plugins(
        &self,
        _: Request<ListPluginsRequest>,
    ) -> Result<Response<ListPluginsResponse>, Status> {
        let routing = self.gateway.routing();
        let plugins = routing
            .plugins
            .values()
            .map(|loaded| {
                let metadata = loaded.plugin.metadata();
                PluginInfo {
                    name: loaded.name.clone(),
                    plugin_name: metadata.name.clone(),
                    version: metadata.version.clone(),
                    description: metadata.description.clone(),
                    connection_format: metadata.connection_format.clone(),
                    abi_version: major_version(&metadata.abi_version),
                    plugin_abi_version: metadata.abi_version.clone(),
                    interfaces: declared_interfaces(metadata),
                    path: loaded.source.display().to_string(),
                    sha256: loaded.sha256.clone(),
                }
            })
            .collect();
        Ok(super::reply(ListPluginsResponse { plugins }))
    }

    async fn list_namespaces(
        &self,
        _: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let routing = self.gateway.routing();
        let namespaces = routing
            .namespaces
            .values()
            .map(|namespace| {
                let health = namespace.health();
                NamespaceInfo {
                    name: namespace.name.clone(),
                    pattern: namespace.pattern.name.to_owned(),
                    slots: namespace
                        .slots
                        .iter()
                        .map(|bound| SlotBinding {
                            slot: bound.slot.name.to_owned(),
                            plugin: bound.plugin.name.clone(),
                            interfaces: declared_interfaces(bound.plugin.plugin.metadata()),
                        })
                        .collect(),
                    health: health_name(health.status).to_owned(),
                    health_message: crate::secrets::redact(&health.message).into_owned(),
                }
            })
            .collect();
        Ok(super::reply(ListNamespacesResponse { namespaces }))
    }

    async fn reload(&self, _: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        // Run to completion even if the caller goes away or its deadline passes: a reload
        // cut off half-way would leave new instances unshut and no outcome recorded.
        let reloader = self.reloader.clone();
        let result = tokio::spawn(async move { reloader.reload("AdminService.Reload").await })
            .await
            .map_err(|e| Status::internal(format!("the reload task failed: {e}")))?;
        Ok(super::reply(ReloadResponse { outcome: Some(outcome(result)) }))
    }

    async fn get_reload_status(
        &self,
        _: Request<GetReloadStatusRequest>,
    ) -> Result<Response<GetReloadStatusResponse>, Status> {
        let status = self.reloader.status();
        let routing = self.gateway.routing();
        let mut plugins: Vec<PluginReloadStatus> = routing
            .plugins
            .values()
            .map(|loaded| PluginReloadStatus {
                name: loaded.name.clone(),
                version: loaded.plugin.metadata().version.clone(),
                sha256: loaded.sha256.clone(),
                path: loaded.source.display().to_string(),
                last: status.plugins.get(&loaded.name).cloned().map(outcome),
                isolation: match loaded.plugin.isolation() {
                    crate::isolation::Isolation::InProcess => "in_process".into(),
                    crate::isolation::Isolation::Process => "process".into(),
                },
                processes: processes_of(&routing, &loaded.name),
            })
            .collect();
        for (name, last) in &status.plugins {
            if !routing.plugins.contains_key(name) {
                plugins.push(PluginReloadStatus {
                    name: name.clone(),
                    last: Some(outcome(last.clone())),
                    ..Default::default()
                });
            }
        }
        let (libraries, bytes) = self.reloader.libraries_loaded();
        Ok(super::reply(GetReloadStatusResponse {
            config_path: self.reloader.config_path().display().to_string(),
            config: status.config.map(outcome),
            plugins,
            reloads: status.reloads,
            libraries_loaded: libraries as u32,
            library_bytes: bytes,
            watching: self.reloader.watching(),
        }))
    }

    async fn list_patterns(
        &self,
        _: Request<ListPatternsRequest>,
    ) -> Result<Response<ListPatternsResponse>, Status> {
        let patterns = PATTERNS
            .iter()
            .map(|pattern| PatternInfo {
                name: pattern.name.to_owned(),
                description: pattern.description.to_owned(),
                slots: pattern
                    .slots
                    .iter()
                    .map(|slot| SlotRequirement {
                        slot: slot.name.to_owned(),
                        optional: slot.optional,
                        required_interfaces: slot.required.iter().map(|i| i.name().to_owned()).collect(),
                        optional_interfaces: slot
                            .optional_interfaces
                            .iter()
                            .map(|i| i.name().to_owned())
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(super::reply(ListPatternsResponse { patterns }))
    }
}

/// `1` of `1.4.2`; 0 when unreadable (the loader refuses such plugins, so never in practice).
fn major_version(version: &str) -> u32 {
    version.split('.').next().and_then(|major| major.parse().ok()).unwrap_or(0)
}
