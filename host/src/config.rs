//! `plugins.toml`: parsing, and the checks that need no plugin loaded. Every error
//! names the key it is about and what would fix it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::patterns;
use crate::shared::{valid_name, ConfigError, ConfigErrors};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
    #[serde(default)]
    pub namespaces: Vec<NamespaceEntry>,
    /// Authentication and authorization; absent = every caller may do everything.
    pub auth: Option<crate::auth::config::AuthConfig>,
    /// Request-rate and in-flight limits.
    #[serde(default)]
    pub quotas: Vec<crate::quota::QuotaEntry>,
    /// The admin HTTP listener (metrics, probes); absent = off.
    pub admin: Option<crate::observe::config::AdminConfig>,
    /// OpenTelemetry traces; absent = off.
    pub tracing: Option<crate::observe::config::TracingConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Largest value a request may carry, in bytes.
    pub max_value_bytes: usize,
    /// Largest page a Scan may ask for.
    pub max_scan_limit: u32,
    /// Upper bound on any request's run time; a shorter client deadline wins. 0 = none.
    pub request_timeout_ms: u64,
    /// How long in-flight calls may run after SIGINT/SIGTERM before the server stops.
    pub shutdown_grace_ms: u64,
    /// How often each instance's health is polled.
    pub health_interval_ms: u64,
    /// Messages the server holds for one subscriber that reads slower than they arrive.
    pub subscriber_buffer: usize,
    /// What happens when that buffer is full.
    pub slow_subscriber: SlowSubscriber,
    /// Where plugin libraries are copied before they are opened (default: a per-user
    /// directory under the system temp dir). Created with mode 0700.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Most distinct plugin libraries one process may open. Libraries are never
    /// unloaded, so each reload of a new build keeps its code mapped until restart.
    pub max_library_loads: usize,
    /// Refuse any plugin whose table has no `sha256` pin, so only libraries an operator
    /// vetted by hash are ever opened.
    pub require_pins: bool,
    /// How long the plugin files and the config must be quiet before a change reloads.
    pub reload_debounce_ms: u64,
    /// How long a reload waits for a namespace's in-flight calls before handing its state over.
    pub reload_drain_ms: u64,
    /// Client connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Calls one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest header block (all metadata of one call) accepted, in bytes.
    pub max_header_list_bytes: u32,
    /// How often an idle connection is pinged; one that does not answer within
    /// `keepalive_timeout_ms` is closed. 0 = no pings.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Most bytes of keys and values one response (a batch, a scan page) may carry.
    pub max_response_bytes: usize,
    /// How long an idempotency token is honoured (from the time written in it).
    pub idempotency_window_ms: u64,
    /// On a namespace with a `claim_check` slot: values and payloads larger than this
    /// go to the object store, and a reference travels through the backend instead.
    pub claim_check_threshold_bytes: usize,
    /// Deliveries of a durable subscription's message whose claimed payload cannot be
    /// read, after which the gateway acknowledges it (it would come back for ever).
    pub claim_check_max_deliveries: u32,
    /// The sweeper deletes a key-value namespace's claim-check objects that no stored
    /// value refers to once they are this old (at least `request_timeout_ms`: a write
    /// stores its reference within one request of uploading the object).
    pub claim_check_grace_ms: u64,
    /// Queue and pub/sub namespaces' claim-check objects older than this are deleted
    /// by the sweeper: set it above the longest a message waits. 0 = never.
    pub claim_check_message_retention_ms: u64,
    /// How often the gateway sweeps every claim check. 0 = only `prism claim-check sweep`.
    pub claim_check_sweep_interval_ms: u64,
    /// Responses at least this large (encoded) are compressed when the client accepts
    /// gzip or zstd; smaller ones are sent as they are: tonic starts a new compressor
    /// for every message, tens of microseconds before the first byte, more than a
    /// small response saves (docs/BENCHMARKS.md, "Compression").
    pub compression_min_bytes: usize,
    /// Largest value `SetStream` writes through a claim check (the object store's
    /// limit for one object, not memory: the value streams through).
    pub max_object_bytes: u64,
    /// TLS on the listener; absent = plaintext.
    pub tls: Option<crate::tls::TlsConfig>,
}

