//! `cargo xtask bench overhead`: what each feature costs a KV Get, measured in one run.
//!
//! Every server runs at once, each in its own process, and h2load visits them in turn,
//! round after round, so a slow moment of the machine falls on all of them alike: the
//! do-nothing HTTP/2 responder (the floor), a bare tonic server over a map, the gateway
//! with every feature off, and the gateway with one feature on. Each figure is a
//! throughput ratio to the gateway with everything off and the server's own CPU per
//! call (from /proc, so the load generator's share is not in it); the difference to
//! "off" in CPU is the feature's cost per call.
//!
//! Also here, the other benchmarks of what a call costs: `bench compression` (bytes and
//! CPU per Get with compressed responses) and `bench default` (the shipped
//! `plugins.toml`'s SQLite namespace against memstore).

use std::path::Path;
use std::process::Command;

use crate::bench::{
    cpu_seconds, h2load_calls_per_second, release_binary, release_build_and_dir, Background,
    SECURITY_MATERIAL,
};

/// Calls per h2load run at 128 in flight, and per latency run at 1 in flight.
const CALLS: u64 = 200_000;
const LATENCY_CALLS: u64 = 20_000;
const ROUNDS: usize = 3;
const KEY: &[u8] = b"load-00000001";
const API_KEY: &str = "bench-overhead-api-key-0123456789";

/// One server and how to call it.
struct Variant {
    name: &'static str,
    address: String,
    pid: u32,
    headers: Vec<String>,
}

