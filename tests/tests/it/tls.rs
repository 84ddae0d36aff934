//! TLS on the listener: served with a certificate from files, client certificates
//! verified against a CA and used as `cert:` principals, and certificate files replaced
//! while the gateway runs without dropping open connections.

use std::sync::Arc;
use std::time::Duration;

use prism_acceptance::harness::{run_prism, Server};
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::certs::{Ca, Leaf};

const MEMSTORE_DEFAULT: &str = r#"
[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;

/// `[server.tls]` with the server's files in `dir` (and `extra` lines), then `rest`.
fn tls_config(dir: &std::path::Path, server: &Leaf, extra: &str, rest: &str) -> String {
    let (cert, key) = server.write(dir, "server");
    format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_check_ms = 200\n{extra}\n{rest}\n{MEMSTORE_DEFAULT}",
        cert.display(),
        key.display()
    )
}

async fn tls_channel(
    server: &Server,
    ca: &Ca,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    Channel::from_shared(format!("https://{}", server.address)).unwrap().tls_config(tls)?.connect().await
}

async fn set(channel: &Channel, key: &str) -> Result<(), tonic::Status> {
    let mut kv = KeyValueServiceClient::new(channel.clone());
    kv.set(SetRequest { key: key.into(), value: b"v".to_vec().into(), ..Default::default() })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn tls_serves_verified_clients_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Prism test CA");
    let server = Server::start(&tls_config(dir.path(), &ca.issue(&["localhost", "127.0.0.1"]), "", ""));

    let channel = tls_channel(&server, &ca, None).await.expect("a TLS client that trusts the CA connects");
    set(&channel, "over-tls").await.unwrap();
    let mut kv = KeyValueServiceClient::new(channel);
    let got = kv.get(GetRequest { key: "over-tls".into(), ..Default::default() }).await.unwrap().into_inner();
    assert!(got.found);

    // A plaintext client gets no answer it can use.
    let plain = Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
    assert!(set(&plain, "plain").await.is_err());
    // Nor does a client that does not trust the server's CA.
    let other_ca = Ca::new("Another CA");
    let untrusting = tls_channel(&server, &other_ca, None).await;
    assert!(untrusting.is_err() || set(&untrusting.unwrap(), "k").await.is_err());
}

#[tokio::test]
async fn client_certificates_name_the_caller_and_foreign_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Prism test CA");
    let ca_file = dir.path().join("clients-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let auth = r#"
[[auth.rules]]
principals = ["cert:orders.internal"]
namespaces = ["default"]
permissions = ["read", "write"]

[[auth.rules]]
principals = ["cert:ops.internal"]
namespaces = ["*"]
permissions = ["admin"]
"#;
    let config = tls_config(
        dir.path(),
        &ca.issue(&["localhost", "127.0.0.1"]),
        &format!("client_ca_file = \"{}\"", ca_file.display()),
        auth,
    );
    let server = Server::start(&config);

    let orders = ca.issue(&["orders.internal"]);
    let channel = tls_channel(&server, &ca, Some(&orders)).await.unwrap();
    set(&channel, "from-orders").await.expect("cert:orders.internal may write to default");

    let billing = ca.issue(&["billing.internal"]);
    let channel = tls_channel(&server, &ca, Some(&billing)).await.unwrap();
    let status = set(&channel, "from-billing").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with("cert:billing.internal may not write on namespace 'default'"),
        "{status:?}"
    );

    // A CN is a name only on a certificate without alternative names: a requester who
    // may choose the CN of a certificate for billing.internal cannot become orders.
    let chosen_cn = ca.issue_with_cn(&["billing.internal"], "orders.internal");
    let channel = tls_channel(&server, &ca, Some(&chosen_cn)).await.unwrap();
    let status = set(&channel, "cn-chosen").await.expect_err("a CN beside alternative names names no one");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("cert:billing.internal may not"), "{status:?}");
    let cn_only = ca.issue_with_cn(&[], "orders.internal");
    let channel = tls_channel(&server, &ca, Some(&cn_only)).await.unwrap();
    set(&channel, "cn-only").await.expect("a certificate with only a CN is known by it");

    // No certificate, or one from another CA: the handshake fails, no call is served.
    for (case, client) in
        [("no certificate", None), ("another CA", Some(Ca::new("Rogue CA").issue(&["orders.internal"])))]
    {
        let refused = match tls_channel(&server, &ca, client.as_ref()).await {
            Err(_) => true,
            Ok(channel) => set(&channel, "rogue").await.is_err(),
        };
        assert!(refused, "{case}: the call should not be served");
    }

    // prism status over mTLS, as an operator whose certificate grants admin.
    let (ops_cert, ops_key) = ca.issue(&["ops.internal"]).write(dir.path(), "ops");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let url = format!("https://localhost:{}", server.address.rsplit(':').next().unwrap());
    let (code, stdout, stderr) = run_prism(&[
        "status",
        "--server",
        &url,
        "--ca",
        ca_pem.to_str().unwrap(),
        "--cert",
        ops_cert.to_str().unwrap(),
        "--key",
        ops_key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("memstore"), "{stdout}");
}

