//! Process isolation (`isolation = "process"` on a plugin): each instance of the plugin
//! runs in a supervised child, `prism plugin-host`, which opens the same library with
//! the same checks; the gateway holds a stand-in driver that forwards every call, feed
//! and upload over a Unix socket. A crash in the child costs only that instance's calls
//! in flight; the supervisor restarts it.
//!
//! - `wire.rs`: the framing (length, kind, id, bincode body) and the calls.
//! - `connection.rs`: the gateway's end of the socket (calls by id, feeds with credit, pings);
//!   `outgoing.rs` writes frames (the gateway's directly when it can, the child's batched).
//! - `remote.rs`: the stand-in driver (`plugin-abi`'s traits, forwarded).
//! - `supervisor.rs`: starting, watching and restarting the child; its status.
//! - `child.rs`: `prism plugin-host` — limits, privileges, the sandbox, then serving the instance.
//! - `sandbox.rs`: the Landlock rule set and seccomp allow-list a plugin process enters.
//! - `probe.rs`: `prism probe-plugin` children, which open a library before anyone else
//!   does (the gateway's loader runs them for every library, isolated or not).
//!
//! A crate of its own so that what runs plugin code in other processes has one home, and
//! the conformance runner can host plugins in processes without linking the gateway.

#![forbid(unsafe_code)]

pub mod child;
mod connection;
mod outgoing;
pub mod probe;
mod remote;
pub mod sandbox;
pub mod supervisor;
pub mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plugin_abi::host::{Instance, Plugin};
use plugin_abi::{Metadata, PluginError, PluginResult};
use serde::Deserialize;

pub use supervisor::{ProcessSpec, ProcessStatus, Supervisor};

/// Where a plugin's instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the gateway's process: fastest; a crash in the plugin is the gateway's crash.
    #[default]
    InProcess,
    /// In a supervised child process per instance.
    Process,
}

/// `[plugins.NAME.process] sandbox`: whether a plugin process is confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sandbox {
    /// Landlock (where the kernel has it) and a seccomp allow-list; see `sandbox.rs`.
    #[default]
    On,
    /// Every right of the process's user: for a plugin the sandbox refuses something it needs.
    Off,
}

/// `[plugins.NAME.process]`: the limits and restart policy of a process-isolated plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessSettings {
    /// Address space the child may map, in MiB (RLIMIT_AS); 0 = no limit.
    pub memory_limit_mb: u64,
    /// CPU seconds the child may use over its life (RLIMIT_CPU); 0 = no limit.
    pub cpu_time_limit_s: u64,
    /// Files and sockets the child may hold open (RLIMIT_NOFILE).
    pub max_open_files: u64,
    /// Run the child as this user (and its group); needs the gateway to run as root.
    pub user: Option<String>,
    /// Whether the child enters the sandbox (Landlock and a seccomp allow-list).
    pub sandbox: Sandbox,
    /// Crashes tolerated within `restart_window_s`; one more and the child is not restarted.
    pub max_restarts: u32,
    pub restart_window_s: u64,
    /// A child that answers no ping for this long is killed and restarted.
    pub heartbeat_timeout_ms: u64,
    /// How long a child may take to open the library and create its instance.
    pub start_timeout_ms: u64,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            memory_limit_mb: 4096,
            cpu_time_limit_s: 0,
            max_open_files: 4096,
            user: None,
            sandbox: Sandbox::On,
            max_restarts: 5,
            restart_window_s: 60,
            heartbeat_timeout_ms: 5_000,
            start_timeout_ms: 30_000,
        }
    }
}

impl ProcessSettings {
    /// The limits as `prism plugin-host` arguments (the child applies them to itself).
    fn add_child_args(&self, command: &mut tokio::process::Command) {
        command.arg("--memory-limit-mb").arg(self.memory_limit_mb.to_string());
        command.arg("--cpu-time-limit-s").arg(self.cpu_time_limit_s.to_string());
        command.arg("--max-open-files").arg(self.max_open_files.to_string());
        if let Some(user) = &self.user {
            command.arg("--user").arg(user);
        }
        if self.sandbox == Sandbox::Off {
            command.arg("--no-sandbox");
        }
    }

