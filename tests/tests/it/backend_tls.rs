//! The gateway's connections to backends over TLS, against servers the tests start with
//! freshly made certificates.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_acceptance::harness::{free_port, Server};
use prism_api::*;

use super::certs::Ca;

/// A private `redis-server` that only speaks TLS.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(ca: &Ca) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(dir.path(), "redis");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "no", "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (cargo xtask test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { port, child, _dir: dir }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_namespace(config: &str) -> String {
    format!(
        r#"
[plugins.redis]
path = "{{redis}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "redis", config = {config} }}
"#
    )
}

/// Why `config` is refused: `prism validate`'s errors, or if it validates, those of a
/// `prism serve` that could not start.
fn refusal(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let library = prism_acceptance::harness::plugin_library("prism_redis");
    std::fs::write(&path, config.replace("{redis}", &library.display().to_string())).unwrap();
    let prism = prism_acceptance::harness::prism_binary();
    let validate = Command::new(&prism).arg("validate").arg(&path).output().unwrap();
    if !validate.status.success() {
        return String::from_utf8_lossy(&validate.stderr).into_owned();
    }
    let serve = Command::new(&prism)
        .args(["serve", "--no-watch", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!serve.status.success(), "the gateway started");
    String::from_utf8_lossy(&serve.stderr).into_owned()
}

#[tokio::test]
async fn redis_over_tls_verifies_the_server_against_the_configured_ca() {
    let ca = Ca::new("Redis test CA");
    let redis = TlsRedis::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let config = redis_namespace(&format!(
        "{{ url = \"rediss://localhost:{}/0\", tls_ca_file = \"{}\", key_prefix = \"tls-e2e:\" }}",
        redis.port,
        ca_file.display()
    ));
    let server = Server::start(&config);
    let mut kv = server.keyvalue().await;
    kv.set(SetRequest { key: "k".into(), value: b"over tls".to_vec().into(), ..Default::default() })
        .await
        .unwrap();
    let got = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"over tls");
    drop(server);

    // A server whose certificate the trust store does not know is refused at start.
    let untrusted =
        refusal(&redis_namespace(&format!("{{ url = \"rediss://localhost:{}/0\" }}", redis.port)));
    assert!(untrusted.contains("cannot connect to rediss://localhost"), "{untrusted}");
    // Plaintext to the TLS port fails too, and TLS settings on a redis:// url are refused.
    let plaintext = refusal(&redis_namespace(&format!("{{ url = \"redis://127.0.0.1:{}/0\" }}", redis.port)));
    assert!(plaintext.contains("cannot connect"), "{plaintext}");
    let mixed = refusal(&redis_namespace(&format!(
        "{{ url = \"redis://127.0.0.1:{}/0\", tls_ca_file = \"{}\" }}",
        redis.port,
        ca_file.display()
    )));
    assert!(mixed.contains("need a rediss:// url"), "{mixed}");
}
