//! Brings up the backends the tests talk to, on loopback: reuse a running one, start an
//! installed one, or install it from Debian's packages first (as root, e.g. in CI).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::run;

fn reachable(address: &str) -> bool {
    let address: SocketAddr = address.parse().expect("a literal socket address");
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        return Err(format!(
            "{} missing: install them (sudo apt-get install {})",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-qq"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

/// The C libraries the workspace links from the system: OpenSSL, for librdkafka's TLS
/// and SASL/SCRAM in the kafka plugin, and SQLite, which the sqlite plugin must share
/// with every other build of itself in the process (so it cannot bundle its own). Both
/// are needed before any test or gateway can run.
pub fn ensure_build_prerequisites() -> Result<(), String> {
    let has = |library: &str| {
        Command::new("pkg-config").args(["--exists", library]).status().is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [("openssl", "libssl-dev"), ("sqlite3", "libsqlite3-dev")]
        .into_iter()
        .filter(|(library, _)| !has(library))
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing pkg-config and {} (C library headers the plugins link)",
        missing.join(" and ")
    );
    apt_install(&[&["pkg-config"][..], &missing].concat())
}

/// Programs the tests run, from Debian's packages: Chromium (the console test loads the
/// page headless), the Prometheus server (it scrapes a gateway) and the sqlite3 shell
/// (it checks a database file's integrity).
pub fn ensure_test_programs() -> Result<(), String> {
    let missing: Vec<&str> =
        ["chromium", "prometheus", "sqlite3"].into_iter().filter(|program| !installed(program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} (for the console, Prometheus and SQLite tests)", missing.join(", "));
    apt_install(&missing)
}

fn wait_for(address: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reachable(address) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what} did not come up on {address}"))
}

pub fn ensure_redis() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:6379";
    if reachable(ADDRESS) {
        return Ok(());
    }
    if !installed("redis-server") {
        apt_install(&["redis-server"])?;
    }
    let mut start = Command::new("redis-server");
    start.args([
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    run(start)?;
    wait_for(ADDRESS, "redis-server")
}

/// PostgreSQL on 127.0.0.1:5432 with trust auth for loopback and a database `test`.
pub fn ensure_postgres() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:5432";
    if !reachable(ADDRESS) {
        if !installed("pg_ctlcluster") {
            apt_install(&["postgresql"])?;
        }
        let versions =
            std::fs::read_dir("/etc/postgresql").map_err(|e| format!("no PostgreSQL cluster: {e}"))?;
        let version = versions
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .max()
            .ok_or("no PostgreSQL cluster under /etc/postgresql")?;
        trust_loopback(&format!("/etc/postgresql/{version}/main/pg_hba.conf"))?;
        let mut start = Command::new("pg_ctlcluster");
        start.args(["--skip-systemctl-redirect", &version, "main", "start"]);
        run(start)?;
        wait_for(ADDRESS, "PostgreSQL")?;
    }
    let exists = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-Atc",
            "SELECT 1 FROM pg_database WHERE datname = 'test'",
        ])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !exists.status.success() {
        return Err(format!(
            "cannot connect to PostgreSQL as postgres on {ADDRESS} without a password: {}",
            String::from_utf8_lossy(&exists.stderr).trim()
        ));
    }
    if !String::from_utf8_lossy(&exists.stdout).contains('1') {
        let mut create = Command::new("psql");
        create.args(["-h", "127.0.0.1", "-U", "postgres", "-c", "CREATE DATABASE test"]);
        run(create)?;
    }
    Ok(())
}

/// Lets local test clients in without a password (only on loopback).
fn trust_loopback(pg_hba: &str) -> Result<(), String> {
    let current = std::fs::read_to_string(pg_hba).map_err(|e| format!("cannot read {pg_hba}: {e}"))?;
    let line = "host all all 127.0.0.1/32 trust";
    if current.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line) {
        return Ok(());
    }
    std::fs::write(pg_hba, format!("{line}\n{current}")).map_err(|e| format!("cannot write {pg_hba}: {e}"))
}