/// The leaf certificate a fresh TLS handshake with the server receives.
async fn served_certificate(server: &Server, ca: &Ca) -> Vec<u8> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&server.address).await.unwrap();
    let stream = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    let der: tokio_rustls::rustls::pki_types::CertificateDer =
        tokio_rustls::rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    der.to_vec()
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Prism test CA");
    let first = ca.issue(&["localhost", "127.0.0.1"]);
    let server = Server::start(&tls_config(dir.path(), &first, "", ""));
    assert_eq!(served_certificate(&server, &ca).await, der_of(&first.cert_pem));
    let open = tls_channel(&server, &ca, None).await.unwrap();
    set(&open, "before").await.unwrap();

    // Renewal: the new files are written aside and renamed into place.
    let second = ca.issue(&["localhost", "127.0.0.1"]);
    let (cert, key) = second.write(dir.path(), "renewed");
    std::fs::rename(key, dir.path().join("server.key")).unwrap();
    std::fs::rename(cert, dir.path().join("server.crt")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_certificate(&server, &ca).await != der_of(&second.cert_pem) {
        assert!(std::time::Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set(&open, "after").await.expect("the connection opened before the renewal still serves");

    // A broken replacement is refused and the renewed one keeps serving.
    std::fs::write(dir.path().join("server.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_certificate(&server, &ca).await, der_of(&second.cert_pem));
    assert!(server.stderr().contains("do not load"), "{}", server.stderr());
}

#[test]
fn unreadable_tls_files_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("plugins.toml");
    let config = "[server.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n".to_owned()
        + &MEMSTORE_DEFAULT.replace(
            "{memstore}",
            &prism_acceptance::harness::plugin_library("prism_memstore").display().to_string(),
        );
    std::fs::write(&config_path, config).unwrap();
    let (code, _, stderr) = run_prism(&["validate", config_path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("server.tls.cert_file") && stderr.contains("missing.crt"), "{stderr}");
}

#[test]
fn plaintext_is_warned_about_on_a_non_loopback_address_only() {
    use std::io::BufRead;
    let warning = "serving plaintext on a non-loopback address";
    let loopback = Server::start(MEMSTORE_DEFAULT);
    assert!(!loopback.stderr().contains(warning), "{}", loopback.stderr());
    drop(loopback);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, prism_acceptance::harness::with_plugin_paths(MEMSTORE_DEFAULT)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(prism_acceptance::harness::prism_binary())
        .args(["serve", "--no-watch", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let served = stdout.lines().map_while(Result::ok).any(|line| line.starts_with("prism: serving on"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "the gateway started");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains(warning), "{stderr}");
}

#[tokio::test]
async fn connections_still_in_their_tls_handshake_count_against_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Prism test CA");
    let config =
        tls_config(dir.path(), &ca.issue(&["localhost", "127.0.0.1"]), "", "[server]\nmax_connections = 3\n");
    let server = Server::start(&config);
    let descriptors = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    let before = descriptors();
    // Forty connections that never send a ClientHello: three hold the places, the rest
    // are closed at once instead of each holding a socket for the 10 s handshake timeout.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(tokio::net::TcpStream::connect(&server.address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = descriptors().saturating_sub(before);
    assert!(
        held <= 3,
        "the gateway holds {held} descriptors for connections that never finished a handshake"
    );
    // When they go, their places are free for a real client.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channel = tls_channel(&server, &ca, None).await.expect("a place is free again");
    set(&channel, "after-the-flood").await.unwrap();
}
