//! The config checks that need the plugins: load every configured library (checking
//! its ABI, pin and file permissions), then check each slot's plugin against the
//! pattern's requirements and let the plugin check its own `config` table.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use plugin_abi::host::{LoadError, Plugin};
use plugin_abi::Metadata;
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::patterns::{self, Pattern, Slot};

/// A configured plugin whose library loaded.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The name the config gives it.
    pub name: String,
    pub plugin: Plugin,
    pub sha256: String,
}

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

pub fn resolve(config: Config) -> Result<Resolved, ConfigErrors> {
    let mut errors = Vec::new();
    let mut plugins = BTreeMap::new();
    for (name, entry) in &config.contents.plugins {
        let path = config.plugin_path(entry);
        match load_plugin(name, &path, entry.sha256.as_deref()) {
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
                if !declared.iter().any(|name| name == required) {
                    errors.push(ConfigError::new(
                        key.clone(),
                        format!(
                            "plugin '{}' lacks interface {required}, which slot '{}' of pattern '{}' requires (it has: {})",
                            binding.plugin,
                            slot.name,
                            pattern.name,
                            declared.join(", ")
                        ),
                        format!("bind a plugin that implements {} (see `prism plugins`)", slot.required.join(" + ")),
                    ));
                }
            }
            let config_toml = toml::to_string(&binding.config).expect("a TOML table always serialises");
            if let Err(error) = plugin.plugin.check_config(&config_toml) {
                errors.push(ConfigError::new(
                    format!("{key}.config"),
                    format!("plugin '{}' rejected its config: {}", binding.plugin, error.message()),
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

fn load_plugin(name: &str, path: &Path, pin: Option<&str>) -> Result<LoadedPlugin, ConfigError> {
    let key = format!("plugins.{name}.path");
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|error| {
        ConfigError::new(
            &key,
            format!("cannot read plugin library {shown}: {error}"),
            "build the plugin (`cargo build --workspace`) or correct the path (relative paths start at the config file's directory)",
        )
    })?;
    if !metadata.is_file() {
        return Err(ConfigError::new(
            &key,
            format!("{shown} is not a file"),
            "point path at the plugin's .so/.dylib file",
        ));
    }
    check_not_world_writable(path).map_err(|message| {
        ConfigError::new(
            &key,
            message,
            "remove write permission for other users (chmod o-w) from the file and its directory",
        )
    })?;
    let sha256 = sha256_file(path).map_err(|error| {
        ConfigError::new(&key, format!("cannot read {shown}: {error}"), "check the file's permissions")
    })?;
    if let Some(pin) = pin {
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(ConfigError::new(
                format!("plugins.{name}.sha256"),
                format!("{shown} has SHA-256 {sha256}, but the config pins {pin}"),
                "restore the pinned build of the plugin, or update the pin if this build is trusted",
            ));
        }
    }
    let plugin = Plugin::load(path).map_err(|error| {
        let fix = match &error {
            LoadError::IncompatibleAbi { .. } => "rebuild the plugin against this host's plugin-abi version",
            LoadError::NotAPlugin { .. } => "point path at a library built with plugin_abi::export_plugin!",
            LoadError::Open { .. } => "check that the file is a complete shared library for this platform",
        };
        if let LoadError::IncompatibleAbi { detail, .. } = &error {
            tracing::debug!(plugin = %name, report = %detail, "full ABI layout report");
        }
        ConfigError::new(&key, error.to_string(), fix)
    })?;
    Ok(LoadedPlugin { name: name.to_owned(), plugin, sha256 })
}

#[cfg(unix)]
fn check_not_world_writable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let canonical = path.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let directory = canonical.parent().unwrap_or(Path::new("/"));
    for candidate in [canonical.as_path(), directory] {
        let mode = std::fs::metadata(candidate).map_err(|e| e.to_string())?.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !(candidate == directory && sticky) {
            return Err(format!(
                "{} is writable by other users, so anyone could replace the code this host runs",
                candidate.display()
            ));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_writable(_: &Path) -> Result<(), String> {
    Ok(())
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