/// The policy for a subscriber whose buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowSubscriber {
    /// Drop the oldest waiting message; the next delivered one says how many were dropped.
    DropOldest,
    /// End the subscription with RESOURCE_EXHAUSTED.
    Disconnect,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8980)),
            max_value_bytes: 1024 * 1024,
            max_scan_limit: 1000,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            health_interval_ms: 5_000,
            subscriber_buffer: 1024,
            slow_subscriber: SlowSubscriber::DropOldest,
            plugin_cache_dir: None,
            max_library_loads: 64,
            require_pins: false,
            reload_debounce_ms: 300,
            reload_drain_ms: 5_000,
            max_connections: 10_000,
            max_concurrent_streams: 200,
            max_header_list_bytes: 32 * 1024,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
            max_response_bytes: 64 * 1024 * 1024,
            idempotency_window_ms: 3_600_000,
            claim_check_threshold_bytes: 256 * 1024,
            claim_check_max_deliveries: 5,
            claim_check_grace_ms: 3_600_000,
            claim_check_message_retention_ms: 0,
            claim_check_sweep_interval_ms: 3_600_000,
            max_object_bytes: 8 << 30,
            compression_min_bytes: 16 * 1024,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Path to the plugin library; relative paths are relative to the config file.
    pub path: PathBuf,
    /// Optional SHA-256 (hex) the library file must match.
    pub sha256: Option<String>,
    /// Where its instances run: `in_process` (the default) or `process` (a supervised
    /// child per instance, so a crash costs only that instance's calls).
    #[serde(default)]
    pub isolation: crate::isolation::Isolation,
    /// Limits and restart policy of its processes (with `isolation = "process"`).
    pub process: Option<crate::isolation::ProcessSettings>,
}

impl PluginEntry {
    /// The process settings when the plugin runs isolated, `None` in process.
    pub fn process_settings(&self) -> Option<crate::isolation::ProcessSettings> {
        (self.isolation == crate::isolation::Isolation::Process)
            .then(|| self.process.clone().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceEntry {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotEntry {
    pub plugin: String,
    /// Handed to the plugin as TOML text; the plugin owns its schema.
    #[serde(default)]
    pub config: toml::Table,
}

/// A parsed config and where it came from (plugin paths are relative to its directory).
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub contents: ConfigFile,
    /// `[auth]`, compiled (its key set read), when configured.
    pub auth: Option<std::sync::Arc<crate::auth::Auth>>,
    /// `[[quotas]]`, compiled, when any is configured.
    pub quotas: Option<std::sync::Arc<crate::quota::Quotas>>,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigErrors {
            file: file.to_path_buf(),
            errors: vec![ConfigError::new(
                "(file)",
                format!("cannot read the file: {error}"),
                "check the path given to --config (the default is plugins.toml in the current directory)",
            )],
        })?;
        Config::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors { file: file.to_path_buf(), errors };
        let mut contents = parse_toml(text).map_err(|e| fail(vec![e]))?;
        let mut errors = check(&contents);
        let base_dir = file.parent().unwrap_or(Path::new("."));
        errors.extend(expand_secrets(&mut contents, base_dir));
        if let Some(tls) = &contents.server.tls {
            if let Err((key, message)) = crate::tls::server_config(tls, base_dir) {
                errors.push(ConfigError::new(
                    key,
                    message,
                    "give PEM files the gateway can read (a relative path is read from the config file's directory)",
                ));
            }
        }
        let client_certificates =
            contents.server.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
        let auth = contents
            .auth
            .as_ref()
            .map(|auth| crate::auth::Auth::compile(auth, base_dir, client_certificates));
        let auth = match auth {
            Some(Ok(auth)) => Some(std::sync::Arc::new(auth)),
            Some(Err(problems)) => {
                errors.extend(problems);
                None
            }
            None => None,
        };
        let quotas = match crate::quota::Quotas::compile(&contents.quotas, contents.auth.is_some()) {
            Ok(quotas) if !contents.quotas.is_empty() => Some(std::sync::Arc::new(quotas)),
            Ok(_) => None,
            Err(problems) => {
                errors.extend(problems);
                None
            }
        };
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        Ok(Config { file: file.to_path_buf(), contents, auth, quotas })
    }

    /// A plugin's library path, resolved against the config file's directory.
    pub fn plugin_path(&self, entry: &PluginEntry) -> PathBuf {
        if entry.path.is_absolute() {
            entry.path.clone()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(&entry.path)
        }
    }
}

/// The text `${config_dir}` stands for in a slot's config: the config file's directory,
/// absolute, so a plugin's relative file (a SQLite database) does not depend on where
/// the gateway was started.
const CONFIG_DIR: &str = "${config_dir}";

/// Resolves `${config_dir}`, `${env:…}` and `${file:…}` in every string of every slot's
/// `config` table.
fn expand_secrets(contents: &mut ConfigFile, base_dir: &Path) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let config_dir = absolute_dir(base_dir);
    for (index, namespace) in contents.namespaces.iter_mut().enumerate() {
        for (slot, binding) in namespace.slots.iter_mut() {
            for (key, value) in binding.config.iter_mut() {
                let at = format!("namespaces[{index}].slots.{slot}.config.{key}");
                expand_value(value, &at, base_dir, &config_dir, &mut errors);
            }
        }
    }
    errors
}

