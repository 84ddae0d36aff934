//! Where JWT verification keys come from: a JSON Web Key Set file, read again when a
//! token names an unknown key id and the file changed; or an HTTPS URL, fetched in the
//! background, refreshed every `jwks_refresh_s`, retried with backoff after a failure
//! (the last good set keeps serving), and fetched early when a token names an unknown
//! key id (at most once per [`EARLY_FETCH_GAP`], so made-up key ids cannot flood the
//! issuer).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use tokio_rustls::rustls;

/// Shortest gap between two fetches a token with an unknown key id may cause.
pub const EARLY_FETCH_GAP: Duration = Duration::from_secs(10);
/// Bound on one fetch (connect, TLS, response).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set read; issuers publish a few KiB.
const MAX_KEY_SET_BYTES: usize = 1024 * 1024;
/// Longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub enum KeySource {
    File(FileKeys),
    Remote(Arc<RemoteKeys>),
}

#[derive(Debug)]
pub struct FileKeys {
    path: PathBuf,
    keys: RwLock<(JwkSet, Option<SystemTime>)>,
    last_refresh: Mutex<Instant>,
}

#[derive(Debug)]
pub struct RemoteKeys {
    url: reqwest::Url,
    client: reqwest::Client,
    refresh_every: Duration,
    keys: RwLock<Option<JwkSet>>,
    fetches: tokio::sync::Mutex<FetchState>,
    /// Why the last fetch failed, for refusals while no key set was ever fetched.
    last_error: Mutex<Option<String>>,
    background: Once,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    failures_in_a_row: u32,
}

impl KeySource {
    pub fn file(path: PathBuf) -> Result<KeySource, String> {
        let keys = read_key_set(&path)?;
        Ok(KeySource::File(FileKeys {
            path,
            keys: RwLock::new(keys),
            last_refresh: Mutex::new(Instant::now()),
        }))
    }

