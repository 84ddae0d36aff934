//! The sandbox of a plugin process (`isolation = "process"`; `sandbox` is on unless a
//! plugin's `[process]` table turns it off). A plugin that tries to read `/etc/shadow`,
//! the gateway's config or environment, write outside the directory its config names, `ptrace` or signal the gateway, open a
//! raw socket or run a program is refused; its call fails with the refusal, and the plugin process
//! and the gateway keep serving. With `sandbox = "off"` the same attempts succeed when
//! the tests run as root, which shows that it is the sandbox that refuses them.

use std::path::{Path, PathBuf};

use prism_acceptance::harness::{run_prism, running_as_root, Server};
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::GetRequest;
use tonic::transport::Channel;
use tonic::Code;

fn config(data_dir: &Path, sandbox: &str) -> String {
    format!(
        r#"
[plugins.escaping]
path = "{{escaping}}"
isolation = "process"

[plugins.escaping.process]
sandbox = "{sandbox}"

[[namespaces]]
name = "jail"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "escaping"
config = {{ data_dir = "{data}" }}
"#,
        data = data_dir.display()
    )
}

struct Jail {
    dir: PathBuf,
    data: PathBuf,
}

impl Jail {
    fn new(name: &str) -> Jail {
        let dir = std::env::temp_dir().join(format!("prism-sandbox-{name}-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        Jail { dir, data }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn attempt(kv: &mut KeyValueServiceClient<Channel>, key: &str) -> Result<String, tonic::Status> {
    let request = GetRequest { namespace: "jail".into(), key: key.into(), ..Default::default() };
    let reply = kv.get(request).await?.into_inner();
    Ok(String::from_utf8_lossy(&reply.value).into_owned())
}

/// The machine's own TLS key, where Debian's ssl-cert package put one: beside the trust
/// store the sandbox lets plugins read, and not part of it.
fn machine_tls_key() -> Option<&'static str> {
    let key = "/etc/ssl/private/ssl-cert-snakeoil.key";
    Path::new(key).exists().then_some(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_plugin_cannot_read_secrets_write_elsewhere_trace_the_gateway_or_open_raw_sockets() {
    let jail = Jail::new("on");
    // A trust store outside the system's, as an operator names one for a private CA.
    let trust_store = jail.dir.join("private-ca.pem");
    std::fs::write(&trust_store, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let trust_store = trust_store.display().to_string();
    let server = Server::start_with_env(&config(&jail.data, "on"), &[], &[("SSL_CERT_FILE", &trust_store)]);
    let mut kv = server.keyvalue().await;
    let pid_before = server.plugin_process_pid();
    let outside = jail.dir.join("outside.txt");
    let mut refusals = vec![
        ("read:/etc/shadow".to_owned(), "Permission denied"),
        // The gateway's config (every slot's secrets) and its environment (credentials).
        (format!("read:{}", server.config_path().display()), "Permission denied"),
        (format!("read:/proc/{}/environ", server.pid()), "Permission denied"),
        (format!("write:{}", outside.display()), "Permission denied"),
        (format!("ptrace:{}", server.pid()), "Operation not permitted"),
        (format!("signal:{}", server.pid()), "Operation not permitted"),
        ("raw-socket".to_owned(), "Operation not permitted"),
        ("exec:/bin/true".to_owned(), "Operation not permitted"),
    ];
    if let Some(key) = machine_tls_key() {
        refusals.push((format!("read:{key}"), "Permission denied"));
    }
    for (key, error) in &refusals {
        let status =
            attempt(&mut kv, key).await.expect_err(&format!("get({key}) was allowed in the sandbox"));
        assert_eq!(status.code(), Code::FailedPrecondition, "get({key}): {}", status.message());
        assert!(
            status.message().contains(&format!("{key} refused")) && status.message().contains(error),
            "get({key}) failed with '{}', expected '{key} refused: {error}…'",
            status.message()
        );
    }
    assert!(!outside.exists(), "{} was written despite the refusal", outside.display());
    let inside = jail.data.join("inside.txt");
    let allowed = attempt(&mut kv, &format!("write:{}", inside.display())).await;
    assert_eq!(allowed.map_err(|s| s.message().to_owned()), Ok("allowed".into()), "writing in data_dir");
    assert!(inside.exists(), "the write the sandbox allowed left no file");
    let read = attempt(&mut kv, &format!("read:{trust_store}")).await;
    assert_eq!(read.map_err(|s| s.message().to_owned()), Ok("allowed".into()), "reading SSL_CERT_FILE");
    assert_eq!(attempt(&mut kv, "plain").await.map_err(|s| s.message().to_owned()), Ok(String::new()));
    assert_eq!(
        server.plugin_process_pid(),
        pid_before,
        "the plugin process was replaced: a refusal must not kill it"
    );
    let data = std::fs::canonicalize(&jail.data).unwrap();
    let line =
        format!("sandbox on: seccomp allow-list enforced; Landlock enforced; writable: {}", data.display());
    assert!(server.stderr().contains(&line), "no '{line}' in the log:\n{}", server.stderr());
    let status = server.status();
    assert!(
        status.contains(", sandbox: seccomp + Landlock"),
        "prism status does not show the sandbox:\n{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sandbox_off_the_same_attempts_go_through() {
    if !running_as_root() {
        eprintln!("reading /etc/shadow and raw sockets need root; the sandboxed test stands alone");
        return;
    }
    let jail = Jail::new("off");
    let server = Server::start(&config(&jail.data, "off"));
    let mut kv = server.keyvalue().await;
    let outside = jail.dir.join("outside.txt");
    for key in [
        "read:/etc/shadow".to_owned(),
        format!("read:{}", server.config_path().display()),
        format!("read:/proc/{}/environ", server.pid()),
        format!("write:{}", outside.display()),
        format!("ptrace:{}", server.pid()),
        format!("signal:{}", server.pid()),
        "raw-socket".to_owned(),
        "exec:/bin/true".to_owned(),
    ]
    .into_iter()
    .chain(machine_tls_key().map(|key| format!("read:{key}")))
    {
        let result = attempt(&mut kv, &key).await.map_err(|status| status.message().to_owned());
        assert_eq!(result, Ok("allowed".into()), "get({key}) with the sandbox off");
    }
    assert!(outside.exists());
    assert!(
        server.stderr().contains("sandbox off: the plugin runs with every right of its user"),
        "{}",
        server.stderr()
    );
    let status = server.status();
    assert!(status.contains(", sandbox: off"), "prism status does not show the sandbox is off:\n{status}");
}

/// A plugin's code first runs while the gateway probes its library (opens it in a child
/// and creates one instance, before any plugin process starts): that probe is in the
/// same sandbox. Here creating an instance writes outside the data directory; the
/// probe is refused, so the gateway does not start and nothing was written.
#[test]
fn the_probe_that_opens_a_library_first_is_sandboxed_too() {
    let jail = Jail::new("probe");
    let outside = jail.dir.join("written-by-the-probe.txt");
    let config = config(&jail.data, "on").replace(
        "config = { data_dir",
        &format!("config = {{ on_create = \"write:{}\", data_dir", outside.display()),
    );
    let path = jail.dir.join("plugins.toml");
    std::fs::write(&path, prism_acceptance::harness::with_plugin_paths(&config)).unwrap();
    let config_path = path.display().to_string();
    let (code, _, stderr) = run_prism(&["serve", "--config", &config_path, "--listen", "127.0.0.1:0"]);
    assert!(
        !outside.exists(),
        "the probe wrote {} outside the sandbox; the gateway said:\n{stderr}",
        outside.display()
    );
    let refusal = format!("write:{} refused: Permission denied", outside.display());
    assert!(stderr.contains(&refusal), "no '{refusal}' in:\n{stderr}");
    assert_eq!(code, 2, "the probe's refusal is a config error (exit 2), not a failed start: {stderr}");
}

/// Gateways on one machine share the plugin cache, where a library is copied under its
/// SHA-256 and its plugin processes open it (again at each restart). A gateway that
/// refuses the library (here its probe's create is refused) must not delete the copy
/// another gateway's plugin process runs from: after the refusal, that process is
/// killed and must come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_one_gateway_refuses_stays_usable_by_another_that_runs_it() {
    let jail = Jail::new("shared");
    let running = Server::start(&config(&jail.data, "on"));
    let mut kv = running.keyvalue().await;
    assert_eq!(attempt(&mut kv, "plain").await.map_err(|s| s.message().to_owned()), Ok(String::new()));
    let outside = jail.dir.join("refused.txt");
    let refused = config(&jail.data, "on").replace(
        "config = { data_dir",
        &format!("config = {{ on_create = \"write:{}\", data_dir", outside.display()),
    );
    let path = jail.dir.join("refused.toml");
    std::fs::write(&path, prism_acceptance::harness::with_plugin_paths(&refused)).unwrap();
    let (code, _, stderr) =
        run_prism(&["serve", "--config", &path.display().to_string(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "the second gateway was expected to refuse its config: {stderr}");
    let pid = running.plugin_process_pid();
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(killed.success(), "could not kill the plugin process {pid}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match attempt(&mut kv, "plain").await {
            Ok(_) => break,
            Err(status) if std::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "while restarting: {}", status.message());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => {
                panic!("the plugin process did not come back: {}\n{}", status.message(), running.stderr())
            }
        }
    }
}
