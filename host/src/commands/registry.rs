//! The commands that describe plugins and patterns: `prism plugins [find]`,
//! `prism patterns [NAME]`, `prism generate config`. They read each library's metadata
//! through a probe child and never open a library in this process.

use std::path::{Path, PathBuf};

use super::{default_config, invalid, loader_for, CommandError, CommandResult};
use crate::cli::{self, Candidate};
use crate::config::Config;
use crate::patterns;

/// The plugins of a config, as registry candidates.
fn config_candidates(file: &Path) -> Result<Vec<Candidate>, CommandError> {
    let config = Config::load(file).map_err(|errors| invalid(errors.to_string().trim()))?;
    let loader = loader_for(Some(&config));
    let mut candidates = Vec::new();
    for (name, entry) in &config.contents.plugins {
        let metadata = loader
            .describe_library(&config.plugin_path(entry), entry.sha256.as_deref())
            .map_err(|e| invalid(format!("plugin '{name}': {e}")))?;
        candidates.push(Candidate { name: name.clone(), path: entry.path.display().to_string(), metadata });
    }
    Ok(candidates)
}

fn library_candidate(path: &Path) -> Result<Candidate, CommandError> {
    let metadata = loader_for(None).describe_library(path, None).map_err(invalid)?;
    Ok(Candidate { name: metadata.name.clone(), path: path.display().to_string(), metadata })
}

fn pattern(name: &str) -> Result<&'static patterns::Pattern, CommandError> {
    patterns::find(name).ok_or_else(|| {
        invalid(format!("unknown pattern '{name}'; the patterns are: {}", patterns::names().join(", ")))
    })
}

/// `prism plugins [PATHS]`: each library's metadata table; every failure is reported
/// (and the exit code is 2) but does not stop the others.
pub fn plugins(paths: Vec<PathBuf>, config: &Path) -> CommandResult {
    let (libraries, loader) = if paths.is_empty() {
        let config = Config::load(config)?;
        let libraries: Vec<(PathBuf, Option<String>)> = config
            .contents
            .plugins
            .values()
            .map(|entry| (config.plugin_path(entry), entry.sha256.clone()))
            .collect();
        (libraries, loader_for(Some(&config)))
    } else {
        (paths.into_iter().map(|path| (path, None)).collect(), loader_for(None))
    };
    let mut failed = false;
    for (index, (path, pin)) in libraries.iter().enumerate() {
        if index > 0 {
            println!();
        }
        match loader.describe_library(path, pin.as_deref()) {
            Ok(metadata) => print!("{}", cli::render_metadata(&path.display().to_string(), &metadata)),
            Err(error) => {
                eprintln!("error: {error}");
                failed = true;
            }
        }
    }
    if failed {
        Err(CommandError::Reported(2))
    } else {
        Ok(())
    }
}

/// `prism patterns`: every pattern with its slots.
pub fn list_patterns() -> CommandResult {
    print!("{}", cli::render_patterns());
    Ok(())
}

/// `prism patterns NAME`: the pattern's slots and which plugins fit each.
pub fn describe_pattern(name: &str, config: Option<PathBuf>, libraries: &[PathBuf]) -> CommandResult {
    let pattern = pattern(name)?;
    let mut candidates = Vec::new();
    if let Some(config) = default_config(config) {
        candidates.extend(config_candidates(&config)?);
    }
    for library in libraries {
        candidates.push(library_candidate(library)?);
    }
    print!("{}", cli::render_pattern(pattern, &candidates));
    Ok(())
}

/// `prism plugins find --interface …`: the plugins that implement every interface.
pub fn find_plugins(interfaces: &[String], dir: Option<&Path>, config: &Path) -> CommandResult {
    if let Some(unknown) = interfaces.iter().find(|i| plugin_abi::Interface::from_name(i).is_none()) {
        let known: Vec<&str> = plugin_abi::Interface::ALL.iter().map(|i| i.name()).collect();
        return Err(invalid(format!(
            "unknown interface '{unknown}'; the interfaces are: {}",
            known.join(", ")
        )));
    }
    let candidates = match dir {
        Some(dir) => {
            let entries = std::fs::read_dir(dir)
                .map_err(|error| invalid(format!("cannot read {}: {error}", dir.display())))?;
            let mut libraries: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so" || e == "dylib"))
                .collect();
            libraries.sort();
            // Files that are not plugins are skipped, not fatal: a directory may hold both.
            libraries.iter().filter_map(|path| library_candidate(path).ok()).collect()
        }
        None => config_candidates(config)?,
    };
    print!("{}", cli::render_find(interfaces, &candidates));
    Ok(())
}

/// `prism generate config`: a config fragment binding the given plugins to a pattern's
/// slots, each plugin's config keys written out at their defaults.
pub fn generate_config(
    pattern_name: &str,
    slots: &[String],
    namespace: &str,
    config: Option<PathBuf>,
) -> CommandResult {
    let pattern = pattern(pattern_name)?;
    let configured = match default_config(config) {
        Some(config) => config_candidates(&config)?,
        None => Vec::new(),
    };
    let mut given = Vec::new();
    let mut bindings = Vec::new();
    for binding in slots {
        let Some((slot, plugin)) = binding.split_once('=') else {
            return Err(invalid(format!("--slot {binding}: use SLOT=PLUGIN")));
        };
        if plugin.contains('/') || plugin.ends_with(".so") || plugin.ends_with(".dylib") {
            given.push((slot.to_owned(), library_candidate(Path::new(plugin))?));
        } else {
            match configured.iter().find(|c| c.name == plugin) {
                Some(candidate) => bindings.push((slot.to_owned(), candidate)),
                None => {
                    let known: Vec<&str> = configured.iter().map(|c| c.name.as_str()).collect();
                    return Err(invalid(format!(
                        "--slot {binding}: no plugin '{plugin}' in the config (known: {}); give a library path instead",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    )));
                }
            }
        }
    }
    bindings.extend(given.iter().map(|(slot, candidate)| (slot.clone(), candidate)));
    match cli::generate_config(namespace, pattern, &bindings) {
        Ok(fragment) => {
            print!("{fragment}");
            Ok(())
        }
        Err(problems) => {
            let mut message = format!("this combination does not fit pattern '{}':", pattern.name);
            for problem in problems {
                message.push_str(&format!("\n  {problem}"));
            }
            Err(CommandError::Invalid(message))
        }
    }
}
