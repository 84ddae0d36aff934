//! `prism`: serve the gateway, validate a config, or describe plugins and patterns.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use plugin_abi::host::Plugin;
use plugin_abi::ErrorCode;
use prism_host::config::Config;
use prism_host::gateway::Gateway;
use prism_host::reload::Reloader;
use prism_host::{cli, loader, resolve, server, watch};

/// Exit code for bad input: an invalid config, an unusable plugin file, bad flags.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "prism",
    version,
    about = "Prism data access gateway",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (the default command).
    Serve(ServeArgs),
    /// Check a config file, loading its plugins, without serving.
    Validate {
        /// The config file to check.
        file: PathBuf,
    },
    /// Print the metadata table of plugin libraries (default: those in the config).
    #[command(args_conflicts_with_subcommands = true)]
    Plugins {
        #[command(subcommand)]
        command: Option<PluginsCommand>,
        /// Plugin library files.
        paths: Vec<PathBuf>,
        /// Config whose plugins to describe when no paths are given.
        #[arg(long, default_value = "plugins.toml")]
        config: PathBuf,
    },
    /// Print the patterns, their slots and the interfaces each slot requires; with a
    /// NAME, which configured (or given) plugins fit each of its slots.
    Patterns {
        name: Option<String>,
        /// Config whose plugins to try against the slots (default: ./plugins.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// More plugin libraries to try.
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Generate configuration.
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
    /// Show a running server's plugins (versions, file hashes) and its last reloads.
    Status {
        /// The server's address.
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        server: String,
    },
    /// Ask a running server to re-read its config and plugin files now.
    Reload {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        server: String,
    },
    /// Open a plugin library and exit: how the host tries a library in a child process
    /// before opening it itself (exit 0 = it loads, 2 = a clean error). With
    /// `--configs-on-stdin` (a JSON array of slot configs, kept off the command line
    /// because they may hold passwords) it also checks each config, and with
    /// `--run-instance` runs one instance of the first: create, health, shutdown.
    #[command(hide = true)]
    ProbePlugin {
        path: PathBuf,
        #[arg(long)]
        configs_on_stdin: bool,
        #[arg(long)]
        run_instance: bool,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the plugins that implement every given interface.
    Find {
        /// An interface the plugin must implement (repeat for several).
        #[arg(long = "interface", required = true, value_name = "INTERFACE")]
        interfaces: Vec<String>,
        /// Look at the libraries in this directory instead of the config's plugins.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "plugins.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Print a plugins.toml fragment binding plugins to a pattern's slots, refusing
    /// combinations that do not fit.
    Config {
        #[arg(long)]
        pattern: String,
        /// SLOT=PLUGIN, where PLUGIN is a plugin of the config or a library path (repeat per slot).
        #[arg(long = "slot", value_name = "SLOT=PLUGIN", required = true)]
        slots: Vec<String>,
        #[arg(long)]
        namespace: String,
        /// Config whose plugin names PLUGIN may refer to (default: ./plugins.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The config file.
    #[arg(long, default_value = "plugins.toml")]
    config: PathBuf,
    /// Listen address, overriding server.listen (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Do not watch the config and plugin files; reload only through AdminService.Reload
    /// (`prism reload`).
    #[arg(long)]
    no_watch: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::Validate { file } => validate(&file),
        Command::Plugins { command: Some(PluginsCommand::Find { interfaces, dir, config }), .. } => {
            find_plugins(&interfaces, dir.as_deref(), &config)
        }
        Command::Plugins { command: None, paths, config } => plugins(paths, &config),
        Command::Patterns { name: None, .. } => {
            print!("{}", cli::render_patterns());
            ExitCode::SUCCESS
        }
        Command::Patterns { name: Some(name), config, plugins } => describe_pattern(&name, config, &plugins),
        Command::Generate { what: GenerateCommand::Config { pattern, slots, namespace, config } } => {
            generate_config(&pattern, &slots, &namespace, config)
        }
        Command::Status { server } => admin_call(&server, false),
        Command::Reload { server } => admin_call(&server, true),
        Command::ProbePlugin { path, configs_on_stdin, run_instance } => {
            probe_plugin(&path, configs_on_stdin, run_instance)
        }
    }
}

/// The child side of the loader's probe: everything it does runs here first, so a
/// library that crashes does so in this process.
fn probe_plugin(path: &std::path::Path, configs_on_stdin: bool, run_instance: bool) -> ExitCode {
    let plugin = match Plugin::load(path) {
        Ok(plugin) => plugin,
        Err(error) => return invalid(error),
    };
    let configs: Vec<String> = if configs_on_stdin {
        match serde_json::from_reader(std::io::stdin()) {
            Ok(configs) => configs,
            Err(error) => return invalid(format!("the probe's configs: {error}")),
        }
    } else {
        Vec::new()
    };
    for config in &configs {
        if let Err(error) = plugin.check_config(config) {
            return invalid(format!("config rejected: {}", error.message()));
        }
    }
    // An exclusive plugin's running instance holds what a second one would need.
    if let Some(config) = configs.first().filter(|_| run_instance && !plugin.metadata().exclusive) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => return invalid(format!("cannot start the async runtime: {error}")),
        };
        let lifecycle = async {
            let instance = plugin.create(config).await.map_err(|e| e.message().to_owned())?;
            instance.health().await;
            instance.shutdown().await;
            Ok::<(), String>(())
        };
        match runtime.block_on(async { tokio::time::timeout(PROBE_INSTANCE_TIMEOUT, lifecycle).await }) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return invalid(format!("creating an instance failed: {message}")),
            // Slow to connect is not corrupt: the host finds out for itself.
            Err(_) => {}
        }
    }
    println!("{} {}", plugin.metadata().name, plugin.metadata().version);
    ExitCode::SUCCESS
}

