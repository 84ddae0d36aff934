//! TLS to PostgreSQL, asked for the way libpq users write it: `sslmode` and
//! `sslrootcert` in the url (`postgres://…?sslmode=verify-full&sslrootcert=ca.pem`, or
//! `sslmode=require` in key=value form). tokio-postgres parses neither `verify-full`
//! nor `sslrootcert`, so they are taken out here. Every TLS mode verifies the server's
//! certificate and host name (against `sslrootcert`, or the system's trust store):
//! this plugin never talks to a server it could not verify.

use std::sync::Arc;

use plugin_abi::PluginError;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connection string split into what tokio-postgres reads and the TLS to use.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
}

pub fn parse(url: &str) -> Result<Target, PluginError> {
    let (rest, settings) = take_ssl_settings(url);
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        PluginError::invalid_argument(format!("url: not a PostgreSQL connection string: {e}"))
    })?;
    let mode = settings.mode.as_deref().unwrap_or("disable");
    let tls = match mode {
        "disable" => {
            if settings.root_cert.is_some() {
                return Err(PluginError::invalid_argument("url: sslrootcert needs sslmode=require or verify-full"));
            }
            None
        }
        "require" | "verify-ca" | "verify-full" => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Some(MakeRustlsConnect::new(client_config(settings.root_cert.as_deref())?))
        }
        other => {
            return Err(PluginError::invalid_argument(format!(
                "url: sslmode={other} is not supported: use disable, require or verify-full (all TLS modes verify the server)"
            )))
        }
    };
    Ok(Target { config, tls })
}

#[derive(Default)]
struct SslSettings {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Removes `sslmode` and `sslrootcert` from a url (`?a=b&…`) or key=value string.
fn take_ssl_settings(url: &str) -> (String, SslSettings) {
    let mut settings = SslSettings::default();
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            settings.mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            settings.root_cert = Some(value.to_owned());
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), settings) };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.split_once('=').is_some_and(|(key, value)| take(key, value)))
            .collect();
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        (rest, settings)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| !pair.split_once('=').is_some_and(|(key, value)| take(key, value)))
            .collect();
        (kept.join(" "), settings)
    }
}

fn client_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig, PluginError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| PluginError::invalid_argument(format!("url: sslrootcert {path}: {e}")))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| PluginError::invalid_argument(format!("url: sslrootcert {path}: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(PluginError::invalid_argument(
            "url: no CA certificate to verify the server with (set sslrootcert)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_settings_are_taken_out_of_both_forms() {
        let (rest, s) = take_ssl_settings(
            "postgres://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        );
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!((s.mode.as_deref(), s.root_cert.as_deref()), (Some("verify-full"), Some("/ca.pem")));
        let (rest, s) = take_ssl_settings("host=h user=u sslmode=require dbname=test");
        assert_eq!(rest, "host=h user=u dbname=test");
        assert_eq!(s.mode.as_deref(), Some("require"));
        let (rest, s) = take_ssl_settings("postgres://u@h/db");
        assert_eq!((rest.as_str(), s.mode), ("postgres://u@h/db", None));
    }

    #[test]
    fn unsupported_modes_are_refused_by_name() {
        let error = parse("postgres://u@h/db?sslmode=prefer").err().unwrap();
        assert!(error.message().contains("sslmode=prefer is not supported"), "{error}");
        assert!(parse("postgres://u@h/db?sslmode=disable").unwrap().tls.is_none());
    }
}
