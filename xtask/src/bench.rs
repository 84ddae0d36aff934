//! Benchmarks measured against a baseline in the same run (figures go to docs/BENCHMARKS.md).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{cargo, run, workspace_root};

const GATEWAY: &str = "127.0.0.1:18980";
const BASELINE: &str = "127.0.0.1:18981";
/// Alternating rounds per comparison; medians are reported.
const ROUNDS: usize = 3;
const ROUNDS_ARG: &str = "3";

/// A server process started for a benchmark, killed on drop.
pub(crate) struct Background {
    child: Child,
}

impl Background {
    /// Starts `command` and waits for the line containing `ready` on its stdout.
    pub(crate) fn start(mut command: Command, ready: &str) -> Result<Background, String> {
        let shown = format!("{command:?}");
        let mut child =
            command.stdout(Stdio::piped()).spawn().map_err(|e| format!("cannot start {shown}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(ready) => break,
                Some(_) => continue,
                None => return Err(format!("{shown} exited before it was ready")),
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Background { child })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn release_binary(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn prism_load(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new(release_binary("prism-load"));
    command.args(args);
    run(command)
}

/// A pre-framed gRPC GetRequest{key: "load-00000001"} for h2load.
fn get_body() -> Result<PathBuf, String> {
    let key = b"load-00000001";
    let mut message = vec![0x12, key.len() as u8];
    message.extend_from_slice(key);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let path = workspace_root().join("target/bench/get.bin");
    std::fs::write(&path, frame).map_err(|e| e.to_string())?;
    Ok(path)
}

fn h2load(address: &str, body: &PathBuf, pid: u32) -> Result<(f64, f64), String> {
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let output = Command::new("h2load")
        .args(["-n", "400000", "-c", "8", "-m", "16", "-t", "1", "-d"])
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{address}/prism.v1.KeyValueService/Get"))
        .output()
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines().filter(|l| {
        l.starts_with("finished in") || l.starts_with("requests:") || l.starts_with("status codes:")
    }) {
        println!("    {line}");
    }
    let rps =
        h2load_calls_per_second(&text).ok_or_else(|| format!("could not read h2load's output:\n{text}"))?;
    if !text.contains("400000 succeeded") {
        return Err(format!("h2load saw failures:\n{text}"));
    }
    Ok((rps, cpu * 1e6 / 400_000.0))
}

/// The calls per second of h2load's "finished in …" line.
pub(crate) fn h2load_calls_per_second(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|field| field.trim_end_matches(" req/s").parse::<f64>().ok())
}

/// h2load against `baseline` and `target` (address, server pid) in alternating rounds:
/// each round's throughput ratio and server CPU per request, and the median ratio.
fn h2load_alternating(baseline: (&str, u32), target: (&str, u32), target_name: &str) -> Result<(), String> {
    if Command::new("h2load").arg("--version").output().is_err() {
        println!("\nh2load not found: install Debian's nghttp2-client for the independent load figures");
        return Ok(());
    }
    let body = get_body()?;
    println!("\n## h2load -n 400000 -c 8 -m 16 -t 1, unary Get, {ROUNDS} alternating rounds");
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        println!("  round {round}, baseline ({}):", baseline.0);
        let (base_rps, base_cpu) = h2load(baseline.0, &body, baseline.1)?;
        println!("  round {round}, {target_name} ({}):", target.0);
        let (target_rps, target_cpu) = h2load(target.0, &body, target.1)?;
        println!(
            "  round {round}: baseline {base_rps:.0} req/s ({base_cpu:.2} µs server CPU/req), \
             {target_name} {target_rps:.0} req/s ({target_cpu:.2} µs server CPU/req), ratio {:.3}",
            target_rps / base_rps
        );
        ratios.push(target_rps / base_rps);
    }
    ratios.sort_by(f64::total_cmp);
    println!("  median h2load throughput ratio ({target_name} / baseline): {:.3}", ratios[ratios.len() / 2]);
    Ok(())
}

/// A `default` keyvalue namespace on the release memstore plugin.
fn memstore_namespace() -> String {
    format!(
        "[plugins.memstore]\npath = \"{}\"\n\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = {{ plugin = \"memstore\" }}\n",
        release_binary("libprism_memstore.so").display()
    )
}

/// Writes each `(file name, config)` into `dir` and starts a release gateway on it.
fn start_gateways<const N: usize>(
    dir: &std::path::Path,
    configs: [(&str, String); N],
) -> Result<Vec<Background>, String> {
    let mut gateways = Vec::new();
    for (name, config) in configs {
        let path = dir.join(name);
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let mut gateway = Command::new(release_binary("prism"));
        gateway.args(["serve", "--no-watch", "--config"]).arg(&path).env("PRISM_LOG", "warn");
        gateways.push(Background::start(gateway, "serving on")?);
    }
    Ok(gateways)
}

/// The backend a benchmark puts behind both the gateway and the baseline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memstore,
    Redis,
    Postgres,
    /// Key-value on a SQLite file, and queues on SQLite vs PostgreSQL in the same run.
    Sqlite,
    /// Pub/sub only: publish→receive through the gateway vs straight on NATS.
    Nats,
    /// Streams only: append and read back through the gateway vs straight with rdkafka.
    Kafka,
}

impl Backend {
    pub fn parse(name: Option<&str>) -> Result<Backend, String> {
        match name {
            None | Some("memstore") => Ok(Backend::Memstore),
            Some("redis") => Ok(Backend::Redis),
            Some("postgres") => Ok(Backend::Postgres),
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("nats") => Ok(Backend::Nats),
            Some("kafka") => Ok(Backend::Kafka),
            Some(other) => Err(format!(
                "unknown benchmark backend '{other}': use memstore, sqlite, redis, postgres, nats or kafka"
            )),
        }
    }
}

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// Where the SQLite benchmark keeps its files (emptied before each run).
fn sqlite_dir() -> std::path::PathBuf {
    workspace_root().join("target/bench/sqlite")
}

fn gateway_config(backend: Backend) -> String {
    let library = |name: &str| release_binary(&format!("libprism_{name}.so")).display().to_string();
    if backend == Backend::Nats {
        return format!(
            "[server]\nlisten = \"{GATEWAY}\"\n\n[plugins.nats]\npath = \"{}\"\n\n\
             [[namespaces]]\nname = \"bus\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"nats\"\n\
             config = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.bench.\" }}\n",
            library("nats")
        );
    }
    if backend == Backend::Kafka {
        return format!(
            "[server]\nlisten = \"{GATEWAY}\"\n\n[plugins.kafka]\npath = \"{}\"\n\n\
             [[namespaces]]\nname = \"logs\"\npattern = \"stream\"\n[namespaces.slots.log]\nplugin = \"kafka\"\n\
             config = {{ brokers = \"{KAFKA_BROKERS}\", topic_prefix = \"prism-bench.\", partitions = 3 }}\n",
            library("kafka")
        );
    }
    let (plugin, slot_config) = match backend {
        Backend::Memstore | Backend::Nats | Backend::Kafka => ("memstore", String::new()),
        Backend::Redis => ("redis", format!("config = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench:\" }}\n")),
        Backend::Postgres => (
            "postgres",
            format!("config = {{ url = \"{POSTGRES_URL}\", table = \"prism_bench_kv\", queue_table = \"prism_bench_queue\" }}\n"),
        ),
        Backend::Sqlite => ("sqlite", format!("config = {{ path = \"{}\" }}\n", sqlite_dir().join("kv.db").display())),
    };
    let mut config = format!(
        "[server]\nlisten = \"{GATEWAY}\"\n\n[plugins.{plugin}]\npath = \"{}\"\n\n\
         [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"{plugin}\"\n{slot_config}",
        library(plugin)
    );
    if backend == Backend::Postgres {
        config.push_str(&format!(
            "\n[[namespaces]]\nname = \"jobs\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"postgres\"\n{slot_config}"
        ));
    }
    if backend == Backend::Sqlite {
        config.push_str(&format!(
            "\n[[namespaces]]\nname = \"jobs\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"sqlite\"\n\
             config = {{ path = \"{}\" }}\n\n[plugins.postgres]\npath = \"{}\"\n\n\
             [[namespaces]]\nname = \"jobs_pg\"\npattern = \"queue\"\n[namespaces.slots.queue]\nplugin = \"postgres\"\n\
             config = {{ url = \"{POSTGRES_URL}\", table = \"prism_bench_kv\", queue_table = \"prism_bench_queue\" }}\n\n\
             [[namespaces]]\nname = \"fsynced\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"sqlite\"\n\
             config = {{ path = \"{}\", synchronous = \"full\" }}\n",
            sqlite_dir().join("jobs.db").display(),
            library("postgres"),
            sqlite_dir().join("kv-full.db").display(),
        ));
    }
    config
}

/// Builds the workspace in release mode and returns `target/bench/{name}` (created;
/// `""` for `target/bench` itself), where a benchmark keeps its configs and data.
pub(crate) fn release_build_and_dir(name: &str) -> Result<std::path::PathBuf, String> {
    let mut build = cargo();
    build.args(["build", "--release", "--workspace"]);
    run(build)?;
    let dir = workspace_root().join("target/bench").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

pub fn gateway_vs_baseline(backend: Backend) -> Result<(), String> {
    let dir = release_build_and_dir("")?;
    let config = dir.join("plugins.toml");
    if backend == Backend::Sqlite {
        let _ = std::fs::remove_dir_all(sqlite_dir());
        std::fs::create_dir_all(sqlite_dir()).map_err(|e| e.to_string())?;
    }
    std::fs::write(&config, gateway_config(backend)).map_err(|e| e.to_string())?;
    let mut gateway = Command::new(release_binary("prism"));
    gateway.args(["serve", "--config"]).arg(&config).env("PRISM_LOG", "warn");
    let gateway = Background::start(gateway, "serving on")?;
    if backend == Backend::Nats {
        let target = format!("http://{GATEWAY}");
        for round in 1..=ROUNDS {
            println!(
                "\n## prism-load pubsub, round {round}: unary Publish, 16 publishers, 100-byte messages, 5 s"
            );
            prism_load(&["pubsub", "--target", &target, "--namespace", "bus", "--nats", NATS_URL])?;
            println!(
                "\n## prism-load pubsub, round {round}: PublishStream paced at 100000/s, 4 publishers, 5 s"
            );
            prism_load(&[
                "pubsub",
                "--target",
                &target,
                "--namespace",
                "bus",
                "--nats",
                NATS_URL,
                "--stream",
                "--publishers",
                "4",
                "--rate",
                "100000",
            ])?;
        }
        return Ok(());
    }
    if backend == Backend::Kafka {
        let target = format!("http://{GATEWAY}");
        for round in 1..=ROUNDS {
            println!("\n## prism-load stream, round {round}: 32 closed-loop appenders, 100-byte records, 5 s; then read all back");
            prism_load(&["stream", "--target", &target, "--namespace", "logs", "--brokers", KAFKA_BROKERS])?;
        }
        return Ok(());
    }
    let mut baseline = Command::new(release_binary("prism-load"));
    baseline.args(["baseline", "--listen", BASELINE]);
    match backend {
        Backend::Memstore | Backend::Nats | Backend::Kafka => {}
        Backend::Redis => {
            baseline.args(["--redis", REDIS_URL]);
        }
        Backend::Postgres => {
            baseline.args(["--postgres", POSTGRES_URL]);
        }
        Backend::Sqlite => {
            baseline.arg("--sqlite").arg(sqlite_dir().join("baseline.db"));
        }
    }
    let baseline = Background::start(baseline, "serving on")?;
    std::thread::sleep(Duration::from_millis(200));

    let (target, base) = (format!("http://{GATEWAY}"), format!("http://{BASELINE}"));
    let compare = |title: &str, extra: &[&str]| -> Result<(), String> {
        println!("\n## prism-load compare: {title}");
        let mut args = vec!["compare", "--rounds", ROUNDS_ARG, "--target", &target, "--baseline", &base];
        args.extend_from_slice(&["--duration", "5s", "--warmup", "1s"]);
        args.extend_from_slice(extra);
        prism_load(&args)
    };
    compare("saturating, get", &["--workload", "get"])?;
    compare("saturating, mixed 90% get", &["--workload", "mixed"])?;
    // Below every backend's saturation point on this machine, so latency shows service time.
    let (rate, title) = match backend {
        Backend::Postgres | Backend::Sqlite => ("5000", "fixed rate 5000/s, get (latency below saturation)"),
        _ => ("20000", "fixed rate 20000/s, get (latency below saturation)"),
    };
    compare(title, &["--workload", "get", "--rate", rate])?;
    // 5 s of one workload on one namespace of the gateway, no baseline.
    let run_on = |title: &str, namespace: &str, workload: &str, extra: &[&str]| -> Result<(), String> {
        println!("\n## prism-load run: {title}");
        let mut args = vec!["run", "--target", &target, "--namespace", namespace, "--workload", workload];
        args.extend_from_slice(&["--duration", "5s", "--warmup", "1s"]);
        args.extend_from_slice(extra);
        prism_load(&args)
    };
    const QUEUE_CONCURRENCY: &[&str] = &["--concurrency", "16"];
    if backend == Backend::Sqlite {
        compare("saturating, set", &["--workload", "set"])?;
        for (namespace, name) in [("jobs", "SQLite"), ("jobs_pg", "PostgreSQL")] {
            let title = format!("queue on {name} (enqueue + dequeue + ack per iteration)");
            run_on(&title, namespace, "queue", QUEUE_CONCURRENCY)?;
        }
        // What durability against a power loss costs: the same Sets with an fsync per
        // commit (batched commits share one), alternating with the default.
        for round in 1..=ROUNDS {
            for (namespace, name) in [("default", "normal"), ("fsynced", "full")] {
                run_on(&format!("round {round}: Set, synchronous = {name}"), namespace, "set", &[])?;
            }
        }
    }
    if backend == Backend::Postgres {
        compare("saturating, set", &["--workload", "set"])?;
        let title = "queue (enqueue + dequeue + ack per iteration), no baseline";
        run_on(title, "jobs", "queue", QUEUE_CONCURRENCY)?;
    }

    h2load_alternating((BASELINE, baseline.pid()), (GATEWAY, gateway.pid()), "gateway")?;
    Ok(())
}

pub fn abi() -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "prism-memstore", "-p", "prism-fixture-panicking"]);
    run(build)?;
    let mut bench = cargo();
    bench.args(["bench", "-p", "prism-acceptance", "--bench", "abi_call"]);
    run(bench)
}