/// How long the probe gives one instance to start, answer health and shut down.
const PROBE_INSTANCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Loads and resolves a config. `serving`: the probe child also runs one instance of
/// each plugin (`validate` never connects anywhere, so it does not).
fn load_config(
    file: &std::path::Path,
    serving: bool,
) -> Result<(resolve::Resolved, Arc<loader::Loader>), ExitCode> {
    let config = Config::load(file).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let loader = Arc::new(loader_for(Some(&config)).probing_instances(serving));
    let resolved = resolve::resolve(config, &loader).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok((resolved, loader))
}

/// The loader every command opens libraries with: the same file, permission and pin
/// checks, and the same probe child, as `serve` (no signal from a bad file reaches the CLI).
fn loader_for(config: Option<&Config>) -> loader::Loader {
    let server = config.map(|c| c.contents.server.clone()).unwrap_or_default();
    loader::Loader::for_this_process(server.plugin_cache_dir, server.max_library_loads)
        .requiring_pins(server.require_pins)
}

/// `prism status` / `prism reload`: one AdminService call to a running server.
fn admin_call(server: &str, reload: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        use prism_host::api::admin_service_client::AdminServiceClient;
        let mut client = match AdminServiceClient::connect(server.to_owned()).await {
            Ok(client) => client,
            Err(error) => {
                eprintln!("error: cannot reach {server}: {error} (is `prism serve` running there?)");
                return ExitCode::FAILURE;
            }
        };
        if reload {
            match client.reload(prism_host::api::ReloadRequest {}).await {
                Ok(reply) => {
                    let outcome = reply.into_inner().outcome.unwrap_or_default();
                    print!("{}", cli::render_reload(&outcome));
                    if outcome.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(status) => {
                    eprintln!("error: {}", status.message());
                    ExitCode::FAILURE
                }
            }
        } else {
            match client.get_reload_status(prism_host::api::GetReloadStatusRequest {}).await {
                Ok(reply) => {
                    print!("{}", cli::render_status(&reply.into_inner()));
                    ExitCode::SUCCESS
                }
                Err(status) => {
                    eprintln!("error: {}", status.message());
                    ExitCode::FAILURE
                }
            }
        }
    })
}

