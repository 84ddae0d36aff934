//! `prism serve`: resolve the config, start every namespace, watch for changes, serve.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use plugin_abi::ErrorCode;

use super::{load_config, runtime, CommandError, CommandResult};
use crate::gateway::Gateway;
use crate::reload::Reloader;
use crate::{server, watch};

pub fn serve(config: &Path, listen: Option<SocketAddr>, watch_files: bool) -> CommandResult {
    let (mut resolved, loader) = load_config(config, true)?;
    if let Some(listen) = listen {
        resolved.config.contents.server.listen = listen;
    }
    runtime(tokio::runtime::Builder::new_multi_thread())?.block_on(async move {
        let listen = resolved.config.contents.server.listen;
        let config_file = resolved.config.file.clone();
        let tls = match &resolved.config.contents.server.tls {
            Some(settings) => {
                let base_dir = config_file.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
                Some(crate::tls::TlsSource::new(settings.clone(), base_dir).map_err(CommandError::Invalid)?)
            }
            None => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "serving plaintext on a non-loopback address: anyone on the network can read and alter calls; configure [server.tls]"
            );
        }
        let debounce = std::time::Duration::from_millis(resolved.config.contents.server.reload_debounce_ms);
        let admin_settings = resolved.config.contents.admin.clone();
        let start_only = crate::reload::StartOnly {
            admin: admin_settings.clone(),
            tracing: resolved.config.contents.tracing.clone(),
        };
        if let Some(traces) = &resolved.config.contents.tracing {
            crate::observe::traces::start(traces).map_err(CommandError::Failed)?;
            tracing::info!(endpoint = %traces.otlp_endpoint, ratio = traces.sample_ratio, "exporting traces over OTLP");
        }
        let gateway = match Gateway::start(resolved).await {
            Ok(gateway) => Arc::new(gateway),
            Err(error) => {
                let message = format!("{}: {error}", config_file.display());
                return Err(if error.error.code() == ErrorCode::InvalidArgument {
                    CommandError::Invalid(message)
                } else {
                    CommandError::Failed(message)
                });
            }
        };
        let reloader = Arc::new(Reloader::new(gateway.clone(), config_file.clone(), loader).started_with(start_only));
        if watch_files {
            match watch::spawn(reloader.clone(), debounce) {
                Ok(_) => reloader.set_watching(true),
                Err(error) => tracing::warn!("{error}; reload with `prism reload` instead"),
            }
        }
        let listener = match server::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                gateway.shutdown().await;
                return Err(CommandError::Failed(error.to_string()));
            }
        };
        let admin = match admin_listener(admin_settings.as_ref()).await {
            Ok(admin) => admin,
            Err(error) => {
                gateway.shutdown().await;
                return Err(error);
            }
        };
        let admin = admin.map(|listener| {
            tokio::spawn(crate::admin_http::serve(
                listener,
                gateway.clone(),
                reloader.clone(),
                std::future::pending(),
            ))
        });
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string());
        // Scripts and tests wait for this line to know the port (useful with --listen 127.0.0.1:0).
        println!("prism: serving on {address}");
        let served = server::serve(gateway, reloader, listener, tls, server::shutdown_signal()).await;
        if let Some(admin) = admin {
            admin.abort();
        }
        crate::observe::traces::flush().await;
        served.map_err(|error| CommandError::Failed(format!("the server failed: {error}")))
    })
}

/// Binds `[admin] listen`, printing `prism: admin on ADDRESS` (before the serving line,
/// which scripts wait for).
async fn admin_listener(
    settings: Option<&crate::observe::config::AdminConfig>,
) -> Result<Option<tokio::net::TcpListener>, CommandError> {
    let Some(settings) = settings else { return Ok(None) };
    let listener = server::bind(settings.listen)
        .await
        .map_err(|error| CommandError::Failed(format!("[admin] listen: {error}")))?;
    let address =
        listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| settings.listen.to_string());
    if !settings.listen.ip().is_loopback() {
        tracing::warn!(%address, "the admin listener is on a non-loopback address: keep it behind a firewall, or configure [auth] so /metrics needs admin");
    }
    println!("prism: admin on {address}");
    Ok(Some(listener))
}
