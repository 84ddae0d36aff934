//! The `[admin]` section of `plugins.toml`.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin HTTP listener (metrics, probes) listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// The `[tracing]` section: OpenTelemetry traces exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// Share of calls without a sampled parent that are traced (0.0 to 1.0). A call whose
    /// `traceparent` says its caller sampled it is always traced.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// The `service.name` the spans carry.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// How long one export may take before it is abandoned.
    #[serde(default = "default_export_timeout_ms")]
    pub export_timeout_ms: u64,
}

fn default_sample_ratio() -> f64 {
    0.1
}

fn default_service_name() -> String {
    "prism".to_owned()
}

fn default_export_timeout_ms() -> u64 {
    3000
}

impl TracingConfig {
    pub fn check(&self) -> Vec<crate::shared::ConfigError> {
        use crate::shared::ConfigError;
        let mut errors = Vec::new();
        // Plain http: the exporter speaks to a collector next to the gateway (an agent or
        // sidecar), which forwards over TLS if it must.
        let with_host = self.otlp_endpoint.strip_prefix("http://").is_some_and(|rest| !rest.is_empty());
        if !with_host || http::Uri::try_from(self.otlp_endpoint.as_str()).is_err() {
            errors.push(ConfigError::new(
                "tracing.otlp_endpoint",
                format!("'{}' is not an http:// URL", self.otlp_endpoint),
                "give a nearby OpenTelemetry collector's OTLP/gRPC address, e.g. \"http://127.0.0.1:4317\"",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            errors.push(ConfigError::new(
                "tracing.sample_ratio",
                format!("{} is not between 0.0 and 1.0", self.sample_ratio),
                "use e.g. 0.1 to trace one call in ten, 1.0 to trace every call",
            ));
        }
        if self.service_name.trim().is_empty() {
            errors.push(ConfigError::new(
                "tracing.service_name",
                "must not be empty",
                "leave it out for \"prism\"",
            ));
        }
        if !(100..=60_000).contains(&self.export_timeout_ms) {
            errors.push(ConfigError::new(
                "tracing.export_timeout_ms",
                format!("{} is outside 100..=60000", self.export_timeout_ms),
                "leave it out for 3000",
            ));
        }
        errors
    }
}
