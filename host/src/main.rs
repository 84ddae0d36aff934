//! `prism`: serve the gateway, validate a config, or describe plugins and patterns.
//! This file is the argument types and the dispatch; each command is a function in
//! `prism_host::commands` returning a typed error that carries its exit code (2 for bad
//! input, 1 for a failure), reported here once.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use prism_host::commands;
use prism_host::observe::logs::WithCall;

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
    /// How log lines are written to stderr: `text` for people, `json` (one object per
    /// line, with the call's request id) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PRISM_LOG_FORMAT")]
    log_format: LogFormat,
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
    Status(AdminArgs),
    /// Ask a running server to re-read its config and plugin files now.
    Reload(AdminArgs),
    /// Claim checks: the objects holding large values and payloads.
    ClaimCheck {
        #[command(subcommand)]
        command: ClaimCheckCommand,
    },
    /// Credentials for `[auth]`.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
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
        /// Print the metadata and each config's verdict as JSON (for process isolation).
        #[arg(long)]
        report: bool,
        /// Enter the plugin-process sandbox before opening the library.
        #[arg(long)]
        sandbox: bool,
    },
    /// Internal: serve one plugin instance for a gateway (`isolation = "process"`).
    #[command(hide = true)]
    PluginHost {
        /// The gateway's socket.
        #[arg(long)]
        connect: PathBuf,
        #[arg(long, default_value_t = 0)]
        memory_limit_mb: u64,
        #[arg(long, default_value_t = 0)]
        cpu_time_limit_s: u64,
        #[arg(long, default_value_t = 4096)]
        max_open_files: u64,
        #[arg(long)]
        user: Option<String>,
        /// Run without the sandbox (`sandbox = "off"`).
        #[arg(long)]
        no_sandbox: bool,
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

/// How `prism status` and `prism reload` reach the server and prove who they are
/// (credentials come from the environment, so they stay out of `ps`).
#[derive(Args)]
struct AdminArgs {
    /// The server's address.
    #[arg(long, default_value = "http://127.0.0.1:8980")]
    server: String,
    /// A JWT sent as `authorization: Bearer …` (when the server has `[auth.jwt]`).
    #[arg(long, env = "PRISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// An API key sent as `x-api-key` (when the server has `[[auth.api_keys]]`).
    #[arg(long, env = "PRISM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificate to verify a TLS server with (use an https:// --server).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PEM client certificate to present (mTLS), with --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

impl From<AdminArgs> for commands::AdminTarget {
    fn from(args: AdminArgs) -> Self {
        commands::AdminTarget {
            server: args.server,
            token: args.token,
            api_key: args.api_key,
            ca: args.ca,
            client_identity: args.cert.zip(args.key),
        }
    }
}

#[derive(Subcommand)]
enum ClaimCheckCommand {
    /// Find the objects nothing refers to any more (older than
    /// server.claim_check_grace_ms) on a running server; with --apply, delete them.
    /// Without it, a dry run: nothing is deleted.
    Sweep {
        /// One namespace (default: every namespace with a claim_check slot).
        #[arg(long)]
        namespace: Option<String>,
        /// Delete what is found.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        target: AdminArgs,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print a new random API key and the `[[auth.api_keys]]` entry (its SHA-256) to
    /// paste into plugins.toml; the key itself is shown once and stored nowhere.
    NewApiKey {
        /// The service account's name, e.g. billing-batch.
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(|| prism_host::secrets::RedactingWriter(std::io::stderr()));
    prism_host::isolation::log_children_as(match cli.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    });
    match cli.log_format {
        LogFormat::Text => {
            // Colour codes only for a person at a terminal, not in files and log collectors.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let format = tracing_subscriber::fmt::format().with_ansi(ansi);
            logs.with_ansi(ansi).event_format(WithCall::text(format)).init()
        }
        LogFormat::Json => {
            let format = tracing_subscriber::fmt::format().json();
            logs.json().event_format(WithCall::json(format)).init()
        }
    }
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => commands::serve(&args.config, args.listen, !args.no_watch),
        Command::Validate { file } => commands::validate(&file),
        Command::Plugins { command: Some(PluginsCommand::Find { interfaces, dir, config }), .. } => {
            commands::find_plugins(&interfaces, dir.as_deref(), &config)
        }
        Command::Plugins { command: None, paths, config } => commands::plugins(paths, &config),
        Command::Patterns { name: None, .. } => commands::list_patterns(),
        Command::Patterns { name: Some(name), config, plugins } => {
            commands::describe_pattern(&name, config, &plugins)
        }
        Command::Generate { what: GenerateCommand::Config { pattern, slots, namespace, config } } => {
            commands::generate_config(&pattern, &slots, &namespace, config)
        }
        Command::Status(args) => commands::status(&args.into()),
        Command::Reload(args) => commands::reload(&args.into()),
        Command::ClaimCheck { command: ClaimCheckCommand::Sweep { namespace, apply, target } } => {
            commands::sweep_claim_checks(&target.into(), namespace.as_deref().unwrap_or_default(), apply)
        }
        Command::Auth { command: AuthCommand::NewApiKey { name } } => commands::new_api_key(&name),
        Command::ProbePlugin { path, configs_on_stdin, run_instance, report, sandbox } => {
            commands::probe_plugin(&path, configs_on_stdin, run_instance, report, sandbox)
        }
        Command::PluginHost {
            connect,
            memory_limit_mb,
            cpu_time_limit_s,
            max_open_files,
            user,
            no_sandbox,
        } => {
            let limits = prism_host::isolation::child::ChildLimits {
                memory_limit_mb,
                cpu_time_limit_s,
                max_open_files,
                user,
                sandbox: !no_sandbox,
            };
            prism_host::isolation::child::run(connect, limits).map_err(commands::CommandError::Failed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", error.report());
            ExitCode::from(error.exit_code())
        }
    }
}