/// p99 of a steady KV load, then of the same load while the memstore library is swapped
/// ten times (two builds alternating, renamed into place, one swap a second).
pub fn reload_under_load() -> Result<(), String> {
    let dir = release_build_and_dir("reload")?;
    let library = dir.join("libprism_memstore.so");
    let original = std::fs::read(release_binary("libprism_memstore.so")).map_err(|e| e.to_string())?;
    let publish = move |marker: &[u8]| -> Result<(), String> {
        let mut bytes = original.clone();
        bytes.extend_from_slice(marker);
        let staging = library.with_extension("staging");
        std::fs::write(&staging, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&staging, library.with_extension("so")).map_err(|e| e.to_string())
    };
    publish(b"")?;
    let config = dir.join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{GATEWAY}\"\nreload_debounce_ms = 100\n\n[plugins.memstore]\npath = \"libprism_memstore.so\"\n\n\
             [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut gateway = Command::new(release_binary("prism"));
    gateway.args(["serve", "--config"]).arg(&config).env("PRISM_LOG", "warn");
    let _gateway = Background::start(gateway, "serving on")?;
    let target = format!("http://{GATEWAY}");
    let load = [
        "run",
        "--target",
        &target,
        "--workload",
        "mixed",
        "--rate",
        "5000",
        "--keys",
        "10000",
        "--duration",
        "12s",
        "--warmup",
        "1s",
    ];
    println!("\n## steady state: mixed 90% get at 5000 req/s for 12 s");
    prism_load(&load)?;
    println!("\n## the same while the library is swapped 10 times (one swap a second)");
    let swapper = std::thread::spawn(move || -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(1500));
        for swap in 1..=10 {
            publish(if swap % 2 == 1 { b"build B" } else { b"" })?;
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    });
    let result = prism_load(&load);
    swapper.join().map_err(|_| "the swapping thread panicked".to_string())??;
    result?;
    let mut status = Command::new(release_binary("prism"));
    status.args(["status", "--server", &target]);
    run(status)
}

