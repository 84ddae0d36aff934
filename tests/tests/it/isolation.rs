//! Crash isolation: a plugin that segfaults, aborts, overflows its stack, allocates
//! without bound or calls `exit(0)` inside a call. With `isolation = "process"` each
//! crash costs only that namespace's calls in flight — a client on another namespace
//! sees no error — and the namespace serves again by itself; too many crashes stop the
//! restarts, and `prism status` says so. In process, the same crash ends the gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_acceptance::harness::{running_as_root, Server};
use prism_api::{GetRequest, SetRequest};
use tonic::Code;

fn config(isolation: &str, max_restarts: u32) -> String {
    format!(
        r#"
[server]
health_interval_ms = 100

[plugins.crashing]
path = "{{crashing}}"
isolation = "{isolation}"
{process}

[plugins.memstore]
path = "{{memstore}}"

[[namespaces]]
name = "fragile"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "crashing"

[[namespaces]]
name = "steady"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"
"#,
        process = if isolation == "process" {
            format!(
                "[plugins.crashing.process]\nmemory_limit_mb = 512\nmax_restarts = {max_restarts}\nheartbeat_timeout_ms = 1000"
            )
        } else {
            String::new()
        }
    )
}

fn get(namespace: &str, key: &str) -> GetRequest {
    GetRequest { namespace: namespace.into(), key: key.into(), ..Default::default() }
}