fn absolute_dir(dir: &Path) -> String {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let absolute =
        std::fs::canonicalize(dir).or_else(|_| std::path::absolute(dir)).unwrap_or(dir.to_path_buf());
    absolute.display().to_string()
}

fn expand_value(
    value: &mut toml::Value,
    at: &str,
    base_dir: &Path,
    config_dir: &str,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        toml::Value::String(text) => {
            let located = text.replace(CONFIG_DIR, config_dir);
            match crate::secrets::expand(&located, base_dir) {
                Ok(expanded) => *text = expanded,
                Err(error) => errors.push(ConfigError::new(at, error.message, error.fix)),
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{at}[{i}]"), base_dir, config_dir, errors);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                expand_value(item, &format!("{at}.{key}"), base_dir, config_dir, errors);
            }
        }
        _ => {}
    }
}

fn parse_toml(text: &str) -> Result<ConfigFile, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let place = inner.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        });
        let message = inner.message().trim().to_owned();
        let key = if path == "." || path.is_empty() { "(document)".to_owned() } else { path };
        let fix = if message.starts_with("unknown field") {
            "remove or rename the key; see docs/CONFIG.md for the keys each table takes".to_owned()
        } else if message.starts_with("missing field") {
            "add the missing key; see docs/CONFIG.md".to_owned()
        } else {
            "correct the value's syntax or type; see docs/CONFIG.md".to_owned()
        };
        ConfigError::new(format!("{key}{}", place.unwrap_or_default()), message, fix)
    })
}

