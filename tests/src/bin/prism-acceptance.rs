//! Runs the acceptance suite of every interface a plugin declares, against that
//! plugin: `prism-acceptance path/to/libmyplugin.so --config 'url = "redis://…"'`
//! (repeat `--config` for more keys, or give the table in `--config-file FILE`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prism_acceptance::{run_suite, Target};

#[derive(Parser)]
#[command(name = "prism-acceptance", version, about = "Prove a Prism plugin keeps its interfaces' promises")]
struct Args {
    /// The plugin library (.so/.dylib).
    plugin: PathBuf,
    /// One key of the slot config, as TOML (e.g. 'url = "redis://127.0.0.1"'); repeat the
    /// flag for more keys.
    #[arg(long)]
    config: Vec<String>,
    /// The slot config as a TOML file (what goes under `[namespaces.NAME.slots.SLOT.config]`
    /// in plugins.toml); `--config` keys are added after it.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Run only these interfaces' suites (default: every declared interface).
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// `in_process` (the default), or `process`: each case's instance runs in its own
    /// `prism plugin-host` child, as a plugin with `isolation = "process"` does.
    #[arg(long, default_value = "in_process", value_parser = ["in_process", "process"])]
    isolation: String,
    /// The `prism` binary that hosts plugin processes (default: the one next to this
    /// runner, else `prism` on PATH).
    #[arg(long)]
    prism: Option<PathBuf>,
    /// Show the plugin's own log lines (with `--isolation process`, its processes'
    /// stderr) at this level among the results: error, warn, info, debug or trace.
    /// Default: none, so the results stay readable.
    #[arg(long, value_name = "LEVEL")]
    plugin_logs: Option<String>,
}

/// The slot config: the file's table, then each `--config` key, checked to be TOML here
/// so a mistake is named as the runner's input, not blamed on the plugin.
fn slot_config(args: &Args) -> Result<String, String> {
    let mut text = match &args.config_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --config-file {}: {e}", path.display()))?,
        None => String::new(),
    };
    for (index, key) in args.config.iter().enumerate() {
        if let Err(error) = key.parse::<toml::Table>() {
            let hint = if key.contains(',') {
                " (one key per --config: repeat the flag for each key instead of separating them with commas)"
            } else {
                ""
            };
            return Err(format!(
                "--config '{key}' (number {}) is not TOML: {}{hint}",
                index + 1,
                error.message()
            ));
        }
        text.push('\n');
        text.push_str(key);
    }
    text.parse::<toml::Table>().map_err(|error| {
        let source =
            args.config_file.as_ref().map_or("the --config keys".to_owned(), |p| p.display().to_string());
        format!("the slot config from {source} is not TOML: {}", error.message())
    })?;
    Ok(text)
}

/// The `prism` binary next to this one, else the first on PATH.
fn find_prism() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.with_file_name("prism");
    if beside.is_file() {
        return Some(beside);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("prism"))
        .find(|p| p.is_file())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match slot_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // Plugin processes inherit this; in process, no subscriber is installed at all.
    std::env::set_var("PRISM_LOG", args.plugin_logs.as_deref().unwrap_or("off"));
    if let Some(level) = &args.plugin_logs {
        tracing_subscriber::fmt().with_env_filter(level.as_str()).with_writer(std::io::stderr).init();
    }
    let mut target = match Target::load(&args.plugin, &config) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.isolation == "process" {
        let Some(prism) = args.prism.clone().or_else(find_prism) else {
            eprintln!("error: --isolation process needs the prism binary: pass --prism PATH");
            return ExitCode::from(2);
        };
        target = target.in_processes_of(&prism);
    }
    let metadata = target.plugin.metadata().clone();
    for wanted in &args.interfaces {
        if !metadata.interfaces.iter().any(|i| i.name() == wanted) {
            eprintln!("error: plugin '{}' does not declare interface {wanted}", metadata.name);
            return ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (mut passed, mut failed) = (0usize, 0usize);
    println!("plugin {} {} ({}, {})", metadata.name, metadata.version, args.plugin.display(), args.isolation);
    for interface in &metadata.interfaces {
        if !args.interfaces.is_empty() && !args.interfaces.iter().any(|w| w == interface.name()) {
            continue;
        }
        let report = runtime.block_on(run_suite(&target, *interface));
        for case in &report.passed {
            println!("  ok      {interface}::{case}");
        }
        for (case, message) in &report.failed {
            println!("  FAILED  {interface}::{case}: {message}");
        }
        passed += report.passed.len();
        failed += report.failed.len();
    }
    for unknown in &metadata.unknown_interfaces {
        println!("  skipped {unknown}: this suite does not know the interface");
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
