//! One function per `prism` subcommand. Each prints its output and returns a
//! [`CommandError`] that carries its exit code; `main` parses the arguments, calls one,
//! and reports the error once.

mod admin;
mod probe;
mod registry;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;

pub use admin::{new_api_key, reload, status, sweep_claim_checks, AdminTarget};
pub use probe::probe_plugin;
pub use registry::{describe_pattern, find_plugins, generate_config, list_patterns, plugins};
pub use serve::serve;

use crate::config::Config;
use crate::loader::Loader;
use crate::resolve::{self, Resolved};
use crate::shared::ConfigErrors;

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum CommandError {
    /// Bad input (a config, a plugin file, an argument): exit 2, `error: …`.
    Invalid(String),
    /// An invalid config, its errors listed: exit 2.
    Config(ConfigErrors),
    /// The command ran and did not succeed (server unreachable, reload refused): exit 1.
    Failed(String),
    /// Reported already (per item on stderr, or an outcome on stdout); only the exit
    /// code is left.
    Reported(u8),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Failed(_) => 1,
            CommandError::Invalid(_) | CommandError::Config(_) => 2,
            CommandError::Reported(code) => *code,
        }
    }

    /// What stderr gets.
    pub fn report(&self) -> String {
        let text = match self {
            CommandError::Invalid(message) | CommandError::Failed(message) => format!("error: {message}\n"),
            CommandError::Config(errors) => errors.to_string(),
            CommandError::Reported(_) => String::new(),
        };
        crate::secrets::redact(&text).into_owned()
    }
}

impl From<ConfigErrors> for CommandError {
    fn from(errors: ConfigErrors) -> Self {
        CommandError::Config(errors)
    }
}

pub type CommandResult = Result<(), CommandError>;

fn invalid(message: impl std::fmt::Display) -> CommandError {
    CommandError::Invalid(message.to_string())
}

/// `prism validate`: the config and its plugins, as `serve` would check them, without
/// connecting anywhere.
pub fn validate(file: &std::path::Path) -> CommandResult {
    let (resolved, _) = load_config(file, false)?;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "{}: ok ({} plugin{}, {} namespace{})",
        file.display(),
        resolved.plugins.len(),
        plural(resolved.plugins.len()),
        resolved.namespaces.len(),
        plural(resolved.namespaces.len()),
    );
    Ok(())
}

/// Loads and resolves a config. `serving`: the probe child also runs one instance of
/// each plugin (`validate` never connects anywhere, so it does not).
fn load_config(file: &std::path::Path, serving: bool) -> Result<(Resolved, Arc<Loader>), CommandError> {
    let config = Config::load(file)?;
    if serving && config.contents.admin.is_some() {
        // Before any library loads, so they are counted too.
        crate::observe::enable();
    }
    let loader = Arc::new(loader_for(Some(&config)).probing_instances(serving));
    let resolved = resolve::resolve(config, &loader)?;
    Ok((resolved, loader))
}

/// The loader every command opens libraries with: the same file, permission and pin
/// checks, and the same probe child, as `serve` (no signal from a bad file reaches the CLI).
fn loader_for(config: Option<&Config>) -> Loader {
    let server = config.map(|c| c.contents.server.clone()).unwrap_or_default();
    Loader::for_this_process(server.plugin_cache_dir, server.max_library_loads)
        .requiring_pins(server.require_pins)
}

/// The default config when none is named: ./plugins.toml if there is one.
fn default_config(config: Option<PathBuf>) -> Option<PathBuf> {
    config.or_else(|| Some(PathBuf::from("plugins.toml")).filter(|p| p.is_file()))
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, CommandError> {
    builder
        .enable_all()
        .build()
        .map_err(|error| CommandError::Failed(format!("cannot start the async runtime: {error}")))
}
