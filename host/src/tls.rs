//! TLS on the gRPC listener (`[server.tls]`), with rustls: certificate and key from PEM
//! files, optional client-certificate verification against a CA (mTLS) whose names
//! become the caller's `cert:` principal. The files are checked for changes every
//! `reload_check_ms`; a new certificate, key or CA applies to new connections, and open
//! connections keep the session they have (nothing is dropped). A change that does not
//! load is logged and the previous files keep serving.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

use tokio::sync::OwnedSemaphorePermit;

use crate::connections::{Limiter, Tagged};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS handshake that takes longer than this is abandoned (a client that opens a
/// connection and sends nothing holds no task for long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (relative to the config file's directory).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; enables mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client must present a certificate.
    #[serde(default)]
    pub client_certificates: ClientCertificates,
    /// How often the files are checked for changes, in milliseconds.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

fn default_reload_check_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificates {
    /// Every client presents a certificate the CA signed (the handshake fails otherwise).
    #[default]
    Required,
    /// A client may present one (then it must verify) or authenticate otherwise.
    Optional,
}

impl TlsConfig {
    fn files(&self, base_dir: &Path) -> Vec<PathBuf> {
        let mut files = vec![base_dir.join(&self.cert_file), base_dir.join(&self.key_file)];
        files.extend(self.client_ca_file.as_ref().map(|ca| base_dir.join(ca)));
        files
    }
}

/// Reads the files into a rustls server config; errors are `(key, message)`.
pub fn server_config(
    settings: &TlsConfig,
    base_dir: &Path,
) -> Result<rustls::ServerConfig, (String, String)> {
    let certificates = read_certificates(base_dir, &settings.cert_file, "server.tls.cert_file")?;
    let key_path = base_dir.join(&settings.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        (
            "server.tls.key_file".to_owned(),
            format!("cannot read a private key from {}: {e}", key_path.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| ("server.tls".to_owned(), e.to_string()))?;
    let builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certificates(base_dir, ca_file, "server.tls.client_ca_file")? {
                roots.add(ca).map_err(|e| {
                    (
                        "server.tls.client_ca_file".to_owned(),
                        format!("{}: not a usable CA certificate: {e}", ca_file.display()),
                    )
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_certificates {
                ClientCertificates::Required => verifier.build(),
                ClientCertificates::Optional => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| ("server.tls.client_ca_file".to_owned(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certificates, key).map_err(|e| {
        (
            "server.tls.key_file".to_owned(),
            format!("the key does not fit the certificate, or is unusable: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The PEM certificates in `file` (at least one); errors name the config `key`.
pub(crate) fn read_certificates(
    base_dir: &Path,
    file: &Path,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, (String, String)> {
    let path = base_dir.join(file);
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| (key.to_owned(), format!("cannot read certificates from {}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err((key.to_owned(), format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

/// The current server config, replaced when the files change.
pub struct TlsSource {
    settings: TlsConfig,
    base_dir: PathBuf,
    current: ArcSwap<rustls::ServerConfig>,
}

impl TlsSource {
    pub fn new(settings: TlsConfig, base_dir: PathBuf) -> Result<Arc<TlsSource>, String> {
        let config =
            server_config(&settings, &base_dir).map_err(|(key, message)| format!("{key}: {message}"))?;
        Ok(Arc::new(TlsSource { settings, base_dir, current: ArcSwap::from_pointee(config) }))
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.settings
            .files(&self.base_dir)
            .iter()
            .map(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Checks the files every `reload_check_ms` and swaps in what changed and loads.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = self.modified();
        let mut ticks = tokio::time::interval(Duration::from_millis(self.settings.reload_check_ms.max(100)));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = self.modified();
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.settings, &self.base_dir) {
                Ok(config) => {
                    self.current.store(Arc::new(config));
                    tracing::info!("TLS certificate files changed: new connections use them");
                }
                Err((key, message)) => {
                    tracing::warn!("TLS files changed but do not load ({key}: {message}); the previous ones keep serving")
                }
            }
        }
    }
}

/// What a TLS connection tells each of its calls (tonic puts it in request extensions).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: SocketAddr,
    /// The verified client certificate's DNS and URI names, then its subject CN; empty
    /// when the client presented none.
    pub certificate_names: Vec<String>,
}

/// An accepted, handshaken TLS connection and what it tells its calls.
pub type TlsConnection = Tagged<tokio_rustls::server::TlsStream<TcpStream>, TlsConnectInfo>;

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.tag.clone()
    }
}

/// Accepts TCP connections and hands over those whose handshake succeeds; each
/// handshake runs in its own task, so a slow one never holds up the others. A
/// connection takes its place under `limiter` when it is accepted, not when its
/// handshake ends: one over the limit is closed before any handshake work.
pub fn incoming(
    listener: TcpListener,
    source: Arc<TlsSource>,
    limiter: Limiter,
) -> tokio_stream::wrappers::ReceiverStream<Result<Tagged<TlsConnection, OwnedSemaphorePermit>, io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = limiter.admit() else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(source.current.load_full());
            if sender.is_closed() {
                return;
            }
            let handshaken = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certificate_names = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| certificate_names(leaf.as_ref()))
                            .unwrap_or_default();
                        let info = TlsConnectInfo { remote_addr, certificate_names };
                        let connection = Tagged { io: Tagged { io: stream, tag: info }, tag: permit };
                        let _ = handshaken.send(Ok(connection)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%remote_addr, "TLS handshake failed: {error}"),
                    Err(_) => tracing::debug!(%remote_addr, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// A certificate's DNS and URI subject alternative names; its subject CNs only when it
/// has no subject alternative name at all (RFC 6125: a CA may let a requester choose
/// the CN, so it must not name a principal beside the names the CA vouched for).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::URI(uri) => names.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    let has_alternative_names = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| !san.value.general_names.is_empty());
    if !has_alternative_names {
        names.extend(
            certificate.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned),
        );
    }
    names
}