/// One h2load run's results.
struct Run {
    calls_per_second: f64,
    cpu_us_per_call: f64,
    mean_latency_us: f64,
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// `GetRequest{key}` or `SetRequest{key, value: 100 bytes}`, framed, written to `dir`.
fn bodies(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let mut get = vec![0x12, KEY.len() as u8];
    get.extend_from_slice(KEY);
    let mut set = get.clone();
    set.extend_from_slice(&[0x1a, 100]);
    set.extend_from_slice(&[b'v'; 100]);
    let (get_path, set_path) = (dir.join("get.bin"), dir.join("set.bin"));
    std::fs::write(&get_path, grpc_frame(&get)).map_err(|e| e.to_string())?;
    std::fs::write(&set_path, grpc_frame(&set)).map_err(|e| e.to_string())?;
    Ok((get_path, set_path))
}

/// h2load `calls` calls of `method` with `body` on `variant`, `clients` × `streams` in flight.
fn h2load(
    variant: &Variant,
    method: &str,
    body: &Path,
    calls: u64,
    in_flight: (u32, u32),
) -> Result<Run, String> {
    let cpu_before = cpu_seconds(variant.pid).unwrap_or(0.0);
    let mut command = Command::new("h2load");
    command.args(["-n", &calls.to_string(), "-c", &in_flight.0.to_string(), "-m", &in_flight.1.to_string()]);
    command.args(["-t", "1", "-d"]).arg(body);
    command.args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    for header in &variant.headers {
        command.args(["-H", header]);
    }
    command.arg(format!("http://{}/prism.v1.KeyValueService/{method}", variant.address));
    let output = command.output().map_err(|e| format!("cannot run h2load: {e}"))?;
    let cpu = cpu_seconds(variant.pid).unwrap_or(0.0) - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    if !text.contains(&format!("{calls} succeeded")) || !text.contains(&format!("status codes: {calls} 2xx"))
    {
        return Err(format!("h2load on {} saw failures:\n{text}", variant.name));
    }
    // A refused gRPC call is an HTTP 200 too, but without the value: count the bytes.
    if method == "Get" && data_bytes(&text) < calls * 100 {
        return Err(format!(
            "{}: Get answered without the 100-byte value (a gRPC error?):\n{text}",
            variant.name
        ));
    }
    let calls_per_second = h2load_calls_per_second(&text)
        .ok_or_else(|| format!("could not read h2load's throughput:\n{text}"))?;
    Ok(Run {
        calls_per_second,
        cpu_us_per_call: cpu * 1e6 / calls as f64,
        mean_latency_us: mean_latency(&text)?,
    })
}

/// The response DATA bytes of h2load's "traffic:" line.
fn data_bytes(text: &str) -> u64 {
    let Some(line) = text.lines().find(|line| line.starts_with("traffic:")) else { return 0 };
    let Some(data) = line.split(", ").find(|part| part.ends_with(" data")) else { return 0 };
    data.split(['(', ')']).nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The mean of h2load's "time for request" line, in µs.
fn mean_latency(text: &str) -> Result<f64, String> {
    let line = text
        .lines()
        .find(|line| line.starts_with("time for request:"))
        .ok_or_else(|| format!("no request times in h2load's output:\n{text}"))?;
    let mean = line.split_whitespace().nth(5).ok_or_else(|| format!("unreadable line: {line}"))?;
    let (number, unit) = mean.split_at(mean.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(mean.len()));
    let number: f64 = number.parse().map_err(|_| format!("unreadable mean in: {line}"))?;
    Ok(match unit {
        "ms" => number * 1000.0,
        "s" => number * 1e6,
        _ => number,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The configs of the gateway variants: (name, file, extra request headers).
fn gateway_configs(dir: &Path, port: u16, token: &str) -> Vec<(&'static str, String, Vec<String>)> {
    let library = |name: &str| release_binary(&format!("libprism_{name}.so")).display().to_string();
    // `extra`: plugin tables and slots added to the namespace (inline, after `store`).
    let memstore = |isolation: &str, plugins: &str, slots: &str| {
        format!(
            "[plugins.memstore]\npath = \"{}\"\nisolation = \"{isolation}\"\n{plugins}\n[[namespaces]]\nname = \"default\"\n\
             pattern = \"keyvalue\"\nslots = {{ store = {{ plugin = \"memstore\" }}{slots} }}\n",
            library("memstore")
        )
    };
    let plain = memstore("in_process", "", "");
    let server = |offset: u16| format!("[server]\nlisten = \"127.0.0.1:{}\"\n\n", port + offset);
    let rule =
        "[[auth.rules]]\nprincipals = [\"*\"]\nnamespaces = [\"*\"]\npermissions = [\"read\", \"write\"]\n\n";
    let api_key_hash = sha256_hex(API_KEY);
    let objects = dir.join("objects");
    vec![
        ("gateway, everything off", format!("{}{}", server(0), plain), vec![]),
        (
            "request id sent by the client",
            String::new(), // the "off" gateway, with a header
            vec!["x-request-id: bench-overhead-request-0001".to_owned()],
        ),
        (
            "metrics ([admin])",
            format!("{}[admin]\nlisten = \"127.0.0.1:{}\"\n\n{}", server(1), port + 20, plain),
            vec![],
        ),
        (
            "auth: API key",
            format!(
                "{}[[auth.api_keys]]\nname = \"bench\"\nsha256 = \"{api_key_hash}\"\n\n{rule}{}",
                server(2),
                plain
            ),
            vec![format!("x-api-key: {API_KEY}")],
        ),
        (
            "auth: JWT (cached)",
            format!(
                "{}[auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"https://issuer.bench\"\naudience = \"prism\"\n\n{rule}{}",
                server(3),
                plain
            ),
            vec![format!("authorization: Bearer {token}")],
        ),
        (
            "quotas (never reached)",
            format!(
                "{}[[quotas]]\nnamespaces = [\"*\"]\nrequests_per_second = 100000000\nmax_in_flight = 100000\n\n{}",
                server(4),
                plain
            ),
            vec![],
        ),
        (
            "tracing, default sample_ratio",
            format!(
                "{}[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\n\n{}",
                server(5),
                port + 21,
                plain
            ),
            vec![],
        ),
        (
            "claim check, value below the threshold",
            format!(
                "{}{}",
                server(6),
                memstore(
                    "in_process",
                    &format!("[plugins.files]\npath = \"{}\"\n", library("files")),
                    &format!(", claim_check = {{ plugin = \"files\", config = {{ path = \"{}\" }} }}", objects.display())
                )
            ),
            vec![],
        ),
        ("process isolation", format!("{}{}", server(7), memstore("process", "", "")), vec![]),
    ]
}

fn sha256_hex(text: &str) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("piped").write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Starts every server; the responder and bare tonic first.
fn start(dir: &Path) -> Result<(Vec<Variant>, Vec<Background>), String> {
    const PORT: u16 = 19000;
    let token = std::fs::read_to_string(dir.join("token")).map_err(|e| e.to_string())?;
    let mut servers = Vec::new();
    let mut variants = Vec::new();
    let mut responder = Command::new(release_binary("prism-load"));
    responder.args(["responder", "--listen", &format!("127.0.0.1:{}", PORT + 30)]);
    let mut bare = Command::new(release_binary("prism-load"));
    bare.args(["baseline", "--listen", &format!("127.0.0.1:{}", PORT + 31)]);
    for (offset, name, command) in
        [(30, "do-nothing HTTP/2 responder", responder), (31, "bare gRPC server over a map", bare)]
    {
        let server = Background::start(command, "serving on")?;
        variants.push(Variant {
            name,
            address: format!("127.0.0.1:{}", PORT + offset),
            pid: server.pid(),
            headers: vec![],
        });
        servers.push(server);
    }
    let mut sink = Command::new(release_binary("prism-load"));
    sink.args(["otlp-sink", "--listen", &format!("127.0.0.1:{}", PORT + 21)]);
    servers.push(Background::start(sink, "otlp sink on")?);
    let off = variants.len();
    for (index, (name, config, headers)) in gateway_configs(dir, PORT, token.trim()).into_iter().enumerate() {
        if config.is_empty() {
            let (address, pid) = (variants[off].address.clone(), variants[off].pid);
            variants.push(Variant { name, address, pid, headers });
            continue;
        }
        let path = dir.join(format!("gateway-{index}.toml"));
        std::fs::write(&path, &config).map_err(|e| e.to_string())?;
        let address = config.lines().find_map(|l| l.strip_prefix("listen = \"")).unwrap_or_default();
        let address = address.trim_end_matches('"').to_owned();
        let mut gateway = Command::new(release_binary("prism"));
        gateway.args(["serve", "--no-watch", "--config"]).arg(&path).env("PRISM_LOG", "warn");
        let server = Background::start(gateway, "serving on")?;
        variants.push(Variant { name, address, pid: server.pid(), headers });
        servers.push(server);
    }
    Ok((variants, servers))
}

pub fn overhead() -> Result<(), String> {
    let dir = release_build_and_dir("overhead")?;
    let mut material = Command::new("bash");
    material.arg("-c").arg(SECURITY_MATERIAL).current_dir(&dir);
    crate::run(material)?;
    let (get, set) = bodies(&dir)?;
    let (variants, servers) = start(&dir)?;
    // Every server holds the key (the responder answers it anyway), warmed up.
    for variant in &variants[1..] {
        h2load(variant, "Set", &set, 1, (1, 1))?;
    }
    for variant in &variants {
        h2load(variant, "Get", &get, CALLS / 10, (8, 16))?;
    }
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        println!("round {round} of {ROUNDS}: h2load -n {CALLS} -c 8 -m 16 -t 1, KV Get of a 100-byte value");
        for (variant, runs) in variants.iter().zip(&mut runs) {
            let run = h2load(variant, "Get", &get, CALLS, (8, 16))?;
            println!(
                "  {:<42} {:>8.0} calls/s  {:>6.2} µs CPU/call",
                variant.name, run.calls_per_second, run.cpu_us_per_call
            );
            runs.push(run);
        }
    }
    let off = 2;
    let median_of = |runs: &[Run], pick: fn(&Run) -> f64| median(runs.iter().map(pick).collect());
    let off_rate = median_of(&runs[off], |r| r.calls_per_second);
    let off_cpu = median_of(&runs[off], |r| r.cpu_us_per_call);
    println!("\n| server | calls/s (median) | / gateway off | CPU µs/call | cost vs off, ns/call |");
    println!("|---|---|---|---|---|");
    for (variant, runs) in variants.iter().zip(&runs) {
        let (rate, cpu) = (median_of(runs, |r| r.calls_per_second), median_of(runs, |r| r.cpu_us_per_call));
        println!(
            "| {} | {rate:.0} | {:.3} | {cpu:.2} | {:+.0} |",
            variant.name,
            rate / off_rate,
            (cpu - off_cpu) * 1000.0
        );
    }
    idempotency_tokens(&variants[off])?;
    latency(&variants[..=off], &get)?;
    println!("\n## CPU idle and paced at 1 000 Gets/s (4 clients × 250/s, 10 s each)");
    for variant in &variants[..=off] {
        idle_and_paced_cpu(variant, &get)?;
    }
    drop(servers);
    Ok(())
}

/// Mean latency at one call in flight on the responder, bare tonic and the gateway off.
fn latency(variants: &[Variant], get: &Path) -> Result<(), String> {
    println!("\n## one call in flight: h2load -n {LATENCY_CALLS} -c 1 -m 1, {ROUNDS} rounds, mean latency");
    let mut means: Vec<Vec<f64>> = variants.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (variant, means) in variants.iter().zip(&mut means) {
            means.push(h2load(variant, "Get", get, LATENCY_CALLS, (1, 1))?.mean_latency_us);
        }
    }
    for (variant, means) in variants.iter().zip(means) {
        let shown: Vec<String> = means.iter().map(|m| format!("{m:.1}")).collect();
        println!(
            "  {:<42} mean latency µs per round: {}; median {:.1}",
            variant.name,
            shown.join(", "),
            median(means)
        );
    }
    Ok(())
}

/// A server's CPU while idle and under 1 000 Gets per second, 10 s each.
fn idle_and_paced_cpu(gateway: &Variant, get: &Path) -> Result<(), String> {
    let before = cpu_seconds(gateway.pid).unwrap_or(0.0);
    std::thread::sleep(std::time::Duration::from_secs(10));
    let idle = (cpu_seconds(gateway.pid).unwrap_or(0.0) - before) / 10.0;
    let before = cpu_seconds(gateway.pid).unwrap_or(0.0);
    let started = std::time::Instant::now();
    let output = Command::new("h2load")
        .args(["-D", "10", "-c", "4", "-m", "1", "--rps", "250", "-t", "1", "-d"])
        .arg(get)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{}/prism.v1.KeyValueService/Get", gateway.address))
        .output()
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let paced = (cpu_seconds(gateway.pid).unwrap_or(0.0) - before) / seconds;
    let text = String::from_utf8_lossy(&output.stdout);
    let requests = text.lines().find(|l| l.starts_with("requests:")).unwrap_or("requests: ?");
    let requests = requests.split(", ").next().unwrap_or(requests);
    println!("  {:<42} idle {idle:.4} vCPU; paced {paced:.4} vCPU ({requests})", gateway.name);
    Ok(())
}

/// Sets with a fresh idempotency token each vs without, on the gateway with everything
/// off (records kept in its memory): h2load repeats one body, so prism-load makes these.
fn idempotency_tokens(gateway: &Variant) -> Result<(), String> {
    println!("\n## idempotency token: prism-load compare, Set of 100 bytes, baseline = no token, target = a fresh token per Set");
    let target = format!("http://{}", gateway.address);
    let output = Command::new(release_binary("prism-load"))
        .args(["compare", "--target", &target, "--baseline", &target, "--target-tokens", "--rounds"])
        .args([&ROUNDS.to_string(), "--workload", "set", "--duration", "3s", "--warmup", "1s"])
        .output()
        .map_err(|e| format!("prism-load compare: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().find(|line| line.starts_with("median throughput ratio")) {
        Some(line) if output.status.success() => println!("  {line}"),
        _ => {
            return Err(format!(
                "prism-load compare failed:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
    Ok(())
}

/// Bytes a process has written so far (sockets included), from /proc.
fn bytes_written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|line| line.strip_prefix("wchar: ")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// CPU seconds of this process's children that were waited for (the load tool's share).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

/// `cargo xtask bench compression`: KV Get of a JSON-like value of 1 KiB, 64 KiB and
/// 1 MiB through one gateway, responses uncompressed, gzip and zstd, in alternating
/// rounds: bytes the gateway wrote per call, its CPU and the client's per call, calls/s.
pub fn compression() -> Result<(), String> {
    let dir = release_build_and_dir("compression")?;
    let listen = "127.0.0.1:19050";
    let config = format!(
        "[server]\nlisten = \"{listen}\"\n\n[plugins.memstore]\npath = \"{}\"\n\n[[namespaces]]\nname = \"default\"\n\
         pattern = \"keyvalue\"\nslots.store = {{ plugin = \"memstore\" }}\n",
        release_binary("libprism_memstore.so").display()
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut command = Command::new(release_binary("prism"));
    command.args(["serve", "--no-watch", "--config"]).arg(&path).env("PRISM_LOG", "warn");
    let gateway = Background::start(command, "serving on")?;
    let target = format!("http://{listen}");
    println!(
        "| value | encoding | bytes written per Get | gateway CPU µs/Get | client CPU µs/Get | Gets/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (size, shown) in [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1024 * 1024, "1 MiB")] {
        let mut rows: Vec<Vec<[f64; 4]>> = vec![Vec::new(); 3];
        for _ in 0..ROUNDS {
            for (encoding, row) in ["none", "gzip", "zstd"].into_iter().zip(&mut rows) {
                let (cpu, written, client) = (
                    cpu_seconds(gateway.pid()).unwrap_or(0.0),
                    bytes_written(gateway.pid()),
                    children_cpu_seconds(),
                );
                let output = Command::new(release_binary("prism-load"))
                    .args(["compression", "--target", &target, "--size", &size.to_string()])
                    .args(["--encoding", encoding, "--duration", "3s"])
                    .output()
                    .map_err(|e| format!("prism-load compression: {e}"))?;
                let text = String::from_utf8_lossy(&output.stdout);
                let calls: f64 = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .filter(|_| output.status.success())
                    .ok_or_else(|| {
                        format!(
                            "prism-load compression failed: {text}{}",
                            String::from_utf8_lossy(&output.stderr)
                        )
                    })?;
                row.push([
                    (bytes_written(gateway.pid()) - written) as f64 / calls,
                    (cpu_seconds(gateway.pid()).unwrap_or(0.0) - cpu) * 1e6 / calls,
                    (children_cpu_seconds() - client) * 1e6 / calls,
                    calls / 3.0,
                ]);
            }
        }
        for (encoding, row) in ["none", "gzip", "zstd"].into_iter().zip(rows) {
            let column = |i: usize| median(row.iter().map(|r| r[i]).collect());
            println!(
                "| {shown} | {encoding} | {:.0} | {:.1} | {:.1} | {:.0} |",
                column(0),
                column(1),
                column(2),
                column(3)
            );
        }
    }
    Ok(())
}

/// `cargo xtask bench default`: the repository's `plugins.toml` as `cargo xtask serve`
/// runs it (`default` on SQLite with an idempotency slot and a claim check), against a
/// memstore namespace and `default` with `inline_point_reads = false` on the same
/// gateway, in alternating rounds: Get and Set at 128 in flight (8 connections),
/// throughput and p99.
pub fn default_config() -> Result<(), String> {
    let dir = release_build_and_dir("default")?;
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let shipped =
        std::fs::read_to_string(crate::workspace_root().join("plugins.toml")).map_err(|e| e.to_string())?;
    let release = release_binary("").display().to_string();
    let listen = "127.0.0.1:19060";
    let config = shipped
        .replace("target/debug/", &format!("{}/", release.trim_end_matches('/')))
        .replace("listen = \"127.0.0.1:8980\"", &format!("listen = \"{listen}\""))
        + "\n[[namespaces]]\nname = \"mem\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\" }\n"
        // `default` as it was before reads of one key ran inline, for the step's effect.
        + "\n[[namespaces]]\nname = \"hops\"\npattern = \"keyvalue\"\n\
           slots.store = { plugin = \"sqlite\", config = { path = \"${config_dir}/data/hops.db\", inline_point_reads = false } }\n\
           slots.idempotency = { plugin = \"sqlite\", config = { path = \"${config_dir}/data/hops-tokens.db\" } }\n\
           slots.claim_check = { plugin = \"files\", config = { path = \"${config_dir}/data/hops-objects\" } }\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut command = Command::new(release_binary("prism"));
    command.args(["serve", "--no-watch", "--config"]).arg(&path).env("PRISM_LOG", "warn");
    let _gateway = Background::start(command, "serving on")?;
    let target = format!("http://{listen}");
    for workload in ["set", "get"] {
        for round in 1..=ROUNDS {
            for namespace in ["mem", "default", "hops"] {
                let output = Command::new(release_binary("prism-load"))
                    .args(["run", "--target", &target, "--namespace", namespace, "--workload", workload])
                    .args([
                        "--concurrency",
                        "128",
                        "--connections",
                        "8",
                        "--duration",
                        "5s",
                        "--warmup",
                        "1s",
                    ])
                    .output()
                    .map_err(|e| format!("prism-load run: {e}"))?;
                if !output.status.success() {
                    return Err(format!(
                        "prism-load run failed: {}",
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
                println!("## {workload}, round {round}, namespace {namespace}");
                print!("{}", String::from_utf8_lossy(&output.stdout));
            }
        }
    }
    Ok(())
}