    /// Problems with the values, as (key under `process`, message, fix).
    pub fn problems(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut found = Vec::new();
        if self.memory_limit_mb != 0 && self.memory_limit_mb < 256 {
            found.push((
                "memory_limit_mb",
                format!(
                    "{} MiB of address space is too little for a plugin process to start",
                    self.memory_limit_mb
                ),
                "use at least 256 (address space, not resident memory), or 0 for no limit",
            ));
        }
        if self.max_open_files < 32 {
            found.push((
                "max_open_files",
                format!("{} is too few for a plugin process", self.max_open_files),
                "use at least 32",
            ));
        }
        if self.restart_window_s == 0 {
            found.push(("restart_window_s", "must be at least 1".into(), "use e.g. 60"));
        }
        if self.heartbeat_timeout_ms < 100 {
            found.push(("heartbeat_timeout_ms", "must be at least 100".into(), "use e.g. 5000"));
        }
        if self.start_timeout_ms < 100 {
            found.push(("start_timeout_ms", "must be at least 100".into(), "use e.g. 30000"));
        }
        if let Some(user) = &self.user {
            match nix::unistd::User::from_name(user) {
                Ok(Some(_)) => {}
                _ => found.push((
                    "user",
                    format!("there is no user '{user}' on this machine"),
                    "name an existing user, or remove the key",
                )),
            }
        }
        found
    }
}

/// A configured plugin's library, as the gateway runs it.
#[derive(Debug, Clone)]
// Few of these exist (one per configured plugin), each behind an `Arc`: size is moot.
#[allow(clippy::large_enum_variant)]
pub enum Library {
    /// Opened in this process.
    InProcess(Plugin),
    /// Never opened here: inspected by a probe child, run by supervised children.
    Isolated(Arc<IsolatedLibrary>),
}

/// A library that runs only in child processes.
pub struct IsolatedLibrary {
    /// The vetted private copy the children open.
    pub copy: PathBuf,
    pub metadata: Metadata,
    /// The `prism` binary the children run.
    pub binary: PathBuf,
    /// The configured plugin name.
    pub plugin: String,
    pub settings: ProcessSettings,
    /// Config texts already checked by a probe child, and its verdicts.
    checked: Mutex<HashMap<String, Option<String>>>,
}

impl std::fmt::Debug for IsolatedLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolatedLibrary").field("copy", &self.copy).field("metadata", &self.metadata).finish()
    }
}

/// What a probe child reports of a library it opened (`prism probe-plugin --report`).
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct ProbeReport {
    pub metadata: Metadata,
    /// For each config given, in order: `None` when the plugin accepted it, else why not.
    pub config_errors: Vec<Option<String>>,
}

/// Opens `library` in a probe child (never here) and checks `configs` with it, under
/// the loader's probe timeout; in the sandbox its plugin processes get, unless `Off`.
pub fn probe_report(
    binary: &Path,
    library: &Path,
    configs: &[String],
    run_instance: bool,
    sandbox: Sandbox,
) -> Result<ProbeReport, String> {
    use crate::probe::{run_probe, ProbeFailure};
    let mut args = vec!["--report"];
    if run_instance {
        args.push("--run-instance");
    }
    if sandbox == Sandbox::On {
        args.push("--sandbox");
    }
    let run = run_probe(binary, library, configs, &args).map_err(|failure| match failure {
        ProbeFailure::Spawn(error) => format!("cannot start {}: {error}", binary.display()),
        ProbeFailure::Hung => crate::probe::hung_message(library),
    })?;
    if run.status.code() == Some(2) {
        // A load error the probe reported cleanly: its message is the last line.
        let last = run.stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        return Err(last.trim_start_matches("error: ").to_owned());
    }
    if !run.status.success() {
        return Err(crate::probe::crashed_message(library, &run));
    }
    serde_json::from_slice(&run.stdout)
        .map_err(|error| format!("the probe process's report is unreadable: {error}"))
}

