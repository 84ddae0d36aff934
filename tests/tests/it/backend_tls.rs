//! The gateway's connections to backends over TLS, against servers the tests start with
//! freshly made certificates.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_acceptance::harness::{free_port, Server};
use prism_api::*;

use super::certs::Ca;

/// A private server a test started, listening on `port`; stopped (SIGTERM, which also
/// reaches a server started through runuser) when dropped.
struct TestServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Waits until `child` accepts connections on `port`.
    fn listening(child: Child, port: u16, dir: tempfile::TempDir, what: &str) -> TestServer {
        let server = TestServer { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{what} did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// A private `redis-server` that only speaks TLS.
fn tls_redis(ca: &Ca) -> TestServer {
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
    TestServer::listening(child, port, dir, "redis-server")
}

/// A `default` keyvalue namespace on `plugin` with the slot config `config` (inline TOML).
fn keyvalue_namespace(plugin: &str, config: &str) -> String {
    format!(
        r#"
[plugins.{plugin}]
path = "{{{plugin}}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "{plugin}", config = {config} }}
"#
    )
}

/// Why `config` (with plugin placeholders) is refused: `prism validate`'s errors, or if it
/// validates, those of a `prism serve` that could not start.
fn refusal(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, prism_acceptance::harness::with_plugin_paths(config)).unwrap();
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
    let redis = tls_redis(&ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let config = keyvalue_namespace(
        "redis",
        &format!(
            "{{ url = \"rediss://localhost:{}/0\", tls_ca_file = \"{}\", key_prefix = \"tls-e2e:\" }}",
            redis.port,
            ca_file.display()
        ),
    );
    let server = Server::start(&config);
    let mut kv = server.keyvalue().await;
    kv.set(SetRequest { key: "k".into(), value: b"over tls".to_vec().into(), ..Default::default() })
        .await
        .unwrap();
    let got = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"over tls");
    drop(server);

    // A server whose certificate the trust store does not know is refused at start.
    let untrusted = refusal(&keyvalue_namespace(
        "redis",
        &format!("{{ url = \"rediss://localhost:{}/0\" }}", redis.port),
    ));
    assert!(untrusted.contains("cannot connect to rediss://localhost"), "{untrusted}");
    // Plaintext to the TLS port fails too, and TLS settings on a redis:// url are refused.
    let plaintext =
        refusal(&keyvalue_namespace("redis", &format!("{{ url = \"redis://127.0.0.1:{}/0\" }}", redis.port)));
    assert!(plaintext.contains("cannot connect"), "{plaintext}");
    let mixed = refusal(&keyvalue_namespace(
        "redis",
        &format!(
            "{{ url = \"redis://127.0.0.1:{}/0\", tls_ca_file = \"{}\" }}",
            redis.port,
            ca_file.display()
        ),
    ));
    assert!(mixed.contains("need a rediss:// url"), "{mixed}");
}

/// A private PostgreSQL that accepts only TLS connections from 127.0.0.1 (`hostssl`).
fn tls_postgres(ca: &Ca) -> TestServer {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (cargo xtask test installs them)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .max()
        .expect("an initdb under /usr/lib/postgresql");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // PostgreSQL refuses to run as root: as root, run it as the postgres user.
    let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let run = |program: &std::path::Path| {
        if as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    };
    if as_root {
        assert!(Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap().success());
    }
    let initdb = run(&bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(initdb.success(), "initdb failed");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(&data, "server");
    std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        .unwrap();
    if as_root {
        assert!(Command::new("chown").args(["-R", "postgres"]).arg(&data).status().unwrap().success());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let child = run(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.path().display()))
        .args(["-c", "ssl=on"])
        .arg("-c")
        .arg(format!("ssl_cert_file={}", cert.display()))
        .arg("-c")
        .arg(format!("ssl_key_file={}", key.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    TestServer::listening(child, port, dir, "postgres")
}

#[tokio::test]
async fn postgres_over_tls_with_verify_full() {
    let ca = Ca::new("PostgreSQL test CA");
    let postgres = tls_postgres(&ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        postgres.port,
        ca_file.display()
    );
    let server = Server::start(&keyvalue_namespace("postgres", &format!("{{ url = \"{url}\" }}")));
    let mut kv = server.keyvalue().await;
    kv.set(SetRequest { key: "k".into(), value: b"over tls".to_vec().into(), ..Default::default() })
        .await
        .unwrap();
    let got = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"over tls");
    drop(server);

    // The server takes only TLS: plaintext is refused, and so is a server the system's
    // trust store cannot verify.
    for (case, url, expected) in [
        ("plaintext", format!("postgres://postgres@127.0.0.1:{}/postgres", postgres.port), "no encryption"),
        (
            "unknown CA",
            format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full", postgres.port),
            "certificate",
        ),
    ] {
        let why = refusal(&keyvalue_namespace("postgres", &format!("{{ url = \"{url}\" }}")));
        assert!(why.to_lowercase().contains(expected), "{case}: {why}");
    }
}

/// A private `nats-server` that requires TLS.
fn tls_nats(ca: &Ca) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(dir.path(), "nats");
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls", "--tlscert"])
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server must be installed (cargo xtask test installs it)");
    TestServer::listening(child, port, dir, "nats-server")
}

#[tokio::test]
async fn nats_over_tls_delivers_through_the_gateway() {
    let ca = Ca::new("NATS test CA");
    let nats = tls_nats(&ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = format!(
        r#"
[plugins.nats]
path = "{{nats}}"

[[namespaces]]
name = "events"
pattern = "pubsub"
slots.broker = {{ plugin = "nats", config = {{ url = "tls://localhost:{}", tls_ca_file = "{}" }} }}
"#,
        nats.port,
        ca_file.display()
    );
    let server = Server::start(&config);
    let mut pubsub = server.pubsub().await;
    let subscribe =
        SubscribeRequest { namespace: "events".into(), topic: "tls.check".into(), ..Default::default() };
    let mut messages = pubsub.subscribe(subscribe).await.unwrap().into_inner();
    let publish = PublishRequest {
        namespace: "events".into(),
        topic: "tls.check".into(),
        payload: b"over tls".to_vec().into(),
        metadata: Default::default(),
        ..Default::default()
    };
    // The subscription reaches the server asynchronously: publish until one arrives.
    let received = async {
        loop {
            pubsub.publish(publish.clone()).await.unwrap();
            if let Ok(Ok(Some(reply))) =
                tokio::time::timeout(Duration::from_millis(200), messages.message()).await
            {
                return reply;
            }
        }
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), received).await.expect("a message over TLS");
    assert_eq!(&reply.message.unwrap().payload[..], b"over tls");
    drop(server);

    // Without the CA, the server's certificate is not trusted and the gateway does not start.
    let untrusted = config.replace(&format!(", tls_ca_file = \"{}\"", ca_file.display()), "");
    let why = refusal(&untrusted);
    assert!(why.contains("cannot connect to tls://localhost"), "{why}");
}

/// The tansu binary `cargo xtask test` installs, if this machine has it.
fn tansu() -> Option<std::path::PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cargo")))?;
    Some(cargo_home.join("bin/tansu")).filter(|path| path.exists())
}

/// A private Kafka broker reachable only over TLS: tansu (which has no TLS listener of its
/// own) on a plain port, advertising the port of a TLS-terminating proxy in front of it,
/// so every connection librdkafka makes, bootstrap and partition leaders alike, is TLS.
struct TlsKafka {
    port: u16,
    _broker: TestServer,
    proxy: tokio::task::JoinHandle<()>,
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        self.proxy.abort();
    }
}

