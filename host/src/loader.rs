//! Opening plugin libraries safely. Libraries are never opened where they are
//! configured: each is checked (a regular file of bounded size, not writable by others,
//! matching its pin), copied to a private, content-addressed file (dlopen caches by path,
//! and a file rewritten in place under a mapped library crashes the process), and opened
//! in a child process (`prism probe-plugin`) before this one, so a truncated or corrupt
//! file kills the child, not the gateway.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plugin_abi::host::{LoadError, Plugin};
use sha2::{Digest, Sha256};

use prism_isolation::probe::{
    crashed_message, create_private_dir, hung_message, run_probe, ProbeFailure, HUNG_FIX,
};

use crate::shared::ConfigError;

/// A configured plugin whose library loaded.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The name the config gives it.
    pub name: String,
    pub plugin: crate::isolation::Library,
    pub sha256: String,
    /// The configured library file (the plugin itself runs from a private copy).
    pub source: PathBuf,
}

/// Opens plugin libraries the safe way (see the module docs) and keeps each distinct
/// library open once: abi_stable never unloads, so every new build a reload opens stays
/// mapped until the process exits, and `max_loads` caps how many there may be.
pub struct Loader {
    cache_dir: PathBuf,
    /// The `prism` binary, to probe a library in a child process; `None` skips probing.
    prober: Option<PathBuf>,
    max_loads: usize,
    /// `server.require_pins`: refuse a library whose config gives no sha256.
    require_pins: bool,
    /// Whether the probe child also runs one instance with a slot's config.
    probe_instances: bool,
    opened: Mutex<HashMap<String, Plugin>>,
    /// Kept apart from `opened`, whose lock is held while a library is probed.
    opened_count: std::sync::atomic::AtomicUsize,
    mapped_bytes: std::sync::atomic::AtomicU64,
}

impl Loader {
    pub fn new(cache_dir: PathBuf, prober: Option<PathBuf>, max_loads: usize) -> Loader {
        Loader {
            cache_dir,
            prober,
            max_loads,
            require_pins: false,
            probe_instances: false,
            opened: Mutex::default(),
            opened_count: Default::default(),
            mapped_bytes: Default::default(),
        }
    }

    /// A loader with a per-user cache directory under the system temp dir, probing with
    /// the running `prism` binary.
    pub fn for_this_process(cache_dir: Option<PathBuf>, max_loads: usize) -> Loader {
        let cache_dir = cache_dir.unwrap_or_else(default_cache_dir);
        Loader::new(cache_dir, std::env::current_exe().ok(), max_loads)
    }

    /// Refuse libraries without a sha256 pin (`server.require_pins`).
    pub fn requiring_pins(mut self, require_pins: bool) -> Loader {
        self.require_pins = require_pins;
        self
    }

    /// Let the probe child also create, health-check and shut down one instance of each
    /// library with the first slot config that binds it (serve and reload; `validate`
    /// never connects anywhere).
    pub fn probing_instances(mut self, probe_instances: bool) -> Loader {
        self.probe_instances = probe_instances;
        self
    }