impl IsolatedLibrary {
    pub fn new(
        copy: PathBuf,
        binary: PathBuf,
        plugin: String,
        settings: ProcessSettings,
        report: ProbeReport,
        configs: &[String],
    ) -> IsolatedLibrary {
        let checked = configs.iter().cloned().zip(report.config_errors).collect();
        IsolatedLibrary {
            copy,
            metadata: report.metadata,
            binary,
            plugin,
            settings,
            checked: Mutex::new(checked),
        }
    }

    /// The plugin's verdict on a slot config, asked of a probe child unless already known.
    pub fn check_config(&self, config: &str) -> PluginResult<()> {
        let known = self.checked.lock().unwrap_or_else(|e| e.into_inner()).get(config).cloned();
        let verdict = match known {
            Some(verdict) => verdict,
            None => {
                let report = probe_report(
                    &self.binary,
                    &self.copy,
                    &[config.to_owned()],
                    false,
                    self.settings.sandbox,
                )
                .map_err(PluginError::invalid_argument)?;
                let verdict = report.config_errors.into_iter().next().flatten();
                self.checked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(config.to_owned(), verdict.clone());
                verdict
            }
        };
        match verdict {
            None => Ok(()),
            Some(message) => Err(PluginError::invalid_argument(message)),
        }
    }

    /// Starts a child running one instance with `config` for `namespace`.
    pub async fn start(&self, config: &str, namespace: &str) -> PluginResult<(Instance, Arc<Supervisor>)> {
        start_instance(ProcessSpec {
            binary: self.binary.clone(),
            library: self.copy.clone(),
            plugin: self.plugin.clone(),
            namespace: namespace.to_owned(),
            config: config.to_owned(),
            settings: self.settings.clone(),
        })
        .await
    }
}

/// Starts a supervised child for one instance, and the gateway's stand-in for it.
pub async fn start_instance(spec: ProcessSpec) -> PluginResult<(Instance, Arc<Supervisor>)> {
    let (supervisor, metadata) = Supervisor::start(spec).await?;
    let driver = remote::RemoteDriver { process: supervisor.clone() };
    let instance = Instance::from_driver(driver, metadata);
    Ok((instance, supervisor))
}

impl Library {
    pub fn metadata(&self) -> &Metadata {
        match self {
            Library::InProcess(plugin) => plugin.metadata(),
            Library::Isolated(library) => &library.metadata,
        }
    }

    pub fn check_config(&self, config: &str) -> PluginResult<()> {
        match self {
            Library::InProcess(plugin) => plugin.check_config(config),
            Library::Isolated(library) => library.check_config(config),
        }
    }

    /// The process settings it runs with; `None` in process.
    pub fn process_settings(&self) -> Option<&ProcessSettings> {
        match self {
            Library::InProcess(_) => None,
            Library::Isolated(library) => Some(&library.settings),
        }
    }

    pub fn isolation(&self) -> Isolation {
        match self {
            Library::InProcess(_) => Isolation::InProcess,
            Library::Isolated(_) => Isolation::Process,
        }
    }

    /// An instance for `namespace`, with its process's supervisor when isolated.
    pub async fn create_in(
        &self,
        config: &str,
        namespace: &str,
    ) -> PluginResult<(Instance, Option<Arc<Supervisor>>)> {
        match self {
            Library::InProcess(plugin) => Ok((plugin.create_in(config, namespace).await?, None)),
            Library::Isolated(library) => {
                let (instance, supervisor) = library.start(config, namespace).await?;
                Ok((instance, Some(supervisor)))
            }
        }
    }
}

static CHILD_LOG_FORMAT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Plugin processes write their logs as this gateway does (`text` or `json`): their
/// stderr lines are copied into the gateway's.
pub fn log_children_as(format: &'static str) {
    let _ = CHILD_LOG_FORMAT.set(format);
}

/// The private directory the gateway's plugin sockets live in (mode 0700).
fn socket_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("prism-isolation-{}", nix::unistd::geteuid()));
    crate::probe::create_private_dir(&dir)?;
    Ok(dir)
}