/// A Redis Cluster of three masters on 127.0.0.1:7001-7003 (no replicas), from the same
/// redis-server, each node in a temporary directory; created once, reused while it runs.
pub fn ensure_redis_cluster() -> Result<(), String> {
    const PORTS: [u16; 3] = [7001, 7002, 7003];
    let state = || {
        Command::new("redis-cli")
            .args(["-p", "7001", "cluster", "info"])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).contains("cluster_state:ok"))
            .unwrap_or(false)
    };
    if reachable("127.0.0.1:7001") && state() {
        return Ok(());
    }
    // Nodes left from a cluster that never formed (or lost a node) refuse to join a new
    // one ("node is not empty"): stop them and start over.
    for port in PORTS {
        if reachable(&format!("127.0.0.1:{port}")) {
            let mut stop = Command::new("redis-cli");
            stop.args(["-p", &port.to_string(), "shutdown", "nosave"]);
            let _ = stop.output();
            let deadline = Instant::now() + Duration::from_secs(10);
            while reachable(&format!("127.0.0.1:{port}")) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for port in PORTS {
        let dir = std::env::temp_dir().join(format!("prism-redis-cluster-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut start = Command::new("redis-server");
        start.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]);
        start.args([
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
        ]);
        start.arg("--dir").arg(&dir);
        run(start)?;
        wait_for(&format!("127.0.0.1:{port}"), "redis-server (cluster node)")?;
    }
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
    create.args(["--cluster-replicas", "0", "--cluster-yes"]);
    run(create)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state() {
        if Instant::now() > deadline {
            return Err("the Redis Cluster on 127.0.0.1:7001-7003 did not reach cluster_state:ok".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// NATS with JetStream on 127.0.0.1:4222.
pub fn ensure_nats() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:4222";
    if reachable(ADDRESS) {
        return Ok(());
    }
    if !installed("nats-server") {
        apt_install(&["nats-server"])?;
    }
    let store = std::env::temp_dir().join("prism-nats");
    let mut start = Command::new("sh");
    start.args([
        "-c",
        &format!("nohup nats-server -a 127.0.0.1 -p 4222 -js -sd {} > /dev/null 2>&1 &", store.display()),
    ]);
    run(start)?;
    wait_for(ADDRESS, "nats-server")
}

/// A Kafka-compatible broker on 127.0.0.1:9092: tansu with in-memory storage, installed
/// from crates.io when missing (a release build of several minutes, done once per machine).
pub fn ensure_kafka() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:9092";
    if reachable(ADDRESS) {
        return Ok(());
    }
    let tansu = tansu_binary();
    if !tansu.exists() && !installed("tansu") {
        eprintln!(
            "xtask: installing tansu (Kafka-compatible broker) with cargo; this takes several minutes once"
        );
        let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        install.args(["install", "--locked", "tansu", "--features", "dynostore"]);
        run(install)?;
    }
    let program = if tansu.exists() { tansu.display().to_string() } else { "tansu".into() };
    let log = std::env::temp_dir().join("prism-tansu.log");
    let mut start = Command::new("sh");
    start.args([
        "-c",
        &format!(
            "nohup {program} broker --listener-url tcp://{ADDRESS} --advertised-listener-url tcp://{ADDRESS} \
             --storage-engine memory://tansu/ > {} 2>&1 &",
            log.display()
        ),
    ]);
    run(start)?;
    wait_for(ADDRESS, "tansu").map_err(|e| format!("{e} (its log: {})", log.display()))
}

/// An S3-compatible server on 127.0.0.1:9000 with the bucket `prism-test` and the
/// credentials the tests use: s3s-fs (objects as files under a temporary directory),
/// installed from crates.io when missing. Chosen over moto: one `cargo install` like
/// tansu (no Python environment), it checks SigV4 signatures, and it implements the
/// multipart uploads large objects need.
pub fn ensure_s3() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:9000";
    if reachable(ADDRESS) {
        return Ok(());
    }
    let s3s = cargo_binary("s3s-fs");
    if !s3s.exists() && !installed("s3s-fs") {
        eprintln!(
            "xtask: installing s3s-fs (S3-compatible test server) with cargo; this takes a few minutes once"
        );
        let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        install.args(["install", "--locked", "s3s-fs", "--version", "0.14.1", "--features", "binary"]);
        run(install)?;
    }
    let program = if s3s.exists() { s3s.display().to_string() } else { "s3s-fs".into() };
    let root = std::env::temp_dir().join("prism-s3");
    // A bucket is a directory of the root.
    std::fs::create_dir_all(root.join("prism-test"))
        .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let log = std::env::temp_dir().join("prism-s3.log");
    let mut start = Command::new("sh");
    start.args([
        "-c",
        &format!(
            "nohup {program} --host 127.0.0.1 --port 9000 --access-key prism --secret-key prism-secret {} > {} 2>&1 &",
            root.display(),
            log.display()
        ),
    ]);
    run(start)?;
    wait_for(ADDRESS, "s3s-fs").map_err(|e| format!("{e} (its log: {})", log.display()))
}

/// Where `cargo install` puts `program`.
fn cargo_binary(program: &str) -> std::path::PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cargo")))
        .unwrap_or_default();
    cargo_home.join("bin").join(program)
}

fn tansu_binary() -> std::path::PathBuf {
    cargo_binary("tansu")
}
