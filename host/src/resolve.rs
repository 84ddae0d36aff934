//! The config checks that need the plugins: load every configured library (through the
//! [`Loader`]), then check each slot's plugin against the pattern's requirements and let
//! the plugin check its own `config` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use plugin_abi::Metadata;

use crate::config::Config;
use crate::loader::{sha256_file, LoadedPlugin, Loader};
use crate::patterns::{self, Pattern, Slot};
use crate::shared::{ConfigError, ConfigErrors};

#[derive(Debug)]
pub struct ResolvedSlot {
    pub slot: &'static Slot,
    pub plugin: Arc<LoadedPlugin>,
    pub config_toml: String,
    /// Where in the config file this binding is, for error messages.
    pub key: String,
}

#[derive(Debug)]
pub struct ResolvedNamespace {
    pub name: String,
    pub pattern: &'static Pattern,
    pub slots: Vec<ResolvedSlot>,
}

#[derive(Debug)]
pub struct Resolved {
    pub config: Config,
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    pub namespaces: Vec<ResolvedNamespace>,
}

/// Every interface name a plugin declares, including ones this host does not know.
pub fn declared_interfaces(metadata: &Metadata) -> Vec<String> {
    metadata
        .interfaces
        .iter()
        .map(|interface| interface.name().to_owned())
        .chain(metadata.unknown_interfaces.iter().cloned())
        .collect()
}

/// The `config` tables of every slot bound to plugin `name`, as TOML text.
fn slot_configs(config: &Config, name: &str) -> Vec<String> {
    config
        .contents
        .namespaces
        .iter()
        .flat_map(|namespace| namespace.slots.values())
        .filter(|binding| binding.plugin == name)
        .map(|binding| toml::to_string(&binding.config).expect("a TOML table always serialises"))
        .collect()
}

pub fn resolve(config: Config, loader: &Loader) -> Result<Resolved, ConfigErrors> {
    resolve_reusing(config, loader, &BTreeMap::new())
}

/// Like [`resolve`], keeping a plugin of `current` whose library file is unchanged
/// (same path, same SHA-256) instead of loading it again.
pub fn resolve_reusing(
    config: Config,
    loader: &Loader,
    current: &BTreeMap<String, Arc<LoadedPlugin>>,
) -> Result<Resolved, ConfigErrors> {
    let mut errors = Vec::new();
    let mut plugins = BTreeMap::new();
    for (name, entry) in &config.contents.plugins {
        let path = config.plugin_path(entry);
        let unchanged = current.get(name).filter(|loaded| {
            loaded.source == path
                && entry.sha256.as_deref().is_none_or(|pin| pin.eq_ignore_ascii_case(&loaded.sha256))
                && sha256_file(&path).is_ok_and(|sha| sha == loaded.sha256)
                && loaded.plugin.process_settings() == entry.process_settings().as_ref()
        });
        if let Some(loaded) = unchanged {
            plugins.insert(name.clone(), loaded.clone());
            continue;
        }
        let configs = slot_configs(&config, name);
        let loaded = match entry.process_settings() {
            Some(settings) => loader.load_isolated(name, &path, entry.sha256.as_deref(), &configs, settings),
            None => loader.load_plugin(name, &path, entry.sha256.as_deref(), &configs),
        };
        match loaded {
            Ok(plugin) => {
                for unknown in &plugin.plugin.metadata().unknown_interfaces {
                    tracing::warn!(plugin = %name, interface = %unknown, "plugin declares an interface this host does not know; ignoring it");
                }
                plugins.insert(name.clone(), Arc::new(plugin));
            }
            Err(error) => errors.push(error),
        }
    }
    let mut namespaces = Vec::new();
    for (index, entry) in config.contents.namespaces.iter().enumerate() {
        let pattern = patterns::find(&entry.pattern).expect("checked when parsed");
        let mut slots = Vec::new();
        for (slot_name, binding) in &entry.slots {
            let slot = pattern.slot(slot_name).expect("checked when parsed");
            let key = format!("namespaces[{index}].slots.{slot_name}");
            let Some(plugin) = plugins.get(&binding.plugin) else {
                continue; // its load error is already reported
            };
            let declared = declared_interfaces(plugin.plugin.metadata());
            for required in slot.required {
                if !plugin.plugin.metadata().implements(*required) {
                    errors.push(ConfigError::new(
                        key.clone(),
                        format!(
                            "namespace '{}': plugin '{}' lacks interface {required}, which slot '{}' of pattern '{}' requires (it has: {})",
                            entry.name,
                            binding.plugin,
                            slot.name,
                            pattern.name,
                            declared.join(", ")
                        ),
                        format!(
                            "bind a plugin that implements {} (see `prism plugins`)",
                            patterns::interface_names(slot.required, " + ")
                        ),
                    ));
                }
            }
            let config_toml = toml::to_string(&binding.config).expect("a TOML table always serialises");
            if let Err(error) = plugin.plugin.check_config(&config_toml) {
                errors.push(ConfigError::new(
                    format!("{key}.config"),
                    format!(
                        "namespace '{}': plugin '{}' rejected its config: {}",
                        entry.name,
                        binding.plugin,
                        crate::secrets::as_references(error.message())
                    ),
                    "fix the slot's config table; `prism plugins` shows each plugin's settings",
                ));
            }
            slots.push(ResolvedSlot { slot, plugin: plugin.clone(), config_toml, key });
        }
        namespaces.push(ResolvedNamespace { name: entry.name.clone(), pattern, slots });
    }
    if errors.is_empty() {
        Ok(Resolved { config, plugins, namespaces })
    } else {
        Err(ConfigErrors { file: config.file.clone(), errors })
    }
}