/// Checks that need no plugin: names, references, patterns and slots.
fn check(config: &ConfigFile) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Some(tracing) = &config.tracing {
        errors.extend(tracing.check());
    }
    let server = &config.server;
    if server.max_value_bytes == 0 {
        errors.push(ConfigError::new(
            "server.max_value_bytes",
            "must be at least 1",
            "set a byte limit such as 1048576 (1 MiB)",
        ));
    }
    if server.max_scan_limit == 0 {
        errors.push(ConfigError::new(
            "server.max_scan_limit",
            "must be at least 1",
            "set a page limit such as 1000",
        ));
    }
    if server.subscriber_buffer == 0 {
        errors.push(ConfigError::new("server.subscriber_buffer", "must be at least 1", "use e.g. 1024"));
    }
    if server.claim_check_max_deliveries == 0 {
        errors.push(ConfigError::new(
            "server.claim_check_max_deliveries",
            "must be at least 1",
            "use e.g. 5",
        ));
    }
    if server.max_library_loads == 0 {
        errors.push(ConfigError::new("server.max_library_loads", "must be at least 1", "use e.g. 64"));
    }
    if server.request_timeout_ms > 0 && server.claim_check_grace_ms < server.request_timeout_ms {
        errors.push(ConfigError::new(
            "server.claim_check_grace_ms",
            format!(
                "{} ms is shorter than server.request_timeout_ms ({} ms): the sweeper could delete an object whose write is still storing its reference",
                server.claim_check_grace_ms, server.request_timeout_ms
            ),
            "use at least server.request_timeout_ms (the default is 3600000, one hour)",
        ));
    }
    if server.idempotency_window_ms < 1000 {
        errors.push(ConfigError::new(
            "server.idempotency_window_ms",
            format!("{} ms is shorter than any retry", server.idempotency_window_ms),
            "use at least 1000 (the default is 3600000, one hour)",
        ));
    }
    for (key, value) in [
        ("server.max_object_bytes", server.max_object_bytes),
        ("server.max_connections", server.max_connections as u64),
        ("server.max_concurrent_streams", u64::from(server.max_concurrent_streams)),
        ("server.max_header_list_bytes", u64::from(server.max_header_list_bytes)),
    ] {
        if value == 0 {
            errors.push(ConfigError::new(key, "must be at least 1", "leave it out for the default"));
        }
    }
    if server.max_response_bytes < server.max_value_bytes + 2048 {
        errors.push(ConfigError::new(
            "server.max_response_bytes",
            format!(
                "{} cannot hold one value of max_value_bytes ({}) and its key",
                server.max_response_bytes, server.max_value_bytes
            ),
            "make it several times max_value_bytes (the default is 64 MiB)",
        ));
    }
    if server.health_interval_ms == 0 {
        errors.push(ConfigError::new("server.health_interval_ms", "must be at least 1", "use e.g. 5000"));
    }
    for (name, plugin) in &config.plugins {
        if !valid_name(name) {
            errors.push(ConfigError::new(
                format!("plugins.{name}"),
                "plugin names are 1-64 characters of letters, digits, '-', '_' and '.'",
                "rename the table",
            ));
        }
        match (&plugin.process, plugin.isolation) {
            (Some(_), crate::isolation::Isolation::InProcess) => errors.push(ConfigError::new(
                format!("plugins.{name}.process"),
                "process limits apply only to a plugin that runs in its own process",
                "add isolation = \"process\" to the plugin's table, or remove its [process] table",
            )),
            (Some(settings), crate::isolation::Isolation::Process) => {
                for (key, message, fix) in settings.problems() {
                    errors.push(ConfigError::new(format!("plugins.{name}.process.{key}"), message, fix));
                }
            }
            (None, _) => {}
        }
        if let Some(pin) = &plugin.sha256 {
            if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
                errors.push(ConfigError::new(
                    format!("plugins.{name}.sha256"),
                    format!("'{pin}' is not a SHA-256 hex digest"),
                    "use the 64 hex digits printed by `sha256sum FILE`, or remove the pin",
                ));
            }
        }
    }
    let mut seen = BTreeMap::new();
    for (index, namespace) in config.namespaces.iter().enumerate() {
        let at = format!("namespaces[{index}]");
        if !valid_name(&namespace.name) {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("'{}' is not a valid namespace name", namespace.name),
                "use 1-64 characters of letters, digits, '-', '_' and '.' (clients use \"default\" when they send none)",
            ));
        }
        if let Some(first) = seen.insert(namespace.name.clone(), index) {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("namespace '{}' is already defined by namespaces[{first}]", namespace.name),
                "give each namespace a distinct name",
            ));
        }
        let Some(pattern) = patterns::find(&namespace.pattern) else {
            errors.push(ConfigError::new(
                format!("{at}.pattern"),
                format!("unknown pattern '{}'", namespace.pattern),
                format!("use one of: {} (see `prism patterns`)", patterns::names().join(", ")),
            ));
            continue;
        };
        for slot in pattern.slots {
            if !slot.optional && !namespace.slots.contains_key(slot.name) {
                errors.push(ConfigError::new(
                    format!("{at}.slots.{}", slot.name),
                    format!(
                        "pattern '{}' needs slot '{}' (a plugin with {})",
                        pattern.name,
                        slot.name,
                        crate::patterns::interface_names(slot.required, " + ")
                    ),
                    format!("add [namespaces.slots.{}] with plugin = \"NAME\"", slot.name),
                ));
            }
        }
        for (slot_name, binding) in &namespace.slots {
            if pattern.slot(slot_name).is_none() {
                let known: Vec<_> = pattern.slots.iter().map(|s| s.name).collect();
                errors.push(ConfigError::new(
                    format!("{at}.slots.{slot_name}"),
                    format!("pattern '{}' has no slot '{slot_name}'", pattern.name),
                    format!("use one of: {}", known.join(", ")),
                ));
            }
            if !config.plugins.contains_key(&binding.plugin) {
                let known: Vec<_> = config.plugins.keys().map(String::as_str).collect();
                errors.push(ConfigError::new(
                    format!("{at}.slots.{slot_name}.plugin"),
                    format!("no plugin named '{}' is configured", binding.plugin),
                    if known.is_empty() {
                        format!("add a [plugins.{}] table with the library's path", binding.plugin)
                    } else {
                        format!(
                            "add a [plugins.{}] table with the library's path, or use one of: {}",
                            binding.plugin,
                            known.join(", ")
                        )
                    },
                ));
            }
        }
    }
    errors
}
