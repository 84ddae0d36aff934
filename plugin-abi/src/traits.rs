//! The driver trait every plugin implements; the interface traits are declared by family
//! in `interfaces/`.

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::{ConfigKey, Health, PluginResult};

/// The driver: built from the slot's `config` table, asked for health, shut down.
pub trait Driver: Sized + Send + Sync + 'static {
    /// The slot's `config` table, deserialized. Use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + Send + 'static;

    /// Worker threads of the instance's own tokio runtime. They run the plugin's spawned
    /// tasks (connection drivers, pumps, sweepers); the host's threads poll the calls.
    const RUNTIME_WORKERS: usize = 1;

    /// Checks a deserialized config beyond its types (URLs, ranges, names) without
    /// connecting anywhere. `prism validate` calls it; so does the host before `create`.
    fn check(config: &Self::Config) -> PluginResult<()> {
        let _ = config;
        Ok(())
    }

    fn create(config: Self::Config) -> impl Future<Output = PluginResult<Self>> + Send;

    /// The config keys `prism plugins` and `prism generate config` show (ABI 1.1).
    /// Derive them from the config type so they cannot drift:
    /// `plugin_abi::config_keys_of::<Self::Config>()` with `#[derive(JsonSchema)]` on it.
    fn config_keys() -> Vec<ConfigKey> {
        Vec::new()
    }

    fn health(&self) -> impl Future<Output = Health> + Send {
        async { Health::serving() }
    }

    /// Called once before the instance is dropped; in-flight calls have finished.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
