//! `prism`: serve the gateway, validate a config, or describe plugins and patterns.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use plugin_abi::host::Plugin;
use plugin_abi::ErrorCode;
use prism_host::config::Config;
use prism_host::gateway::Gateway;
use prism_host::reload::Reloader;
use prism_host::{cli, resolve, server, watch};

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
    Plugins {
        /// Plugin library files.
        paths: Vec<PathBuf>,
        /// Config whose plugins to describe when no paths are given.
        #[arg(long, default_value = "plugins.toml")]
        config: PathBuf,
    },
    /// Print the patterns, their slots and the interfaces each slot requires.
    Patterns,
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
    /// before opening it itself (exit 0 = it loads, 2 = a clean load error).
    #[command(hide = true)]
    ProbePlugin { path: PathBuf },
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
        Command::Plugins { paths, config } => plugins(paths, &config),
        Command::Patterns => {
            print!("{}", cli::render_patterns());
            ExitCode::SUCCESS
        }
        Command::Status { server } => admin_call(&server, false),
        Command::Reload { server } => admin_call(&server, true),
        Command::ProbePlugin { path } => match Plugin::load(&path) {
            Ok(plugin) => {
                println!("{} {}", plugin.metadata().name, plugin.metadata().version);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}

fn load_config(file: &std::path::Path) -> Result<(resolve::Resolved, Arc<resolve::Loader>), ExitCode> {
    let config = Config::load(file).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let server = &config.contents.server;
    let loader = Arc::new(resolve::Loader::for_this_process(
        server.plugin_cache_dir.clone(),
        server.max_library_loads,
    ));
    let resolved = resolve::resolve(config, &loader).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok((resolved, loader))
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
    match load_config(file) {
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

fn plugins(paths: Vec<PathBuf>, config: &std::path::Path) -> ExitCode {
    let paths = if paths.is_empty() {
        match Config::load(config) {
            Ok(config) => config.contents.plugins.values().map(|entry| config.plugin_path(entry)).collect(),
            Err(errors) => {
                eprint!("{errors}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    } else {
        paths
    };
    let mut failed = false;
    for (index, path) in paths.iter().enumerate() {
        if index > 0 {
            println!();
        }
        match Plugin::load(path) {
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
    let (mut resolved, loader) = match load_config(&args.config) {
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
