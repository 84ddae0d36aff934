//! The admin HTTP listener (`[admin] listen`): `/metrics` (Prometheus text format),
//! `/healthz` (the process answers), `/readyz` (every namespace is serving) and the
//! console (`/console`, polling `/api/overview`). With `[auth]`, `/metrics` and
//! `/api/overview` need a caller with `admin` on every namespace, presented as
//! `authorization: Bearer <JWT or API key>` or `x-api-key: <key>`; the probes and the
//! console's static files stay open and name no namespace.

pub mod console;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::jwks::EARLY_FETCH_GAP;
use crate::auth::{audit_unauthenticated, Auth, NotAuthenticated, Permission, API_KEY_HEADER};
use crate::gateway::Gateway;
use crate::reload::Reloader;

#[derive(Clone)]
struct Admin {
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    metrics: &'static crate::observe::Metrics,
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Admin { gateway, reloader, metrics: crate::observe::enable() };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(|| asset("text/html; charset=utf-8", console::PAGE)))
        .route("/console/console.js", get(|| asset("text/javascript; charset=utf-8", console::SCRIPT)))
        .route("/console/console.css", get(|| asset("text/css; charset=utf-8", console::STYLE)))
        .route("/api/overview", get(overview))
        .with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// An embedded console file. The policy allows only the gateway's own script and style
/// (no inline script, no other origin), and no framing.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn overview(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(refusal) = admin_only(&admin, &headers, "GET /api/overview").await {
        return refusal;
    }
    let overview = console::overview(&admin.gateway, &admin.reloader, admin.metrics);
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(overview)).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let routing = admin.gateway.routing();
    let not_serving: Vec<&str> = routing
        .namespaces
        .values()
        .filter(|namespace| namespace.health().status == plugin_abi::HealthStatus::Unhealthy)
        .map(|namespace| namespace.name.as_str())
        .collect();
    if not_serving.is_empty() {
        return (StatusCode::OK, format!("ready: {} namespaces serving\n", routing.namespaces.len()))
            .into_response();
    }
    // With [auth], anyone may probe, so say how many, not which.
    let which = if routing.auth.is_some() { String::new() } else { format!(": {}", not_serving.join(", ")) };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: {} of {} namespaces not serving{which}\n",
            not_serving.len(),
            routing.namespaces.len()
        ),
    )
        .into_response()
}

async fn metrics(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(refusal) = admin_only(&admin, &headers, "GET /metrics").await {
        return refusal;
    }
    let (libraries, _) = admin.reloader.libraries_loaded();
    let text = admin.metrics.render(&gauges(&admin.gateway), libraries);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Without `[auth]`, anyone; with it, only a caller holding `admin` on every namespace.
async fn admin_only(admin: &Admin, headers: &HeaderMap, what: &str) -> Result<(), Response> {
    let auth = admin.gateway.routing().auth.clone();
    match auth {
        Some(auth) => authorize_admin(&auth, headers, what).await,
        None => Ok(()),
    }
}

/// The caller must hold `admin` on every namespace. A bearer value that is not a JWT is
/// taken as an API key, since scrapers (Prometheus among them) send a bearer credential.
async fn authorize_admin(auth: &Auth, headers: &HeaderMap, what: &str) -> Result<(), Response> {
    let mut headers = headers.clone();
    let api_key_as_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .filter(|token| token.split('.').count() != 3)
        .and_then(|key| key.trim().parse().ok());
    if let Some(key) = api_key_as_bearer {
        headers.remove(header::AUTHORIZATION);
        headers.insert(API_KEY_HEADER, key);
    }
    let mut outcome = auth.authenticate(&headers, None);
    if let Err(NotAuthenticated::AwaitKeys(remote)) = &outcome {
        remote.fetch_unless_recent(EARLY_FETCH_GAP).await;
        outcome = auth.authenticate(&headers, None);
    }
    let principal = match outcome {
        Ok(principal) => principal,
        Err(NotAuthenticated::Refused(status)) => {
            audit_unauthenticated(what, status.message());
            return Err((StatusCode::UNAUTHORIZED, format!("{}\n", status.message())).into_response());
        }
        Err(NotAuthenticated::AwaitKeys(_)) => {
            return Err((StatusCode::UNAUTHORIZED, "the JWT key set is being fetched; retry shortly\n")
                .into_response())
        }
    };
    if !auth.allows(&principal, "*", Permission::Admin) {
        crate::auth::audit_admin(&principal.display, what, "deny");
        return Err((
            StatusCode::FORBIDDEN,
            format!("{} may not use {what}: it needs admin on every namespace\n", principal.display),
        )
            .into_response());
    }
    Ok(())
}

/// Each namespace's gauges, read from the gateway now.
fn gauges(gateway: &Gateway) -> Vec<crate::observe::NamespaceGauges> {
    let routing = gateway.routing();
    let gauges = routing.namespaces.values().map(|namespace| crate::observe::NamespaceGauges {
        name: namespace.name.clone(),
        in_flight: namespace.in_flight(),
        open_streams: namespace.open_streams(),
        serving: namespace.health().status != plugin_abi::HealthStatus::Unhealthy,
        outboxes: (namespace.pattern.name == crate::patterns::PUBSUB).then(|| {
            let subscriptions = namespace.subscriptions();
            subscriptions
                .iter()
                .map(|subscription| subscription.waiting.load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        }),
    });
    gauges.collect()
}