fn validate(file: &std::path::Path) -> ExitCode {
    match load_config(file, false) {
        Ok((resolved, _)) => {
            println!(
                "{}: ok ({} plugin{}, {} namespace{})",
                file.display(),
                resolved.plugins.len(),
                if resolved.plugins.len() == 1 { "" } else { "s" },
                resolved.namespaces.len(),
                if resolved.namespaces.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn invalid(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INVALID)
}

/// The plugins of a config, as registry candidates.
fn config_candidates(file: &std::path::Path) -> Result<Vec<cli::Candidate>, String> {
    let config = Config::load(file).map_err(|errors| errors.to_string().trim().to_owned())?;
    let loader = loader_for(Some(&config));
    let mut candidates = Vec::new();
    for (name, entry) in &config.contents.plugins {
        let plugin = loader
            .load_library(&config.plugin_path(entry), entry.sha256.as_deref())
            .map_err(|e| format!("plugin '{name}': {e}"))?;
        candidates.push(cli::Candidate {
            name: name.clone(),
            path: entry.path.display().to_string(),
            metadata: plugin.metadata().clone(),
        });
    }
    Ok(candidates)
}

fn library_candidate(path: &std::path::Path) -> Result<cli::Candidate, String> {
    let plugin = loader_for(None).load_library(path, None)?;
    let metadata = plugin.metadata().clone();
    Ok(cli::Candidate { name: metadata.name.clone(), path: path.display().to_string(), metadata })
}

/// The default config when none is named: ./plugins.toml if there is one.
fn default_config(config: Option<PathBuf>) -> Option<PathBuf> {
    config.or_else(|| Some(PathBuf::from("plugins.toml")).filter(|p| p.is_file()))
}

fn describe_pattern(name: &str, config: Option<PathBuf>, libraries: &[PathBuf]) -> ExitCode {
    let Some(pattern) = prism_host::patterns::find(name) else {
        return invalid(format!(
            "unknown pattern '{name}'; the patterns are: {}",
            prism_host::patterns::names().join(", ")
        ));
    };
    let mut candidates = Vec::new();
    if let Some(config) = default_config(config) {
        match config_candidates(&config) {
            Ok(found) => candidates.extend(found),
            Err(error) => return invalid(error),
        }
    }
    for library in libraries {
        match library_candidate(library) {
            Ok(candidate) => candidates.push(candidate),
            Err(error) => return invalid(error),
        }
    }
    print!("{}", cli::render_pattern(pattern, &candidates));
    ExitCode::SUCCESS
}

fn find_plugins(interfaces: &[String], dir: Option<&std::path::Path>, config: &std::path::Path) -> ExitCode {
    if let Some(unknown) = interfaces.iter().find(|i| plugin_abi::Interface::from_name(i).is_none()) {
        let known: Vec<&str> = plugin_abi::Interface::ALL.iter().map(|i| i.name()).collect();
        return invalid(format!("unknown interface '{unknown}'; the interfaces are: {}", known.join(", ")));
    }
    let candidates = match dir {
        Some(dir) => {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) => return invalid(format!("cannot read {}: {error}", dir.display())),
            };
            let mut libraries: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so" || e == "dylib"))
                .collect();
            libraries.sort();
            // Files that are not plugins are skipped, not fatal: a directory may hold both.
            libraries.iter().filter_map(|path| library_candidate(path).ok()).collect()
        }
        None => match config_candidates(config) {
            Ok(found) => found,
            Err(error) => return invalid(error),
        },
    };
    print!("{}", cli::render_find(interfaces, &candidates));
    ExitCode::SUCCESS
}

fn generate_config(pattern: &str, slots: &[String], namespace: &str, config: Option<PathBuf>) -> ExitCode {
    let Some(pattern) = prism_host::patterns::find(pattern) else {
        return invalid(format!(
            "unknown pattern '{pattern}'; the patterns are: {}",
            prism_host::patterns::names().join(", ")
        ));
    };
    let configured = match default_config(config) {
        Some(config) => match config_candidates(&config) {
            Ok(found) => found,
            Err(error) => return invalid(error),
        },
        None => Vec::new(),
    };
    let mut given = Vec::new();
    let mut bindings = Vec::new();
    for binding in slots {
        let Some((slot, plugin)) = binding.split_once('=') else {
            return invalid(format!("--slot {binding}: use SLOT=PLUGIN"));
        };
        if plugin.contains('/') || plugin.ends_with(".so") || plugin.ends_with(".dylib") {
            match library_candidate(std::path::Path::new(plugin)) {
                Ok(candidate) => given.push((slot.to_owned(), candidate)),
                Err(error) => return invalid(error),
            }
        } else {
            match configured.iter().find(|c| c.name == plugin) {
                Some(candidate) => bindings.push((slot.to_owned(), candidate)),
                None => {
                    let known: Vec<&str> = configured.iter().map(|c| c.name.as_str()).collect();
                    return invalid(format!(
                        "--slot {binding}: no plugin '{plugin}' in the config (known: {}); give a library path instead",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ));
                }
            }
        }
    }
    bindings.extend(given.iter().map(|(slot, candidate)| (slot.clone(), candidate)));
    match cli::generate_config(namespace, pattern, &bindings) {
        Ok(fragment) => {
            print!("{fragment}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("error: this combination does not fit pattern '{}':", pattern.name);
            for problem in problems {
                eprintln!("  {problem}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn plugins(paths: Vec<PathBuf>, config: &std::path::Path) -> ExitCode {
    let (libraries, loader) = if paths.is_empty() {
        match Config::load(config) {
            Ok(config) => {
                let libraries = config
                    .contents
                    .plugins
                    .values()
                    .map(|entry| (config.plugin_path(entry), entry.sha256.clone()))
                    .collect::<Vec<_>>();
                (libraries, loader_for(Some(&config)))
            }
            Err(errors) => {
                eprint!("{errors}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    } else {
        (paths.into_iter().map(|path| (path, None)).collect(), loader_for(None))
    };
    let mut failed = false;
    for (index, (path, pin)) in libraries.iter().enumerate() {
        if index > 0 {
            println!();
        }
        match loader.load_library(path, pin.as_deref()) {
            Ok(plugin) => print!("{}", cli::render_metadata(&path.display().to_string(), plugin.metadata())),
            Err(error) => {
                eprintln!("error: {error}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (mut resolved, loader) = match load_config(&args.config, true) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Some(listen) = args.listen {
        resolved.config.contents.server.listen = listen;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = resolved.config.contents.server.listen;
        let config_file = resolved.config.file.clone();
        let debounce = std::time::Duration::from_millis(resolved.config.contents.server.reload_debounce_ms);
        let gateway = match Gateway::start(resolved).await {
            Ok(gateway) => Arc::new(gateway),
            Err(error) => {
                eprintln!("error: {}: {error}", config_file.display());
                return if error.error.code() == ErrorCode::InvalidArgument {
                    ExitCode::from(EXIT_INVALID)
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        let reloader = Arc::new(Reloader::new(gateway.clone(), config_file.clone(), loader));
        if !args.no_watch {
            match watch::spawn(reloader.clone(), debounce) {
                Ok(_) => reloader.set_watching(true),
                Err(error) => tracing::warn!("{error}; reload with `prism reload` instead"),
            }
        }
        let listener = match server::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("error: {error}");
                gateway.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string());
        // Scripts and tests wait for this line to know the port (useful with --listen 127.0.0.1:0).
        println!("prism: serving on {address}");
        match server::serve(gateway, reloader, listener, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: the server failed: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
