//! `cargo xtask …`: the project's automation, in Rust so it needs nothing installed.
//!
//!   cargo xtask serve   build the workspace and run the gateway with ./plugins.toml
//!   cargo xtask build   build the workspace and the fixture plugins of the ABI workspaces
//!   cargo xtask test    build everything the tests load (plugins, fixtures, binaries), run all tests
//!   cargo xtask ci      what CI runs: format and lint checks, then `test`
//!   cargo xtask bench [memstore|redis|postgres|nats|kafka]
//!                       release build; gateway vs bare-tonic baseline on the same backend,
//!                       with prism-load and h2load
//!   cargo xtask bench overhead  KV Get on the do-nothing responder, bare tonic, the gateway off and each feature alone
//!   cargo xtask bench compression  KV Get of 1 KiB, 64 KiB and 1 MiB JSON-like values: bytes and CPU, none/gzip/zstd
//!   cargo xtask bench default  the shipped plugins.toml (SQLite, idempotency, claim check) vs memstore on one gateway
//!   cargo xtask bench reload  p99 of a KV load while the memstore library is swapped 10 times
//!   cargo xtask bench multicast  register / Enumerate / Multicast on memstore and redis+nats
//!   cargo xtask bench security   KV Get with TLS + JWT vs plaintext, and new connections/s
//!   cargo xtask bench metrics    KV Get with metrics recorded and scraped vs off
//!   cargo xtask bench tracing    KV Get with every call traced and exported vs no [tracing]
//!   cargo xtask bench idempotency  Set with a fresh idempotency token vs without
//!   cargo xtask bench objects    100 MiB SetStream/GetStream through a claim check vs S3 direct
//!   cargo xtask bench gateways   KV throughput through 1, 2 and 3 gateways over the Redis Cluster
//!   cargo xtask bench multicast-gateways  Multicast to subscribers on the same vs another gateway
//!   cargo xtask bench isolation  KV Get on memstore and Redis, in process vs isolation = "process"
//!   cargo xtask bench sandbox    KV Get on memstore and Redis in plugin processes, sandbox off vs on
//!   cargo xtask bench-abi  criterion micro-benchmark of a call across the plugin ABI
//!   cargo xtask dist [--debug] [--out DIR]
//!                       package bin/, plugins/, plugins.toml, README, LICENSE, SHA256SUMS as .tar.gz

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(message) = services::ensure_build_prerequisites() {
        eprintln!("xtask: {message}");
        return ExitCode::FAILURE;
    }
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("build") => build_all(),
        Some("test") => test(&args[1..]),
        Some("ci") => ci(),
        Some("bench") if args.get(1).map(String::as_str) == Some("overhead") => overhead::overhead(),
        Some("bench") if args.get(1).map(String::as_str) == Some("compression") => overhead::compression(),
        Some("bench") if args.get(1).map(String::as_str) == Some("default") => overhead::default_config(),
        Some("bench") if args.get(1).map(String::as_str) == Some("reload") => bench::reload_under_load(),
        Some("bench") if args.get(1).map(String::as_str) == Some("multicast") => bench::multicast(),
        Some("bench") if args.get(1).map(String::as_str) == Some("security") => bench::security(),
        Some("bench") if args.get(1).map(String::as_str) == Some("metrics") => bench::metrics(),
        Some("bench") if args.get(1).map(String::as_str) == Some("tracing") => bench::tracing(),
        Some("bench") if args.get(1).map(String::as_str) == Some("idempotency") => bench::idempotency(),
        Some("bench") if args.get(1).map(String::as_str) == Some("objects") => bench::objects(),
        Some("bench") if args.get(1).map(String::as_str) == Some("gateways") => bench::gateways(),
        Some("bench") if args.get(1).map(String::as_str) == Some("isolation") => bench::isolation(),
        Some("bench") if args.get(1).map(String::as_str) == Some("sandbox") => bench::sandbox(),
        Some("bench") if args.get(1).map(String::as_str) == Some("multicast-gateways") => {
            bench::multicast_across_gateways()
        }
        Some("bench") => {
            bench::Backend::parse(args.get(1).map(String::as_str)).and_then(bench::gateway_vs_baseline)
        }
        Some("dist") => dist::dist(&args[1..]),
        Some("bench-abi") => bench::abi(),
        _ => {
            eprintln!("usage: cargo xtask <serve [prism serve args…] | build | test [cargo test args…] | ci | bench [memstore|sqlite|redis|postgres|nats|kafka|overhead|compression|default|reload|multicast|security|metrics|tracing|idempotency|objects|gateways|isolation|sandbox|multicast-gateways] | bench-abi | dist [--debug] [--out DIR]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

mod bench;
mod dist;
mod overhead;
mod services;

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

pub(crate) fn run(mut command: Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    eprintln!("xtask: running {shown}");
    let status = command.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// Builds every crate, including the plugin and fixture cdylibs the tests load and the
/// `prism` binary they start (`cargo test` alone builds neither).
fn build_all() -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "--workspace"]);
    run(build)?;
    // The plugins built against the frozen plugin-abi releases and against a pretend next
    // minor release live in workspaces of their own (their plugin-abi builds would clash
    // with the current one) and build into the same target dir.
    for fixture in [
        "tests/fixtures/abi-1.0/Cargo.toml",
        "tests/fixtures/abi-1.1/Cargo.toml",
        "tests/fixtures/abi-1.2/Cargo.toml",
        "tests/fixtures/abi-next/Cargo.toml",
    ] {
        let mut build = cargo();
        build.args(["build", "--manifest-path", fixture, "--target-dir", "target"]);
        run(build)?;
    }
    Ok(())
}

fn serve(args: &[String]) -> Result<(), String> {
    build_all()?;
    let mut prism = Command::new(workspace_root().join("target/debug/prism"));
    prism.current_dir(workspace_root()).arg("serve").args(args);
    run(prism)
}

fn test(args: &[String]) -> Result<(), String> {
    services::ensure_redis()?;
    services::ensure_redis_cluster()?;
    services::ensure_postgres()?;
    services::ensure_nats()?;
    services::ensure_kafka()?;
    services::ensure_s3()?;
    services::ensure_test_programs()?;
    build_all()?;
    let mut test = cargo();
    // The services are up: a test that cannot reach one must fail, not skip.
    test.args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("PRISM_REQUIRE_BACKENDS", "1")
        .stdout(Stdio::piped());
    eprintln!("xtask: running {test:?}");
    let mut child = test.spawn().map_err(|e| format!("cannot run cargo test: {e}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            passed += count_before(counts, " passed");
            failed += count_before(counts, " failed");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    // One closing line for the whole run: cargo's last line is often a doc-test crate with 0 tests.
    println!("tests: {passed} passed, {failed} failed");
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test failed with {status}"))
    }
}

/// The number just before `label` in a `test result:` line, e.g. `3` in `ok. 3 passed;`.
fn count_before(line: &str, label: &str) -> u64 {
    line.find(label)
        .and_then(|end| line[..end].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run(clippy)?;
    test(&[])
}
