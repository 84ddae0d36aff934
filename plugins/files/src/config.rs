use serde::Deserialize;

use plugin_abi::PluginError;

/// The slot's `config` table for files.
#[derive(Debug, Clone, Deserialize, plugin_abi::schemars::JsonSchema)]
#[schemars(crate = "plugin_abi::schemars")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory objects are kept in, created on first use. Write `${config_dir}/data/objects` for one next to plugins.toml.
    pub path: String,
    /// Sync each object (and the directory) to disk before its write is acknowledged; off, a power loss can lose recent objects.
    #[serde(default = "default_fsync")]
    pub fsync: bool,
}

fn default_fsync() -> bool {
    true
}

impl Config {
    pub fn check(&self) -> Result<(), PluginError> {
        if self.path.trim().is_empty() {
            return Err(PluginError::invalid_argument("path: name the directory objects are kept in"));
        }
        Ok(())
    }
}