async fn tls_kafka(tansu: &std::path::Path, ca: &Ca) -> TlsKafka {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let (plain, tls) = (free_port(), free_port());
    let child = Command::new(tansu)
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{plain}")])
        // By name: the name librdkafka verifies the proxy's certificate for.
        .args(["--advertised-listener-url", &format!("tcp://localhost:{tls}")])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = TestServer::listening(child, plain, tempfile::tempdir().unwrap(), "tansu");

    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", tls)).await.unwrap();
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else { return };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", plain)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    TlsKafka { port: tls, _broker: broker, proxy }
}

// Multi-threaded: the proxy must keep serving while Server::start blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_with_librdkafka_ssl_properties() {
    let Some(tansu) = tansu() else {
        assert!(
            std::env::var_os("PRISM_REQUIRE_BACKENDS").is_none(),
            "tansu is not installed (cargo xtask test installs it)"
        );
        eprintln!("skipped: tansu is not installed");
        return;
    };
    let ca = Ca::new("Kafka test CA");
    let kafka = tls_kafka(&tansu, &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = |properties: &str| {
        format!(
            r#"
[plugins.kafka]
path = "{{kafka}}"

[[namespaces]]
name = "logs"
pattern = "stream"
[namespaces.slots.log]
plugin = "kafka"
config = {{ brokers = "localhost:{}", partitions = 1, request_timeout_ms = 3000, properties = {{ {properties} }} }}
"#,
            kafka.port
        )
    };
    let trusted =
        config(&format!("\"security.protocol\" = \"ssl\", \"ssl.ca.location\" = \"{}\"", ca_file.display()));
    let server = Server::start(&trusted);
    let mut stream = server.stream().await;
    let append = AppendRequest {
        namespace: "logs".into(),
        stream: "tls-check".into(),
        payload: b"over tls".to_vec().into(),
        ..Default::default()
    };
    let appended = stream.append(append.clone()).await.expect("an append over TLS").into_inner();
    let read = ReadRequest {
        namespace: "logs".into(),
        stream: "tls-check".into(),
        partition: appended.partition,
        start: Some(read_request::Start::FromOffset(appended.offset)),
        follow: false,
        max_records: 1,
    };
    let mut records = stream.read(read).await.unwrap().into_inner();
    let record = tokio::time::timeout(Duration::from_secs(10), records.message())
        .await
        .expect("a record within 10 s")
        .unwrap()
        .and_then(|response| response.record)
        .expect("the appended record");
    assert_eq!(&record.payload[..], b"over tls");
    drop(server);

    // Plaintext to the TLS port, or TLS without the CA: the gateway does not start, saying why.
    for (properties, why) in [
        (String::new(), "cannot reach brokers localhost:"),
        ("\"security.protocol\" = \"ssl\"".to_owned(), "certificate verify failed"),
    ] {
        let refused = refusal(&config(&properties));
        assert!(refused.contains(why), "{refused}");
    }
}
