//! Runs the acceptance suite of every interface a plugin declares, against that
//! plugin: `prism-acceptance path/to/libmyplugin.so --config 'url = "redis://…"'`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prism_acceptance::{run_suite, Target};

#[derive(Parser)]
#[command(name = "prism-acceptance", version, about = "Prove a Prism plugin keeps its interfaces' promises")]
struct Args {
    /// The plugin library (.so/.dylib).
    plugin: PathBuf,
    /// The slot config to create instances with, as TOML text (e.g. 'url = "redis://127.0.0.1"').
    #[arg(long, default_value = "")]
    config: String,
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
    let mut target = match Target::load(&args.plugin, &args.config) {
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