    /// Distinct libraries opened so far, and their total size in bytes.
    pub fn loaded(&self) -> (usize, u64) {
        let count = self.opened_count.load(std::sync::atomic::Ordering::Relaxed);
        (count, self.mapped_bytes.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Loads a configured plugin; its probe also checks `configs` (the slot configs that
    /// bind it) and runs one instance of the first.
    pub(crate) fn load_plugin(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
        configs: &[String],
    ) -> Result<LoadedPlugin, ConfigError> {
        let opened = self.open_checked(path, pin, configs);
        crate::observe::count_library_load(name, opened.is_ok());
        let (plugin, sha256) = opened.map_err(|refused| {
            if let Some(detail) = &refused.detail {
                tracing::debug!(plugin = %name, report = %detail, "full ABI layout report");
            }
            let key =
                if refused.pin { format!("plugins.{name}.sha256") } else { format!("plugins.{name}.path") };
            ConfigError::new(key, refused.message, refused.fix)
        })?;
        Ok(LoadedPlugin {
            name: name.to_owned(),
            plugin: crate::isolation::Library::InProcess(plugin),
            sha256,
            source: path.to_path_buf(),
        })
    }

    /// The metadata table of a library named on the command line, read by a probe child
    /// after the same checks as a configured one (file type and size, permissions, pin):
    /// this process never opens it, so describing a library cannot crash or run code
    /// in the CLI. The error names the file and the fix.
    pub fn describe_library(&self, path: &Path, pin: Option<&str>) -> Result<plugin_abi::Metadata, String> {
        // Sandboxed like a plugin process: the CLI runs no plugin code with its own rights.
        let sandbox = crate::isolation::Sandbox::On;
        let (_, _, report) =
            self.inspect_isolated(path, pin, &[], sandbox).map_err(|refused| refused.to_string())?;
        Ok(report.metadata)
    }

    /// Every check a library passes before this process maps it, in order: a regular
    /// file of bounded size, not writable by others, matching its pin, opened first in a
    /// probe child, then here.
    fn open_checked(
        &self,
        path: &Path,
        pin: Option<&str>,
        configs: &[String],
    ) -> Result<(Plugin, String), Refused> {
        let (sha256, size) = self.vet(path, pin)?;
        let plugin = self.open(path, &sha256, size, configs).map_err(refused_open)?;
        Ok((plugin, sha256))
    }

    /// Loads a configured plugin that runs in its own processes: the same checks and
    /// private copy, then a probe child reports its metadata and checks `configs`. This
    /// process never opens the library.
    pub(crate) fn load_isolated(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
        configs: &[String],
        settings: crate::isolation::ProcessSettings,
    ) -> Result<LoadedPlugin, ConfigError> {
        let inspected = self.inspect_isolated(path, pin, configs, settings.sandbox);
        crate::observe::count_library_load(name, inspected.is_ok());
        let (copy, sha256, report) = inspected.map_err(|refused| {
            let key =
                if refused.pin { format!("plugins.{name}.sha256") } else { format!("plugins.{name}.path") };
            ConfigError::new(key, refused.message, refused.fix)
        })?;
        let binary = self.prober.clone().unwrap_or_default();
        let library =
            crate::isolation::IsolatedLibrary::new(copy, binary, name.to_owned(), settings, report, configs);
        Ok(LoadedPlugin {
            name: name.to_owned(),
            plugin: crate::isolation::Library::Isolated(std::sync::Arc::new(library)),
            sha256,
            source: path.to_path_buf(),
        })
    }

    fn inspect_isolated(
        &self,
        path: &Path,
        pin: Option<&str>,
        configs: &[String],
        sandbox: crate::isolation::Sandbox,
    ) -> Result<(PathBuf, String, crate::isolation::ProbeReport), Refused> {
        let Some(binary) = &self.prober else {
            return Err(Refused::new(
                "reading a library in a probe process needs the prism binary, and it cannot be found",
                "run the gateway from its installed binary",
            ));
        };
        let (sha256, _) = self.vet(path, pin)?;
        let copy = self.private_copy(path, &sha256).map_err(refused_open)?;
        let probed = crate::isolation::probe_report(binary, &copy, configs, self.probe_instances, sandbox);
        // A refused library's copy stays (see `open`).
        let report = probed.map_err(|message| {
            let fix = if message.contains("incompatible plugin ABI") {
                abi_fix()
            } else {
                "check that the file is a complete plugin library built with plugin_abi::export_plugin! against this host's ABI (see docs/PLUGIN_ABI.md)".to_owned()
            };
            Refused::new(message.replace(&copy.display().to_string(), &path.display().to_string()), fix)
        })?;
        Ok((copy, sha256, report))
    }

    /// The checks before anything opens a library: a regular file of bounded size, not
    /// writable by others, matching its pin. Returns its SHA-256 and size.
    fn vet(&self, path: &Path, pin: Option<&str>) -> Result<(String, u64), Refused> {
        let shown = path.display();
        let size = plugin_file_size(path).map_err(|message| Refused::new(
            message,
            "build the plugin (`cargo build --workspace`) or point path at its .so/.dylib file (relative paths start at the config file's directory)",
        ))?;
        check_not_world_writable(path).map_err(|message| {
            Refused::new(
                message,
                "remove write permission for other users (chmod o-w) from the file and its directory",
            )
        })?;
        let sha256 = sha256_file(path).map_err(|error| {
            Refused::new(format!("cannot read {shown}: {error}"), "check the file's permissions")
        })?;
        match pin {
            Some(pin) if !pin.eq_ignore_ascii_case(&sha256) => {
                return Err(Refused {
                    pin: true,
                    ..Refused::new(
                        format!("{shown} has SHA-256 {sha256}, but the config pins {pin}"),
                        "restore the pinned build of the plugin, or update the pin if this build is trusted",
                    )
                })
            }
            None if self.require_pins => {
                return Err(Refused {
                    pin: true,
                    ..Refused::new(
                        format!("{shown} has no sha256 pin, and server.require_pins is on"),
                        format!("add sha256 = \"{sha256}\" to the plugin's table if this build is trusted"),
                    )
                })
            }
            _ => {}
        }
        Ok((sha256, size))
    }

    /// Copies the library to `<cache>/<sha256>.so`, probes it in a child process, and
    /// opens the copy (once per content).
    fn open(&self, source: &Path, sha256: &str, size: u64, configs: &[String]) -> Result<Plugin, OpenError> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plugin) = opened.get(sha256) {
            return Ok(plugin.clone());
        }
        if opened.len() >= self.max_loads {
            return Err(OpenError::Other {
                message: format!(
                    "this process has already opened {} plugin libraries ({} MiB of code that stays mapped: \
                     a library is never unloaded), the server.max_library_loads limit",
                    opened.len(),
                    self.mapped_bytes.load(std::sync::atomic::Ordering::Relaxed) / (1024 * 1024)
                ),
                fix: "restart prism to reclaim the memory, or raise server.max_library_loads".into(),
            });
        }
        let copy = self.private_copy(source, sha256)?;
        // A copy that fails here stays in the cache: nothing trusts it for being there (every
        // load probes it again), and the plugin processes of this gateway or of another
        // sharing the cache may be running from it — a refusal caused by one slot's config
        // must not pull the file from under them.
        self.probe(source, &copy, configs)?;
        let plugin = Plugin::load(&copy).map_err(|error| match error {
            LoadError::Open { reason, .. } => LoadError::Open { path: source.to_path_buf(), reason },
            LoadError::MissingDependency { symbol, .. } => {
                LoadError::MissingDependency { symbol, path: source.to_path_buf() }
            }
            LoadError::NotAPlugin { .. } => LoadError::NotAPlugin { path: source.to_path_buf() },
            LoadError::IncompatibleAbi { summary, detail, .. } => {
                LoadError::IncompatibleAbi { path: source.to_path_buf(), summary, detail }
            }
        });
        let plugin = plugin.map_err(OpenError::Load)?;
        self.mapped_bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        opened.insert(sha256.to_owned(), plugin.clone());
        self.opened_count.store(opened.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(plugin)
    }

    fn private_copy(&self, source: &Path, sha256: &str) -> Result<PathBuf, OpenError> {
        let failed = |what: &str, error: std::io::Error| OpenError::Other {
            message: format!("cannot {what} in {}: {error}", self.cache_dir.display()),
            fix:
                "make server.plugin_cache_dir a directory this user can write (it is created with mode 0700)"
                    .into(),
        };
        create_private_dir(&self.cache_dir).map_err(|e| failed("create the plugin cache", e))?;
        let extension = source.extension().and_then(|e| e.to_str()).unwrap_or("so");
        let copy = self.cache_dir.join(format!("{sha256}.{extension}"));
        if sha256_file(&copy).is_ok_and(|existing| existing == sha256) {
            return Ok(copy);
        }
        let partial = self.cache_dir.join(format!(".{sha256}.{}.partial", std::process::id()));
        std::fs::copy(source, &partial).map_err(|e| failed("copy the plugin library", e))?;
        // The source may have changed while it was copied: the copy must be what was hashed.
        if !sha256_file(&partial).is_ok_and(|copied| copied == sha256) {
            let _ = std::fs::remove_file(&partial);
            return Err(OpenError::Other {
                message: format!("{} changed while it was being loaded", source.display()),
                fix: "write plugin files elsewhere and rename them into place".into(),
            });
        }
        set_read_only(&partial).map_err(|e| failed("protect the plugin copy", e))?;
        std::fs::rename(&partial, &copy).map_err(|e| failed("store the plugin copy", e))?;
        Ok(copy)
    }

    /// Opens the library in a child process first: if it crashes the child (a truncated
    /// or corrupt file can SIGBUS inside dlopen), this process never opens it.
    fn probe(&self, source: &Path, copy: &Path, configs: &[String]) -> Result<(), OpenError> {
        let Some(prober) = &self.prober else { return Ok(()) };
        let args: &[&str] = if self.probe_instances { &["--run-instance"] } else { &[] };
        let run = match run_probe(prober, copy, configs, args) {
            Ok(run) => run,
            Err(ProbeFailure::Spawn(error)) => {
                tracing::warn!(prober = %prober.display(), %error, "cannot start the plugin probe; opening without it");
                return Ok(());
            }
            Err(ProbeFailure::Hung) => {
                return Err(OpenError::Other { message: hung_message(source), fix: HUNG_FIX.into() });
            }
        };
        // Exit code 2 is a load error the probe reported cleanly; opening the library here
        // is then safe and gives the structured error.
        if run.status.success() || run.status.code() == Some(2) {
            return Ok(());
        }
        Err(OpenError::Other {
            message: format!("{}; it is probably truncated or corrupt", crashed_message(source, &run)),
            fix: "rebuild the plugin and write it completely (e.g. to a temporary name, then rename it into place)"
                .into(),
        })
    }
}

enum OpenError {
    Load(LoadError),
    Other { message: String, fix: String },
}

/// The fix for a library built against another ABI.
fn abi_fix() -> String {
    format!(
        "rebuild the plugin against plugin-abi {}.x, the ABI this host speaks (see docs/PLUGIN_ABI.md)",
        plugin_abi::ABI_VERSION.split('.').next().unwrap_or_default()
    )
}

fn refused_open(error: OpenError) -> Refused {
    match error {
        OpenError::Load(error) => {
            let fix = match &error {
                LoadError::IncompatibleAbi { .. } => &abi_fix(),
                LoadError::NotAPlugin { .. } => "point path at a library built with plugin_abi::export_plugin!",
                LoadError::MissingDependency { .. } => {
                    "install (or upgrade) the system library that provides the symbol, or rebuild the plugin against the one installed"
                }
                LoadError::Open { .. } => "check that the file is a complete shared library for this platform",
            };
            let detail = match &error {
                LoadError::IncompatibleAbi { detail, .. } => Some(detail.clone()),
                _ => None,
            };
            Refused { detail, ..Refused::new(error.to_string(), fix) }
        }
        OpenError::Other { message, fix } => Refused::new(message, fix),
    }
}

/// Why a library was refused: what is wrong with it and how to fix it.
struct Refused {
    message: String,
    fix: String,
    /// The fault is the pin (`plugins.NAME.sha256`), not the file.
    pin: bool,
    /// abi_stable's full layout report, for debug logs.
    detail: Option<String>,
}

impl Refused {
    fn new(message: impl Into<String>, fix: impl Into<String>) -> Refused {
        Refused { message: message.into(), fix: fix.into(), pin: false, detail: None }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.fix)
    }
}

/// The largest library this host opens. Real plugins are a few MiB (tens with debug
/// info); the bound keeps a wrong path (a device, an endless or sparse file) from being
/// hashed and copied for ever.
pub const MAX_LIBRARY_BYTES: u64 = 512 * 1024 * 1024;

/// The size of the library at `path`, after checking (following symlinks) that it is a
/// regular file of at most [`MAX_LIBRARY_BYTES`]: a FIFO, device or directory is refused
/// before anything opens it (opening a FIFO blocks, reading /dev/zero never ends).
pub fn plugin_file_size(path: &Path) -> Result<u64, String> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|error| format!("cannot read plugin library {shown}: {error}"))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if is_fifo_or_device(&kind) {
            "a FIFO, socket or device"
        } else {
            "not a regular file"
        };
        return Err(format!("{shown} is {what}, not a plugin library"));
    }
    if metadata.len() > MAX_LIBRARY_BYTES {
        return Err(format!(
            "{shown} is {} MiB, larger than any plugin library this host opens ({} MiB)",
            metadata.len() / (1024 * 1024),
            MAX_LIBRARY_BYTES / (1024 * 1024)
        ));
    }
    Ok(metadata.len())
}