fn set(namespace: &str, key: &str, value: &str) -> SetRequest {
    SetRequest {
        namespace: namespace.into(),
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// A client writing and reading `steady` as fast as it can, counting calls and errors.
struct SteadyLoad {
    calls: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl SteadyLoad {
    async fn start(server: &Server) -> SteadyLoad {
        let mut kv = server.keyvalue().await;
        let calls = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (counted, failed) = (calls.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0u64;
            while !*stopped.borrow() {
                n += 1;
                let key = format!("k{}", n % 100);
                let outcome = match kv.set(set("steady", &key, "v")).await {
                    Ok(_) => kv.get(get("steady", &key)).await.map(|_| ()),
                    Err(status) => Err(status),
                };
                counted.fetch_add(1, Ordering::Relaxed);
                if let Err(status) = outcome {
                    // Counted, and the first few kept: a gateway that went away must fail
                    // the test, not fill the test's memory with the same error.
                    if failed.fetch_add(1, Ordering::Relaxed) < 20 {
                        seen.push(format!("{:?}: {}", status.code(), status.message()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            seen
        });
        SteadyLoad { calls, errors, stop, task }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.send_replace(true);
        let seen = self.task.await.expect("the load task");
        (self.calls.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed), seen)
    }
}

/// Waits until `fragile` answers a plain call again.
async fn serves_again(server: &Server, within: Duration) -> Duration {
    let mut kv = server.keyvalue().await;
    let started = Instant::now();
    loop {
        match kv.get(get("fragile", "plain")).await {
            Ok(_) => return started.elapsed(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "while restarting: {}", status.message())
            }
        }
        assert!(started.elapsed() < within, "the namespace did not serve again within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_mode_each_crash_costs_only_its_namespace_and_it_recovers_by_itself() {
    let server = Server::start(&config("process", 10));
    let load = SteadyLoad::start(&server).await;
    let mut kv = server.keyvalue().await;
    kv.set(set("fragile", "plain", "before")).await.expect("the isolated plugin serves");
    let before = server.status();
    assert!(before.contains("isolation: process"), "{before}");
    assert!(before.contains("process fragile/store: running pid "), "{before}");

    let crashes = [
        ("segfault", "SIGSEGV"),
        ("abort", "SIGABRT"),
        ("stack-overflow", "killed by signal"),
        ("alloc", "memory allocation"),
        ("exit", "exited with code 0"),
    ];
    for (how, cause) in crashes {
        let crashed =
            tokio::time::timeout(Duration::from_secs(30), kv.get(get("fragile", &format!("crash:{how}"))))
                .await
                .unwrap_or_else(|_| panic!("{how}: the crashing call got no answer within 30 s"))
                .expect_err("the crash fails its call");
        assert_eq!(crashed.code(), Code::Unavailable, "{how}: {}", crashed.message());
        assert!(
            crashed.message().contains(cause) && crashed.message().contains("plugin 'crashing'"),
            "{how}: the error names the plugin and the cause ({cause}): {}",
            crashed.message()
        );
        let recovered = serves_again(&server, Duration::from_secs(20)).await;
        eprintln!("{how}: served again after {recovered:?}");
    }
    let (calls, errors, seen) = load.finish().await;
    assert!(calls > 100, "the steady client made only {calls} calls");
    assert_eq!(errors, 0, "the other namespace saw errors: {seen:?}");

    let after = server.status();
    assert!(after.contains("process fragile/store: running pid "), "{after}");
    assert!(after.contains(", 5 restarts"), "{after}");
    // The gateway itself never went down.
    kv.get(get("steady", "k1")).await.expect("the gateway serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_stops_restarting_says_so_and_a_reload_starts_afresh() {
    let server = Server::start(&config("process", 1));
    let mut kv = server.keyvalue().await;
    kv.get(get("fragile", "crash:abort")).await.expect_err("first crash");
    serves_again(&server, Duration::from_secs(20)).await;
    kv.get(get("fragile", "crash:abort")).await.expect_err("second crash");

    // Given up on: calls fail at once, saying why and what to do.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let status = kv.get(get("fragile", "plain")).await.expect_err("not restarted");
        if status.message().contains("not restarted") {
            break status;
        }
        assert!(Instant::now() < deadline, "never reported the crash loop: {}", status.message());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("reload"), "{}", refused.message());
    let status = server.status();
    assert!(status.contains("process fragile/store: crash loop"), "{status}");
    assert!(status.contains("SIGABRT"), "{status}");
    // The health check reports it, and the gateway's own recovery leaves it alone.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: "fragile".into() })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(serving, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    assert!(server.status().contains("crash loop"), "recreated behind the crash-loop stop");
    kv.get(get("steady", "k")).await.expect("the other namespace serves");

    // An operator's fix (here: a new restart budget) reloads into a fresh process.
    let config = std::fs::read_to_string(server.config_path())
        .unwrap()
        .replace("max_restarts = 1", "max_restarts = 3");
    std::fs::write(server.config_path(), config).unwrap();
    server.wait_for_reloads(1).await;
    serves_again(&server, Duration::from_secs(20)).await;
    assert!(server.status().contains("process fragile/store: running pid "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_process_misses_its_heartbeat_and_is_replaced() {
    let server = Server::start(&config("process", 10));
    let mut kv = server.keyvalue().await;
    kv.set(set("fragile", "plain", "v")).await.unwrap();
    let pid = server.plugin_process_pid();
    // Stopped, it holds its socket open and answers nothing: only the heartbeat can tell.
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
    assert!(stopped.success());
    let hung = kv.get(get("fragile", "plain")).await.expect_err("a call to a stopped process fails");
    assert_eq!(hung.code(), Code::Unavailable, "{}", hung.message());
    assert!(hung.message().contains("missed its heartbeat"), "{}", hung.message());
    serves_again(&server, Duration::from_secs(20)).await;
    assert!(
        !server.status().contains(&format!("running pid {pid},")),
        "the stopped process is still the one serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_crashes_its_process_while_starting_is_refused_on_reload() {
    let server = Server::start(&config("process", 10));
    let mut kv = server.keyvalue().await;
    kv.set(set("fragile", "plain", "kept")).await.unwrap();
    let config = std::fs::read_to_string(server.config_path()).unwrap().replace(
        "plugin = \"crashing\"",
        "plugin = \"crashing\"\nconfig = { crash_on_create = \"segfault\" }",
    );
    std::fs::write(server.config_path(), config).unwrap();
    let reload = server.wait_for_reloads(1).await;
    let outcome = reload.config.expect("a reload outcome");
    assert!(!outcome.ok, "a plugin that crashes while starting was accepted: {}", outcome.message);
    // The old instance keeps serving, its data intact.
    let kept = kv.get(get("fragile", "plain")).await.expect("the old instance serves").into_inner();
    assert!(kept.found, "the key is gone");
    assert_eq!(&kept.value[..], b"kept");
}

/// In process, a plugin's crash is the gateway's: these are what docs/CONFIG.md states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_crash_ends_the_gateway() {
    use std::os::unix::process::ExitStatusExt;
    for (how, ended) in
        [("segfault", "signal 11"), ("abort", "signal 6"), ("stack-overflow", "signal"), ("exit", "code 0")]
    {
        let mut server = Server::start(&config("in_process", 0));
        let mut kv = server.keyvalue().await;
        kv.set(set("steady", "k", "v")).await.expect("serves before the crash");
        let _ = kv
            .get(get("fragile", &format!("crash:{how}")))
            .await
            .expect_err("the call dies with the gateway");
        let status = server.wait_exit_status(Duration::from_secs(10)).expect("the gateway ended");
        let description = match (status.code(), status.signal()) {
            (Some(code), _) => format!("code {code}"),
            (_, Some(signal)) => format!("signal {signal}"),
            _ => "unknown".into(),
        };
        assert!(
            description.starts_with(ended),
            "{how}: the gateway ended with {description}, expected {ended}"
        );
    }
}

/// The limits, the user and the environment a plugin process gets are the configured
/// ones, read back from /proc (the user switch is checked when the tests run as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_process_runs_with_its_limits_user_and_a_clean_environment() {
    let root = running_as_root();
    let user = if root { "user = \"nobody\"\n" } else { "" };
    let config = config("process", 10).replace(
        "max_restarts = 10",
        &format!("max_restarts = 10\ncpu_time_limit_s = 3600\nmax_open_files = 256\n{user}"),
    );
    let server = Server::start_with_env(&config, &[], &[("PRISM_TEST_GATEWAY_SECRET", "hunter2")]);
    let mut kv = server.keyvalue().await;
    kv.set(set("fragile", "plain", "v")).await.expect("the limited process serves");
    let pid = server.plugin_process_pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line[name.len()..].split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in {limits}"))
    };
    assert_eq!(limit("Max address space"), (512u64 << 20).to_string());
    assert_eq!(limit("Max cpu time"), "3600");
    assert_eq!(limit("Max open files"), "256");
    assert_eq!(limit("Max core file size"), "0");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(proc_status.lines().any(|line| line == "NoNewPrivs:\t1"), "{proc_status}");
    if root {
        let uid = proc_status.lines().find(|line| line.starts_with("Uid:")).unwrap();
        assert!(uid.split_whitespace().skip(1).all(|id| id == "65534"), "not running as nobody: {uid}");
    } else {
        eprintln!("the user switch needs root; checked the limits only");
    }
    let environment = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environment = String::from_utf8_lossy(&environment);
    assert!(
        !environment.contains("PRISM_TEST_GATEWAY_SECRET"),
        "the gateway's environment leaked: {environment}"
    );
    assert!(environment.contains("PATH="), "{environment}");
}