    /// Checks the URL and builds the client; fetches nothing until [`Self::start`] or
    /// the first token. Errors are `(key, message)`.
    pub fn remote(
        url: &str,
        ca_file: Option<&Path>,
        refresh_every: Duration,
        base_dir: &Path,
    ) -> Result<KeySource, (String, String)> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| ("auth.jwt.jwks_url".to_owned(), format!("'{url}' is not a URL: {e}")))?;
        if url.scheme() != "https" {
            return Err((
                "auth.jwt.jwks_url".to_owned(),
                format!(
                    "'{url}' is not https: keys fetched in the clear could be replaced by anyone on the path"
                ),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(ca_file) => {
                for ca in crate::tls::read_certificates(base_dir, ca_file, "auth.jwt.jwks_ca_file")? {
                    roots.add(ca).map_err(|e| {
                        ("auth.jwt.jwks_ca_file".to_owned(), format!("not a usable CA certificate: {e}"))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err((
                        "auth.jwt.jwks_url".to_owned(),
                        "this machine has no trusted CA certificates to verify the issuer with".to_owned(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| ("auth.jwt.jwks_url".to_owned(), e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ("auth.jwt.jwks_url".to_owned(), format!("cannot build an HTTPS client: {e}")))?;
        Ok(KeySource::Remote(Arc::new(RemoteKeys {
            url,
            client,
            refresh_every,
            keys: RwLock::new(None),
            fetches: tokio::sync::Mutex::new(FetchState::default()),
            last_error: Mutex::new(None),
            background: Once::new(),
        })))
    }

    /// Starts fetching a remote key set in the background (once; nothing for a file).
    pub fn start(&self) {
        if let KeySource::Remote(remote) = self {
            remote.start();
        }
    }

    /// Runs `find` on the key set held now; `None` when no set was ever fetched.
    pub fn with_keys<T>(&self, find: impl FnOnce(&JwkSet) -> T) -> Option<T> {
        match self {
            KeySource::File(file) => Some(find(&file.keys.read().unwrap_or_else(|e| e.into_inner()).0)),
            KeySource::Remote(remote) => {
                remote.keys.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(find)
            }
        }
    }

    /// Reads a file's key set again if it changed (at most once a second).
    pub fn reread_file(&self) {
        if let KeySource::File(file) = self {
            file.reread();
        }
    }

    /// The remote key set, when fetching it again now is allowed.
    pub fn remote_due(&self) -> Option<Arc<RemoteKeys>> {
        match self {
            KeySource::Remote(remote) if remote.early_fetch_allowed() => Some(remote.clone()),
            _ => None,
        }
    }

    /// Says where the keys come from, and why there are none yet.
    pub fn describe_missing(&self) -> String {
        match self {
            KeySource::File(file) => format!("the key set in {}", file.path.display()),
            KeySource::Remote(remote) => remote.describe(),
        }
    }
}

impl FileKeys {
    fn reread(&self) {
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < Duration::from_secs(1) {
                return;
            }
            *last = Instant::now();
        }
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.keys.read().unwrap_or_else(|e| e.into_inner()).1 {
            return;
        }
        match read_key_set(&self.path) {
            Ok(keys) => {
                tracing::info!(file = %self.path.display(), keys = keys.0.keys.len(), "read the JWT key set again");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
            }
            Err(message) => tracing::warn!("keeping the JWT key set read before: {message}"),
        }
    }
}

impl RemoteKeys {
    /// Says where the keys come from, and why there are none yet or whether the last
    /// fetch failed.
    pub fn describe(&self) -> String {
        let error = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let held = self.keys.read().unwrap_or_else(|e| e.into_inner()).is_some();
        match (held, error) {
            (false, Some(error)) => {
                format!("the key set at {}, which could not be fetched ({error})", self.url)
            }
            (false, None) => format!("the key set at {}, which is not fetched yet", self.url),
            (true, Some(error)) => {
                format!("the key set at {} (as fetched before; the last fetch failed: {error})", self.url)
            }
            (true, None) => format!("the key set at {}", self.url),
        }
    }

    fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.background.call_once(|| {
            runtime.spawn(refresh_in_background(Arc::downgrade(self)));
        });
    }

    fn early_fetch_allowed(&self) -> bool {
        match self.fetches.try_lock() {
            // A fetch is running: waiting for it is worthwhile.
            Err(_) => true,
            Ok(state) => state.last_attempt.is_none_or(|at| at.elapsed() >= EARLY_FETCH_GAP),
        }
    }

    /// Fetches the key set unless another fetch finished less than `gap` ago (then waits
    /// for a running one instead).
    pub async fn fetch_unless_recent(&self, gap: Duration) {
        let mut state = self.fetches.lock().await;
        if state.last_attempt.is_some_and(|at| at.elapsed() < gap) {
            return;
        }
        let result = self.fetch().await;
        state.last_attempt = Some(Instant::now());
        match result {
            Ok(set) => {
                if state.failures_in_a_row > 0
                    || self.keys.read().unwrap_or_else(|e| e.into_inner()).is_none()
                {
                    tracing::info!(url = %self.url, keys = set.keys.len(), "fetched the JWT key set");
                }
                state.failures_in_a_row = 0;
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(set);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(error) => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                tracing::warn!(url = %self.url, failures = state.failures_in_a_row, "cannot fetch the JWT key set (keeping the one fetched before, if any): {error}");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let mut response = self.client.get(self.url.clone()).send().await.map_err(|e| describe_error(&e))?;
        if !response.status().is_success() {
            return Err(format!("the server answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe_error(&e))? {
            if body.len() + chunk.len() > MAX_KEY_SET_BYTES {
                return Err(format!("the key set is larger than {MAX_KEY_SET_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| format!("the answer is not a JSON Web Key Set: {e}"))?;
        if set.keys.is_empty() {
            return Err("the key set holds no keys".to_owned());
        }
        Ok(set)
    }

    /// How long to wait before the next background fetch.
    async fn next_delay(&self) -> Duration {
        next_fetch_in(self.fetches.lock().await.failures_in_a_row, self.refresh_every)
    }
}

/// The wait before the next fetch: `refresh_every` after a success; after failures 1 s,
/// 2 s, 4 s … up to [`MAX_BACKOFF`], never longer than `refresh_every`.
fn next_fetch_in(failures_in_a_row: u32, refresh_every: Duration) -> Duration {
    if failures_in_a_row == 0 {
        return refresh_every;
    }
    let backoff = Duration::from_secs(1u64 << (failures_in_a_row - 1).min(16));
    backoff.min(MAX_BACKOFF).min(refresh_every)
}

/// Fetches now, then again every `refresh_every` (sooner after failures), for as long
/// as the configuration that owns the key set is alive.
async fn refresh_in_background(keys: Weak<RemoteKeys>) {
    loop {
        let Some(remote) = keys.upgrade() else { return };
        remote.fetch_unless_recent(Duration::from_secs(1)).await;
        let delay = remote.next_delay().await;
        drop(remote);
        tokio::time::sleep(delay).await;
    }
}

/// reqwest's error with its causes (e.g. the certificate problem under "error sending request").
fn describe_error(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn read_key_set(file: &Path) -> Result<(JwkSet, Option<SystemTime>), String> {
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JSON Web Key Set: {e}", file.display()))?;
    if set.keys.is_empty() {
        return Err(format!("{} holds no keys", file.display()));
    }
    Ok((set, modified))
}

#[cfg(test)]
mod tests {
    use super::next_fetch_in;
    use std::time::Duration;

    #[test]
    fn failed_fetches_back_off_to_five_minutes_and_never_past_the_refresh_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (0..12).map(|failures| next_fetch_in(failures, hour).as_secs()).collect();
        assert_eq!(waits, [3600, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(next_fetch_in(u32::MAX, hour), Duration::from_secs(300));
        assert_eq!(next_fetch_in(9, Duration::from_secs(60)), Duration::from_secs(60));
    }
}