#[cfg(unix)]
fn is_fifo_or_device(kind: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device()
}

#[cfg(not(unix))]
fn is_fifo_or_device(_: &std::fs::FileType) -> bool {
    false
}

fn default_cache_dir() -> PathBuf {
    #[cfg(unix)]
    let user = {
        // Another user's directory of the same name is refused by create_private_dir.
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| "user".into())
    };
    #[cfg(not(unix))]
    let user = "user";
    std::env::temp_dir().join(format!("prism-plugins-{user}"))
}

#[cfg(unix)]
fn set_read_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o500))
}

#[cfg(not(unix))]
fn set_read_only(path: &Path) -> std::io::Result<()> {
    let mut permissions = std::fs::metadata(path)?.permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(path, permissions)
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

/// The SHA-256 of a plugin library. Only a regular file of at most
/// [`MAX_LIBRARY_BYTES`] is read, and never past that size, so a path swapped for a FIFO,
/// a device or an endless file fails at once instead of blocking a reload (and shutdown).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    plugin_file_size(path)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidInput, message))?;
    let file = open_nonblocking(path)?;
    // The path may have been swapped between the check and the open: check the handle.
    let metadata = file.metadata()?;
    if !metadata.is_file() || metadata.len() > MAX_LIBRARY_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file of bounded size",
        ));
    }
    let mut file = file.take(MAX_LIBRARY_BYTES + 1);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > MAX_LIBRARY_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the file grew past the size limit",
            ));
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}
