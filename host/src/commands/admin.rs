//! `prism status`, `prism reload` and `prism claim-check sweep`: one AdminService call
//! to a running server.

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{runtime, CommandError, CommandResult};
use crate::api::admin_service_client::AdminServiceClient;
use crate::api::{GetReloadStatusRequest, ReloadRequest, SweepClaimChecksRequest};
use crate::cli;

/// A running server and the credentials to present to it.
pub struct AdminTarget {
    pub server: String,
    pub token: Option<String>,
    pub api_key: Option<String>,
    /// CA certificate file for a TLS server.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key files for mTLS.
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, CommandError> {
    std::fs::read(path).map_err(|error| CommandError::Invalid(format!("{what} {}: {error}", path.display())))
}

type Credentials = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

async fn connect(
    target: &AdminTarget,
) -> Result<AdminServiceClient<InterceptedService<Channel, Credentials>>, CommandError> {
    let server = &target.server;
    let mut endpoint = tonic::transport::Endpoint::from_shared(server.clone())
        .map_err(|error| CommandError::Invalid(format!("--server {server}: {error}")))?;
    if target.ca.is_some() || target.client_identity.is_some() {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &target.ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "--ca")?));
        }
        if let Some((cert, key)) = &target.client_identity {
            tls = tls
                .identity(tonic::transport::Identity::from_pem(read(cert, "--cert")?, read(key, "--key")?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| CommandError::Invalid(format!("TLS settings: {error}")))?;
    }
    let channel = endpoint.connect().await.map_err(|error| {
        CommandError::Failed(format!("cannot reach {server}: {error} (is `prism serve` running there?)"))
    })?;
    let header = |name: &'static str, value: String| {
        MetadataValue::try_from(value).map(|value| (name, value)).map_err(|_| {
            CommandError::Invalid(format!("the {name} value is not valid metadata (ASCII, no newlines)"))
        })
    };
    let token = target.token.clone().map(|t| header("authorization", format!("Bearer {t}"))).transpose()?;
    let api_key = target.api_key.clone().map(|k| header("x-api-key", k)).transpose()?;
    let credentials: Credentials = Box::new(move |mut request: tonic::Request<()>| {
        for (name, value) in token.iter().chain(api_key.iter()) {
            request.metadata_mut().insert(*name, value.clone());
        }
        Ok(request)
    });
    Ok(AdminServiceClient::with_interceptor(channel, credentials))
}

fn refused(status: tonic::Status) -> CommandError {
    CommandError::Failed(format!("{:?}: {}", status.code(), status.message()))
}

pub fn status(target: &AdminTarget) -> CommandResult {
    runtime(tokio::runtime::Builder::new_current_thread())?.block_on(async {
        let reply =
            connect(target).await?.get_reload_status(GetReloadStatusRequest {}).await.map_err(refused)?;
        print!("{}", cli::render_status(&reply.into_inner()));
        Ok(())
    })
}

/// Exit 1 when the server refused the reload (the outcome says why).
pub fn reload(target: &AdminTarget) -> CommandResult {
    runtime(tokio::runtime::Builder::new_current_thread())?.block_on(async {
        let reply = connect(target).await?.reload(ReloadRequest {}).await.map_err(refused)?;
        let outcome = reply.into_inner().outcome.unwrap_or_default();
        print!("{}", cli::render_reload(&outcome));
        if outcome.ok {
            Ok(())
        } else {
            Err(CommandError::Reported(1))
        }
    })
}

/// Exit 1 when a namespace could not be swept (its line says why).
pub fn sweep_claim_checks(target: &AdminTarget, namespace: &str, apply: bool) -> CommandResult {
    runtime(tokio::runtime::Builder::new_current_thread())?.block_on(async {
        let request = SweepClaimChecksRequest { namespace: namespace.to_owned(), apply };
        let reply = connect(target).await?.sweep_claim_checks(request).await.map_err(refused)?.into_inner();
        print!("{}", cli::render_sweep(&reply));
        match reply.namespaces.iter().any(|swept| !swept.error.is_empty()) {
            true => Err(CommandError::Reported(1)),
            false => Ok(()),
        }
    })
}

/// `prism auth new-api-key NAME`: 32 random bytes from the OS, hex-encoded.
pub fn new_api_key(name: &str) -> CommandResult {
    if !crate::shared::valid_name(name) {
        return Err(CommandError::Invalid(format!(
            "'{name}' is not a valid key name: 1-64 letters, digits, '-', '_' or '.'"
        )));
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .map_err(|e| CommandError::Failed(format!("/dev/urandom: {e}")))?,
        &mut bytes,
    )
    .map_err(|e| CommandError::Failed(format!("/dev/urandom: {e}")))?;
    let key = format!("prism_{}", hex::encode(bytes));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    print!("{}", cli::render_new_api_key(name, &key, &digest));
    Ok(())
}