/// Multicast-registry figures on memstore + memstore and on redis + nats.
pub fn multicast() -> Result<(), String> {
    let dir = release_build_and_dir("")?;
    let library = |name: &str| release_binary(&format!("libprism_{name}.so")).display().to_string();
    let run_id = std::process::id();
    let config = format!(
        "[server]\nlisten = \"{GATEWAY}\"\n\n\
         [plugins.memstore]\npath = \"{}\"\n[plugins.redis]\npath = \"{}\"\n[plugins.nats]\npath = \"{}\"\n\n\
         [[namespaces]]\nname = \"devices\"\npattern = \"multicast-registry\"\n\
         [namespaces.slots.registry]\nplugin = \"memstore\"\n[namespaces.slots.messaging]\nplugin = \"memstore\"\n\n\
         [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n\n\
         [[namespaces]]\nname = \"events\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"memstore\"\n\n\
         [[namespaces]]\nname = \"devices-rn\"\npattern = \"multicast-registry\"\n\
         [namespaces.slots.registry]\nplugin = \"redis\"\nconfig = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench-mc-{run_id}:\" }}\n\
         [namespaces.slots.messaging]\nplugin = \"nats\"\nconfig = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.benchmc.\" }}\n\n\
         [[namespaces]]\nname = \"kv-redis\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"redis\"\n\
         config = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench-kv-{run_id}:\" }}\n\n\
         [[namespaces]]\nname = \"bus\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"nats\"\n\
         config = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.benchmc.\" }}\n",
        library("memstore"),
        library("redis"),
        library("nats")
    );
    let path = dir.join("multicast.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut gateway = Command::new(release_binary("prism"));
    gateway.args(["serve", "--config"]).arg(&path).env("PRISM_LOG", "warn");
    let _gateway = Background::start(gateway, "serving on")?;
    let target = format!("http://{GATEWAY}");
    println!("\n## prism-load multicast: memstore registry + memstore messaging");
    prism_load(&[
        "multicast",
        "--target",
        &target,
        "--namespace",
        "devices",
        "--kv-namespace",
        "default",
        "--pubsub-namespace",
        "events",
    ])?;
    println!("\n## prism-load multicast: redis registry + nats messaging");
    prism_load(&[
        "multicast",
        "--target",
        &target,
        "--namespace",
        "devices-rn",
        "--kv-namespace",
        "kv-redis",
        "--pubsub-namespace",
        "bus",
    ])
}

/// Credentials for `bench security`, made with openssl the way docs/SECURITY.md's
/// walkthrough makes them: a CA and a localhost certificate, an RS256 issuer key, its key
/// set, and a token for a member of "ops".
pub(crate) const SECURITY_MATERIAL: &str = r#"
set -euo pipefail
b64url() { basenc --base64url -w0 | tr -d '='; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out issuer.key 2>/dev/null
n=$(openssl rsa -in issuer.key -modulus -noout | cut -d= -f2 | basenc --base16 -d | b64url)
printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","n":"%s","e":"AQAB"}]}\n' "$n" > jwks.json
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
payload=$(printf '{"sub":"bench","iss":"https://issuer.bench","aud":"prism","exp":%d,"groups":["ops"]}' $(( $(date +%s) + 7200 )) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign issuer.key -binary | b64url)
printf '%s.%s.%s' "$header" "$payload" "$signature" > token
"#;

/// KV Get through a gateway with TLS and JWT (connections reused) vs the same gateway
/// plaintext and open, in one run; then new connections per second on each.
pub fn security() -> Result<(), String> {
    let dir = release_build_and_dir("security")?;
    let mut material = Command::new("bash");
    material.arg("-c").arg(SECURITY_MATERIAL).current_dir(&dir);
    run(material)?;
    let token = std::fs::read_to_string(dir.join("token")).map_err(|e| e.to_string())?;
    let namespace = memstore_namespace();
    let plain = format!("[server]\nlisten = \"{BASELINE}\"\n\n{namespace}");
    let secure = format!(
        "[server]\nlisten = \"{GATEWAY}\"\n\n[server.tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n\n\
         [auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"https://issuer.bench\"\naudience = \"prism\"\n\n\
         [[auth.rules]]\nprincipals = [\"group:ops\"]\nnamespaces = [\"*\"]\npermissions = [\"read\", \"write\"]\n\n{namespace}"
    );
    let gateways = start_gateways(&dir, [("plain.toml", plain), ("secure.toml", secure)])?;
    let port = GATEWAY.rsplit(':').next().expect("a port");
    let secure_url = format!("https://localhost:{port}");
    let plain_url = format!("http://{BASELINE}");
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().expect("a UTF-8 path");
    let bearer = format!("authorization=Bearer {}", token.trim());
    println!("\n## prism-load compare: Get, 64 in flight over 4 reused connections, 5 s x {ROUNDS} rounds; baseline = plaintext without auth, target = TLS + JWT");
    let cpu_before: Vec<f64> = gateways.iter().map(|g| cpu_seconds(g.pid()).unwrap_or(0.0)).collect();
    let mut compare = Command::new(release_binary("prism-load"));
    compare.args(["compare", "--target", &secure_url, "--target-ca", ca, "--target-header", &bearer]);
    compare.args(["--baseline", &plain_url, "--rounds", ROUNDS_ARG, "--workload", "get"]);
    compare.args(["--duration", "5s", "--warmup", "1s"]);
    let output = compare.output().map_err(|e| format!("prism-load compare: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{text}");
    if !output.status.success() {
        return Err(format!("prism-load compare failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    // Server CPU per request, which the client's own TLS work on the same 2 cores does
    // not blur. Rounds alternate baseline (plaintext) and target (TLS + JWT).
    let requests: Vec<u64> = text
        .lines()
        .filter_map(|line| line.strip_prefix("requests"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    let plain_requests: u64 = requests.iter().step_by(2).sum();
    let secure_requests: u64 = requests.iter().skip(1).step_by(2).sum();
    let cpu: Vec<f64> = gateways
        .iter()
        .zip(&cpu_before)
        .map(|(g, before)| cpu_seconds(g.pid()).unwrap_or(0.0) - before)
        .collect();
    // "requests" counts the 5 measured seconds of each 6 s run (1 s warm-up).
    let per_request = |cpu: f64, requests: u64| cpu * 5.0 / 6.0 / requests.max(1) as f64 * 1e6;
    let (plain_us, secure_us) = (per_request(cpu[0], plain_requests), per_request(cpu[1], secure_requests));
    println!(
        "server CPU per Get: plaintext {plain_us:.1} us, TLS + JWT {secure_us:.1} us; Gets per CPU-second, TLS + JWT / plaintext: {:.3}",
        plain_us / secure_us
    );
    println!("\n## prism-load handshakes: a new connection per Get, 8 at once, 5 s");
    prism_load(&["handshakes", "--target", &plain_url, "--duration", "5s"])?;
    prism_load(&[
        "handshakes",
        "--target",
        &secure_url,
        "--ca",
        ca,
        "--header",
        &bearer,
        "--duration",
        "5s",
    ])?;
    drop(gateways);
    Ok(())
}

/// KV Get through two gateways that differ only in `[admin]`: metrics recorded (and
/// scraped once a second, as a Prometheus would, more often) vs off.
pub fn metrics() -> Result<(), String> {
    let dir = release_build_and_dir("metrics")?;
    let namespace = memstore_namespace();
    const ADMIN: &str = "127.0.0.1:18982";
    let off = format!("[server]\nlisten = \"{BASELINE}\"\n\n{namespace}");
    let on = format!("[server]\nlisten = \"{GATEWAY}\"\n\n[admin]\nlisten = \"{ADMIN}\"\n\n{namespace}");
    let gateways = start_gateways(&dir, [("off.toml", off), ("on.toml", on)])?;
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                if scrape(ADMIN).is_ok() {
                    scrapes += 1;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            scrapes
        })
    };
    let result = compare_gets(GATEWAY, "default", "metrics off", "metrics on (scraped every second)");
    let result = result.and_then(|()| {
        h2load_alternating((BASELINE, gateways[0].pid()), (GATEWAY, gateways[1].pid()), "metrics on")
    });
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap_or(0);
    println!("scrapes of /metrics during the run: {scrapes}");
    drop(gateways);
    result
}

/// `prism-load compare` of KV Gets on `namespace` (64 in flight over 4 connections, 5 s
/// rounds after a 1 s warm-up) between the gateway on `target` and the one on `BASELINE`.
fn compare_gets(target: &str, namespace: &str, baseline_is: &str, target_is: &str) -> Result<(), String> {
    println!("\n## prism-load compare: Get on namespace '{namespace}', 64 in flight over 4 connections, 5 s x {ROUNDS} rounds; baseline = {baseline_is}, target = {target_is}");
    let (target, baseline) = (format!("http://{target}"), format!("http://{BASELINE}"));
    let mut args = vec!["compare", "--target", &target, "--baseline", &baseline, "--rounds", ROUNDS_ARG];
    args.extend_from_slice(&[
        "--workload",
        "get",
        "--namespace",
        namespace,
        "--duration",
        "5s",
        "--warmup",
        "1s",
    ]);
    prism_load(&args)
}

/// One GET /metrics; the body's length.
fn scrape(address: &str) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(stream, "GET /metrics HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body)?;
    Ok(body.len())
}

/// KV Get through a gateway without `[tracing]` vs the same with `[tracing]` at the
/// default sample_ratio (0.1) and at 1.0 (every call: a server span and a plugin child
/// span per Get), exported to a counting OTLP sink.
pub fn tracing() -> Result<(), String> {
    let dir = release_build_and_dir("tracing")?;
    const SINK: &str = "127.0.0.1:18983";
    const SAMPLED_TENTH: &str = "127.0.0.1:18984";
    let report = dir.join("spans-received");
    let _ = std::fs::remove_file(&report);
    let mut sink = Command::new(release_binary("prism-load"));
    sink.args(["otlp-sink", "--listen", SINK, "--report"]).arg(&report);
    let sink = Background::start(sink, "otlp sink on")?;
    let namespace = memstore_namespace();
    let traced = |listen: &str, ratio: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n\n[tracing]\notlp_endpoint = \"http://{SINK}\"\nsample_ratio = {ratio}\n\n{namespace}"
        )
    };
    let off = format!("[server]\nlisten = \"{BASELINE}\"\n\n{namespace}");
    let gateways = start_gateways(
        &dir,
        [
            ("off.toml", off),
            ("tenth.toml", traced(SAMPLED_TENTH, "0.1")),
            ("all.toml", traced(GATEWAY, "1.0")),
        ],
    )?;
    let sink_cpu_before = cpu_seconds(sink.pid()).unwrap_or(0.0);
    for (target, what) in
        [(SAMPLED_TENTH, "sample_ratio = 0.1 (the default)"), (GATEWAY, "sample_ratio = 1.0")]
    {
        compare_gets(target, "default", "no [tracing]", &format!("{what}, exported"))?;
    }
    // Let the last batches arrive.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let received = std::fs::read_to_string(&report).unwrap_or_default();
    println!(
        "spans the sink received: {}; its CPU: {:.1} s",
        received.trim(),
        cpu_seconds(sink.pid()).unwrap_or(0.0) - sink_cpu_before
    );
    drop(gateways);
    Ok(())
}

/// The cost of an idempotency token on Set: the same gateway, Sets without tokens
/// (baseline) vs Sets with a fresh token each (target), alternating rounds; once with
/// the records in the gateway's memory (memstore namespace, no idempotency slot) and
/// once with store and records on SQLite.
pub fn idempotency() -> Result<(), String> {
    let dir = release_build_and_dir("idempotency")?;
    // Fresh databases (with their -wal and -shm files) for every run.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = format!(
        "[server]\nlisten = \"{GATEWAY}\"\n\n{memstore}\n[plugins.sqlite]\npath = \"{sqlite}\"\n\n\
         [[namespaces]]\nname = \"durable\"\npattern = \"keyvalue\"\n\
         slots.store = {{ plugin = \"sqlite\", config = {{ path = \"{kv}\" }} }}\n\
         slots.idempotency = {{ plugin = \"sqlite\", config = {{ path = \"{tokens}\" }} }}\n",
        memstore = memstore_namespace(),
        sqlite = release_binary("libprism_sqlite.so").display(),
        kv = dir.join("kv.db").display(),
        tokens = dir.join("tokens.db").display(),
    );
    let _gateway = start_gateways(&dir, [("plugins.toml", config)])?;
    let target = format!("http://{GATEWAY}");
    for (namespace, title) in [
        ("default", "memstore, records in the gateway's memory"),
        ("durable", "sqlite, records in a sqlite idempotency slot"),
    ] {
        println!(
            "\n## prism-load compare: Set on {title}; baseline = no token, target = a fresh token per Set, {ROUNDS} rounds"
        );
        prism_load(&[
            "compare",
            "--target",
            &target,
            "--baseline",
            &target,
            "--target-tokens",
            "--rounds",
            ROUNDS_ARG,
            "--workload",
            "set",
            "--namespace",
            namespace,
            "--duration",
            "5s",
            "--warmup",
            "1s",
        ])?;
    }
    Ok(())
}

/// 100 MiB written with SetStream and read with GetStream through a claim check on the
/// s3 plugin, against the same object written and read straight on the S3 store.
pub fn objects() -> Result<(), String> {
    crate::services::ensure_s3()?;
    let dir = release_build_and_dir("objects")?;
    let config = format!(
        "[server]\nlisten = \"{GATEWAY}\"\n\n{memstore}\n[plugins.s3]\npath = \"{s3}\"\n\n\
         [[namespaces]]\nname = \"big\"\npattern = \"keyvalue\"\n\
         slots.store = {{ plugin = \"memstore\" }}\n\
         slots.claim_check = {{ plugin = \"s3\", config = {{ endpoint = \"http://127.0.0.1:9000\", allow_http = true, \
         bucket = \"prism-test\", access_key_id = \"prism\", secret_access_key = \"prism-secret\", prefix = \"bench-claims\" }} }}\n",
        memstore = memstore_namespace(),
        s3 = release_binary("libprism_s3.so").display(),
    );
    let _gateway = start_gateways(&dir, [("plugins.toml", config)])?;
    println!("\n## prism-load objects: 100 MiB SetStream + GetStream through a claim check vs S3 direct (s3s-fs), 5 rounds");
    prism_load(&[
        "objects",
        "--target",
        &format!("http://{GATEWAY}"),
        "--namespace",
        "big",
        "--size-mib",
        "100",
        "--rounds",
        "5",
    ])
}

/// KV throughput through 1, 2 and 3 gateways over the Redis Cluster, in one run: three
/// `prism-load run`s at once (21 calls in flight each) spread over the gateways, summed.
pub fn gateways() -> Result<(), String> {
    crate::services::ensure_redis_cluster()?;
    let dir = release_build_and_dir("gateways")?;
    let ports = [18980, 18982, 18984];
    let names = ports.map(|port| format!("gateway-{port}.toml"));
    // The three-master Redis Cluster `cargo xtask test` uses; one namespace per gateway
    // (each its own hash tag, so the three spread over the masters).
    let configs = [0, 1, 2].map(|n| {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n[plugins.redis]\npath = \"{}\"\n\n\
             [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"redis\"\n\
             config = {{ url = \"redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003\", cluster = true, key_prefix = \"prism-bench-{n}:\" }}\n",
            ports[n],
            release_binary("libprism_redis.so").display()
        );
        (names[n].as_str(), config)
    });
    let gateways = start_gateways(&dir, configs)?;
    let pids: Vec<u32> = gateways.iter().map(Background::pid).collect();
    println!("\n## KV mixed (90% Get) through N gateways over the Redis Cluster; 3 prism-load processes x 21 in flight, 8 s rounds");
    println!("| gateways | rounds (req/s) | median | ratio to 1 gateway | gateway CPU s per 100k calls |");
    println!("| --- | --- | --- | --- | --- |");
    let mut single = 0.0;
    for count in 1..=3usize {
        let mut rounds = Vec::new();
        let mut cpu_per_call = Vec::new();
        for _ in 0..3 {
            let cpu_before: f64 = pids.iter().filter_map(|pid| cpu_seconds(*pid)).sum();
            // Always three load processes (the client side stays the same), spread over
            // the gateways in use.
            let loads: Vec<_> = (0..3)
                .map(|load| {
                    let port = ports[load % count];
                    std::thread::spawn(move || {
                        Command::new(release_binary("prism-load"))
                            .args([
                                "run",
                                "--target",
                                &format!("http://127.0.0.1:{port}"),
                                "--workload",
                                "mixed",
                            ])
                            .args(["--concurrency", "21", "--duration", "8s", "--warmup", "1s"])
                            .output()
                    })
                })
                .collect();
            let loads: Vec<_> = loads.into_iter().map(|load| load.join().expect("a load thread")).collect();
            let mut total = 0.0;
            let mut calls = 0.0;
            for load in loads {
                let output = load.map_err(|e| format!("cannot run prism-load: {e}"))?;
                let text = String::from_utf8_lossy(&output.stdout);
                let rate: f64 = text
                    .lines()
                    .find_map(|line| line.strip_prefix("throughput"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(|| format!("no throughput in prism-load's output: {text}"))?;
                total += rate;
                calls += rate * 8.0;
            }
            let cpu_after: f64 = pids.iter().filter_map(|pid| cpu_seconds(*pid)).sum();
            rounds.push(total);
            cpu_per_call.push((cpu_after - cpu_before) / calls * 100_000.0);
        }
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[1];
        if count == 1 {
            single = median;
        }
        let listed: Vec<String> = rounds.iter().map(|rate| format!("{rate:.0}")).collect();
        cpu_per_call.sort_by(f64::total_cmp);
        println!(
            "| {count} | {} | {median:.0} | {:.3} | {:.1} |",
            listed.join(" / "),
            median / single,
            cpu_per_call[1]
        );
    }
    Ok(())
}

/// Multicast to 100 identities subscribed on the same gateway vs on another gateway that
/// shares the Redis registry and the NATS messaging, in one run.
pub fn multicast_across_gateways() -> Result<(), String> {
    crate::services::ensure_redis()?;
    crate::services::ensure_nats()?;
    let dir = release_build_and_dir("multicast-gateways")?;
    let run_id = std::process::id();
    let config = |port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[plugins.redis]\npath = \"{}\"\n[plugins.nats]\npath = \"{}\"\n\n\
             [[namespaces]]\nname = \"same\"\npattern = \"multicast-registry\"\n\
             [namespaces.slots.registry]\nplugin = \"redis\"\nconfig = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench-mcg-same-{run_id}:\" }}\n\
             [namespaces.slots.messaging]\nplugin = \"nats\"\nconfig = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.benchmcg.same.\" }}\n\n\
             [[namespaces]]\nname = \"across\"\npattern = \"multicast-registry\"\n\
             [namespaces.slots.registry]\nplugin = \"redis\"\nconfig = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench-mcg-across-{run_id}:\" }}\n\
             [namespaces.slots.messaging]\nplugin = \"nats\"\nconfig = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.benchmcg.across.\" }}\n\n\
             [[namespaces]]\nname = \"kv\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"redis\"\n\
             config = {{ url = \"{REDIS_URL}\", key_prefix = \"prism-bench-mcg-kv-{run_id}:\" }}\n\n\
             [[namespaces]]\nname = \"bus\"\npattern = \"pubsub\"\n[namespaces.slots.broker]\nplugin = \"nats\"\n\
             config = {{ url = \"{NATS_URL}\", subject_prefix = \"prism.benchmcg.\" }}\n",
            release_binary("libprism_redis.so").display(),
            release_binary("libprism_nats.so").display(),
        )
    };
    let _gateways = start_gateways(&dir, [("a.toml", config(18980)), ("b.toml", config(18982))])?;
    // Each case in its own namespace (own registry prefix), so neither sees the other's
    // identities.
    let cases = [
        ("same", "subscribers on the same gateway", "http://127.0.0.1:18980"),
        ("across", "subscribers on another gateway", "http://127.0.0.1:18982"),
    ];
    for (namespace, title, subscribers) in cases {
        println!(
            "\n## prism-load multicast (redis registry + nats messaging), Multicast on gateway A, {title}"
        );
        prism_load(&[
            "multicast",
            "--target",
            "http://127.0.0.1:18980",
            "--subscriber-target",
            subscribers,
            "--namespace",
            namespace,
            "--kv-namespace",
            "kv",
            "--pubsub-namespace",
            "bus",
        ])?;
    }
    Ok(())
}

/// A gateway with memstore (`default`) and Redis (`cache`), both plugins with the given
/// `isolation` and, in a process, the given `sandbox`.
fn two_plugin_config(listen: &str, isolation: &str, sandbox: &str) -> String {
    let process = |plugin: &str| {
        if isolation == "process" {
            format!("[plugins.{plugin}.process]\nsandbox = \"{sandbox}\"\n")
        } else {
            String::new()
        }
    };
    format!(
        "[server]\nlisten = \"{listen}\"\n\n\
         [plugins.memstore]\npath = \"{memstore}\"\nisolation = \"{isolation}\"\n{memstore_process}\
         [plugins.redis]\npath = \"{redis}\"\nisolation = \"{isolation}\"\n{redis_process}\n\
         [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = {{ plugin = \"memstore\" }}\n\n\
         [[namespaces]]\nname = \"cache\"\npattern = \"keyvalue\"\n\
         slots.store = {{ plugin = \"redis\", config = {{ url = \"{REDIS_URL}\", key_prefix = \"bench-isolation:\" }} }}\n",
        memstore = release_binary("libprism_memstore.so").display(),
        redis = release_binary("libprism_redis.so").display(),
        memstore_process = process("memstore"),
        redis_process = process("redis"),
    )
}

/// KV Get on memstore and on Redis, both plugins in processes of their own: without the
/// sandbox (baseline) and with it (target), compared in alternating rounds.
pub fn sandbox() -> Result<(), String> {
    let dir = release_build_and_dir("sandbox")?;
    let _gateways = start_gateways(
        &dir,
        [
            ("sandbox-off.toml", two_plugin_config(BASELINE, "process", "off")),
            ("sandbox-on.toml", two_plugin_config(GATEWAY, "process", "on")),
        ],
    )?;
    compare_gets_on_both(
        |backend| format!("{backend}, sandbox off"),
        |backend| format!("{backend}, sandbox on"),
    )
}

/// [`compare_gets`] on memstore (`default`) and Redis (`cache`) of [`two_plugin_config`].
fn compare_gets_on_both(
    baseline_is: impl Fn(&str) -> String,
    target_is: impl Fn(&str) -> String,
) -> Result<(), String> {
    for (namespace, backend) in [("default", "memstore"), ("cache", "Redis (127.0.0.1:6379)")] {
        compare_gets(GATEWAY, namespace, &baseline_is(backend), &target_is(backend))?;
    }
    Ok(())
}

/// KV Get on memstore and on Redis with the plugin in the gateway's process (baseline)
/// and in a process of its own (target): two gateways from one release build, the same
/// config but for `isolation`, compared in alternating rounds; then the children's memory.
pub fn isolation() -> Result<(), String> {
    let dir = release_build_and_dir("isolation")?;
    let _gateways = start_gateways(
        &dir,
        [
            ("in-process.toml", two_plugin_config(BASELINE, "in_process", "on")),
            ("process.toml", two_plugin_config(GATEWAY, "process", "on")),
        ],
    )?;
    compare_gets_on_both(
        |backend| format!("{backend} in process"),
        |backend| format!("{backend} in its own process"),
    )?;
    println!("\n## the plugin processes after the runs (prism status)");
    let mut status = Command::new(release_binary("prism"));
    status.args(["status", "--server", &format!("http://{GATEWAY}")]);
    run(status)
}
