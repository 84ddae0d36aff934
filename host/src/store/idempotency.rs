//! Idempotency tokens: a write carrying `idempotency_token` is applied at most once per
//! token within the window, and a retry gets the first call's response.
//!
//! A token is `{unix_ms}-{random}`: the client's clock when it first sent the call, and
//! 8–64 characters of `A-Z a-z 0-9 _ -` it chose at random. The time bounds the window:
//! a token older than `server.idempotency_window_ms` (or over a minute ahead of the
//! gateway's clock) is refused, so a retry after the window fails and says why instead
//! of applying twice.
//!
//! Each token has a record: claimed as `pending` (create-if-absent) before the write
//! runs, replaced by the encoded response when it succeeds, removed when it fails (so
//! the retry runs again). Claim, write and record run in a task of their own, so a
//! caller that gives up (a client deadline) does not stop a started write from
//! finishing and recording its result. Records live in the namespace's `idempotency` slot when it is bound (any
//! plugin with `keyvalue_cas`: durable on sqlite, postgres, redis), otherwise in the
//! gateway's memory (lost at restart, not shared between gateways).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_abi::host::Instance;
use plugin_abi::CasResult;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::shared::plugin_status;

/// How far ahead of the gateway's clock a token's time may be.
const CLOCK_SKEW_MS: i64 = 60_000;
/// How long a retry waits for the first call, still running, to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
/// A write still pending after this long never finished: the gateway running it stopped.
const PENDING_LEASE_MS: i64 = 60_000;
/// Most records kept in memory (a record lives for the window).
const MAX_MEMORY_RECORDS: usize = 1_000_000;

/// A parsed, in-window token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    issued_unix_ms: i64,
}

/// The token of a request (`None` when the field is empty), checked against the window.
pub fn token(text: &str, window: Duration, now_unix_ms: i64) -> Result<Option<Token>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    let format = "use {unix_ms}-{random}: the client's time in milliseconds when it first sent the call, \
                  '-', and 8-64 random characters of A-Z a-z 0-9 _ -";
    let Some((time, random)) = text.split_once('-') else {
        return Err(Status::invalid_argument(format!("idempotency_token '{text}' is malformed: {format}")));
    };
    let random_ok = (8..=64).contains(&random.len())
        && random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let issued: Option<i64> = time.parse().ok().filter(|_| time.bytes().all(|b| b.is_ascii_digit()));
    let (Some(issued), true) = (issued, random_ok) else {
        return Err(Status::invalid_argument(format!("idempotency_token '{text}' is malformed: {format}")));
    };
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if issued < now_unix_ms.saturating_sub(window_ms) {
        return Err(Status::failed_precondition(format!(
            "idempotency_token '{text}' is older than the {window_ms} ms window (server.idempotency_window_ms): \
             a retry this late could apply the write twice, so it is refused; check whether the first call \
             took effect, then send a new token"
        )));
    }
    if issued > now_unix_ms.saturating_add(CLOCK_SKEW_MS) {
        return Err(Status::invalid_argument(format!(
            "idempotency_token '{text}' is dated more than {CLOCK_SKEW_MS} ms in the future; check the client's clock"
        )));
    }
    Ok(Some(Token { text: text.to_owned(), issued_unix_ms: issued }))
}

/// What a token's record says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Done(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    fingerprint: [u8; 32],
    /// When the first call claimed the token (Unix ms).
    started_unix_ms: i64,
    state: State,
}

const RECORD_VERSION: u8 = 1;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![RECORD_VERSION];
        match &self.state {
            State::Pending => bytes.push(0),
            State::Done(_) => bytes.push(1),
        }
        bytes.extend_from_slice(&self.fingerprint);
        bytes.extend_from_slice(&self.started_unix_ms.to_le_bytes());
        if let State::Done(response) = &self.state {
            bytes.extend_from_slice(response);
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Record, Status> {
        let corrupt = || Status::internal("an idempotency record is corrupt (not written by this gateway?)");
        if bytes.len() < 42 || bytes[0] != RECORD_VERSION {
            return Err(corrupt());
        }
        let fingerprint: [u8; 32] = bytes[2..34].try_into().map_err(|_| corrupt())?;
        let started_unix_ms = i64::from_le_bytes(bytes[34..42].try_into().map_err(|_| corrupt())?);
        let state = match bytes[1] {
            0 => State::Pending,
            1 => State::Done(bytes[42..].to_vec()),
            _ => return Err(corrupt()),
        };
        Ok(Record { fingerprint, started_unix_ms, state })
    }
}

/// The hash of the method and the whole request as encoded (the token is the same in
/// every retry, so it changes nothing): a token sent again with a request that differs
/// in any field — even `namespace = ""` for `"default"` — is a client bug, refused
/// rather than answered with the other call's result.
pub fn fingerprint(method: &str, request: &impl Message) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(request.encode_to_vec());
    hash.finalize().into()
}

/// Where records are kept.
#[derive(Clone)]
pub enum Records {
    Memory(Arc<Memory>),
    /// A `keyvalue_cas` instance (the namespace's `idempotency` slot).
    Plugin(Arc<Instance>),
}

/// Records in the gateway's memory, each dropped when its window ends.
#[derive(Default)]
pub struct Memory {
    table: Mutex<Table>,
    next_version: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Table {
    records: HashMap<String, Held>,
    /// Records in the order they were claimed, with when each expires: every claim
    /// drops the expired ones from the front, so the table never holds much more than a
    /// window's worth and no claim scans it.
    expiry: std::collections::VecDeque<(Instant, String, u64)>,
}

/// One record in memory, with the version a claim compares against.
struct Held {
    value: Vec<u8>,
    version: u64,
    expires: Instant,
}

impl Memory {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Drops records whose window has ended, oldest claim first. A record claimed
    /// later but expiring sooner (its token was older) waits for those before it, at
    /// most one window.
    fn expire(&mut self, now: Instant) {
        while let Some((expires, _, _)) = self.expiry.front() {
            if *expires > now {
                break;
            }
            let (_, key, version) = self.expiry.pop_front().expect("just looked");
            if self.records.get(&key).is_some_and(|held| held.version == version) {
                self.records.remove(&key);
            }
        }
    }
}

/// What claiming a token found.
enum Claim {
    Ours(u64),
    Held(Record),
    /// The record vanished between the claim and the read: claim again.
    Gone,
}

impl Records {
    async fn claim(&self, key: &str, record: &Record, ttl: Duration) -> Result<Claim, Status> {
        let value = record.encode();
        match self {
            Records::Memory(memory) => {
                let now = Instant::now();
                let mut table = memory.table();
                table.expire(now);
                match table.records.get(key) {
                    Some(held) if held.expires > now => Ok(Claim::Held(Record::decode(&held.value)?)),
                    _ if table.records.len() >= MAX_MEMORY_RECORDS => {
                        Err(Status::resource_exhausted(format!(
                        "the gateway holds {MAX_MEMORY_RECORDS} idempotency records; bind the namespace's \
                         idempotency slot to a store, or shorten server.idempotency_window_ms"
                    )))
                    }
                    _ => {
                        let version =
                            memory.next_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        let expires = now + ttl;
                        table.records.insert(key.to_owned(), Held { value, version, expires });
                        table.expiry.push_back((expires, key.to_owned(), version));
                        Ok(Claim::Ours(version))
                    }
                }
            }
            Records::Plugin(instance) => {
                let cas = cas_of(instance)?;
                match cas.compare_and_swap(key, 0, value, Some(ttl)).await.map_err(plugin_status)? {
                    CasResult::Swapped { version } => Ok(Claim::Ours(version)),
                    CasResult::Conflict { .. } => {
                        match cas.get_versioned(key).await.map_err(plugin_status)? {
                            Some(held) => Ok(Claim::Held(Record::decode(&held.value)?)),
                            None => Ok(Claim::Gone),
                        }
                    }
                }
            }
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, Status> {
        match self {
            Records::Memory(memory) => {
                let table = memory.table();
                match table.records.get(key) {
                    Some(held) if held.expires > Instant::now() => Ok(Some(Record::decode(&held.value)?)),
                    _ => Ok(None),
                }
            }
            Records::Plugin(instance) => {
                let held = cas_of(instance)?.get_versioned(key).await.map_err(plugin_status)?;
                held.map(|held| Record::decode(&held.value)).transpose()
            }
        }
    }

    /// Replaces our pending claim with the call's response.
    async fn finish(&self, key: &str, version: u64, record: &Record, ttl: Duration) -> Result<(), Status> {
        match self {
            Records::Memory(memory) => {
                let mut table = memory.table();
                if let Some(held) = table.records.get_mut(key).filter(|held| held.version == version) {
                    held.value = record.encode();
                }
                Ok(())
            }
            Records::Plugin(instance) => {
                match cas_of(instance)?
                    .compare_and_swap(key, version, record.encode(), Some(ttl))
                    .await
                    .map_err(plugin_status)?
                {
                    CasResult::Swapped { .. } => Ok(()),
                    // Only an expiry (the window ended while the write ran) or a hand
                    // edit of the store gets here; the response is still the caller's.
                    CasResult::Conflict { current_version } => Err(Status::aborted(format!(
                        "the record changed while the write ran (version {current_version}, claimed {version})"
                    ))),
                }
            }
        }
    }

    /// Drops our pending claim, so a retry runs the call again.
    async fn release(&self, key: &str, version: u64) -> Result<(), Status> {
        match self {
            Records::Memory(memory) => {
                let mut table = memory.table();
                if table.records.get(key).is_some_and(|held| held.version == version) {
                    table.records.remove(key);
                }
                Ok(())
            }
            Records::Plugin(instance) => {
                cas_of(instance)?.delete_if_version(key, version).await.map(drop).map_err(plugin_status)
            }
        }
    }
}

/// Pauses between tries of a record update: a store's brief outage should not leave a
/// record pending, which would make retries report an unknown outcome for the window.
const RECORD_RETRIES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];

fn cas_of(instance: &Instance) -> Result<plugin_abi::host::KeyValueCasHandle<'_>, Status> {
    instance.keyvalue_cas().ok_or_else(|| {
        Status::internal(
            "the idempotency slot's plugin lost keyvalue_cas (checked when the config was loaded)",
        )
    })
}

/// One idempotent call: the namespace, method and token that name its record, the
/// request's fingerprint, and how long records live.
pub struct Call {
    pub records: Records,
    pub key: String,
    pub fingerprint: [u8; 32],
    pub window: Duration,
    pub token: Token,
    /// Longest the write may run (`server.request_timeout_ms`): it no longer runs under
    /// the caller's deadline, and a hung backend must not pile up writes that hold
    /// their namespace (and its reload gate).
    pub write_timeout: Duration,
}

/// The record of `token` for `method` on `namespace`. `principal`: the caller, with
/// auth on; its records are its own, so another caller's same token names another
/// record (as Stripe scopes keys to the account).
pub fn record_key(namespace: &str, method: &str, principal: Option<&str>, token: &Token) -> String {
    match principal {
        None => format!("prism-idempotency/{namespace}/{method}/{}", token.text),
        // A fixed-size stand-in for the principal, whose name may be long or hold '/'.
        Some(principal) => {
            let scope = hex::encode(&Sha256::digest(principal.as_bytes())[..8]);
            format!("prism-idempotency/{namespace}/{method}/{scope}/{}", token.text)
        }
    }
}

impl Call {
    /// `key`: from [`record_key`].
    pub fn new(
        records: Records,
        key: String,
        token: Token,
        fingerprint: [u8; 32],
        window: Duration,
        write_timeout: Duration,
    ) -> Call {
        Call { records, key, fingerprint, window, token, write_timeout }
    }

    /// For a write that streams its input (SetStream): no bound on how long it runs, since
    /// the client's pace sets it; a client that stalls is cut by the stream's idle limit.
    pub fn paced_by_the_client(mut self) -> Call {
        self.write_timeout = Duration::from_secs(u64::from(u32::MAX));
        self
    }

    /// How long the record must live: until the token's window ends.
    fn ttl(&self) -> Duration {
        let ends = self
            .token
            .issued_unix_ms
            .saturating_add(i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX));
        let left = ends.saturating_sub(plugin_abi::unix_millis()).max(1000);
        Duration::from_millis(left as u64)
    }

    /// Runs `write` once for this token, or answers with the response its first run gave.
    /// All of it runs in a task of its own: a caller that gives up (a client deadline)
    /// cannot stop a claim, a started write or its record half way.
    pub async fn run<R, W>(self, write: W) -> Result<R, Status>
    where
        R: Message + Default + Send + 'static,
        W: Future<Output = Result<R, Status>> + Send + 'static,
    {
        tokio::spawn(self.run_detached(write))
            .await
            .map_err(|_| Status::internal("an idempotent write panicked"))?
    }

    async fn run_detached<R, W>(self, write: W) -> Result<R, Status>
    where
        R: Message + Default + Send + 'static,
        W: Future<Output = Result<R, Status>> + Send + 'static,
    {
        let pending = Record {
            fingerprint: self.fingerprint,
            started_unix_ms: plugin_abi::unix_millis(),
            state: State::Pending,
        };
        let waited_since = Instant::now();
        let mut held = match self.records.claim(&self.key, &pending, self.ttl()).await? {
            Claim::Ours(version) => return self.run_claimed(version, write).await,
            Claim::Held(record) => Some(record),
            Claim::Gone => None,
        };
        loop {
            match held {
                Some(record) if record.fingerprint != self.fingerprint => return Err(reused(&self.token)),
                Some(Record { state: State::Done(response), .. }) => {
                    return R::decode(&response[..])
                        .map_err(|_| Status::internal("a stored response is corrupt"));
                }
                Some(Record { state: State::Pending, started_unix_ms, .. })
                    if plugin_abi::unix_millis() - started_unix_ms > PENDING_LEASE_MS =>
                {
                    return Err(Status::failed_precondition(format!(
                        "the first call with idempotency_token '{}' never finished (it timed out, or the \
                         gateway running it stopped); whether it took effect is unknown: check, then send a \
                         new token",
                        self.token.text
                    )));
                }
                Some(Record { state: State::Pending, .. }) => {
                    // The first call is still running: wait for its record to change.
                    if waited_since.elapsed() > WAIT_FOR_FIRST {
                        return Err(Status::aborted(format!(
                            "a call with idempotency_token '{}' is still running; retry with the same token",
                            self.token.text
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    held = self.records.read(&self.key).await?;
                }
                None if waited_since.elapsed() > WAIT_FOR_FIRST => {
                    return Err(Status::aborted(format!(
                        "idempotency_token '{}' is contended; retry with the same token",
                        self.token.text
                    )));
                }
                // Never claimed, or the first call failed and let go: claim it ourselves.
                None => match self.records.claim(&self.key, &pending, self.ttl()).await? {
                    Claim::Ours(version) => return self.run_claimed(version, write).await,
                    Claim::Held(record) => held = Some(record),
                    Claim::Gone => held = None,
                },
            }
        }
    }

    async fn run_claimed<R, W>(self, version: u64, write: W) -> Result<R, Status>
    where
        R: Message + Default + 'static,
        W: Future<Output = Result<R, Status>> + Send + 'static,
    {
        let Ok(result) = tokio::time::timeout(self.write_timeout, write).await else {
            // Whether the backend applied it is unknown, so the record stays pending:
            // retries are told so rather than applying it again.
            return Err(Status::deadline_exceeded(format!(
                "the write did not finish within {} ms (server.request_timeout_ms); whether it took effect \
                 is unknown, and a retry with idempotency_token '{}' will say so rather than apply it again",
                self.write_timeout.as_millis(),
                self.token.text
            )));
        };
        // The response on success; a failure lets the token go, so a retry runs again.
        let done = result.as_ref().ok().map(|response| Record {
            fingerprint: self.fingerprint,
            started_unix_ms: plugin_abi::unix_millis(),
            state: State::Done(response.encode_to_vec()),
        });
        let mut pauses = RECORD_RETRIES.iter();
        loop {
            let settled = match &done {
                Some(done) => self.records.finish(&self.key, version, done, self.ttl()).await,
                None => self.records.release(&self.key, version).await,
            };
            match (settled, pauses.next()) {
                (Ok(()), _) => break,
                (Err(_), Some(pause)) => tokio::time::sleep(*pause).await,
                (Err(error), None) => {
                    tracing::warn!(key = %self.key, "could not settle an idempotency record: {}", error.message());
                    break;
                }
            }
        }
        result
    }
}

fn reused(token: &Token) -> Status {
    Status::failed_precondition(format!(
        "idempotency_token '{}' was already used for a different request; send a new token for each distinct call",
        token.text
    ))
}

/// Runs a write once per idempotency token (`call` from `Stores::idempotent`), or
/// just runs it when the request carries none.
pub async fn once<R, W>(call: Option<Call>, write: W) -> Result<R, Status>
where
    R: prost::Message + Default + Send + 'static,
    W: std::future::Future<Output = Result<R, Status>> + Send + 'static,
{
    match call {
        None => write.await,
        Some(call) => call.run(write).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: i64 = 1_764_480_000_000;

    #[test]
    fn tokens_carry_their_time_and_a_random_part() {
        let token = token("1764480000000-a1b2c3d4e5", HOUR, NOW).unwrap().unwrap();
        assert_eq!(token.issued_unix_ms, NOW);
        assert_eq!(super::token("", HOUR, NOW).unwrap(), None);
        for bad in [
            "abc",
            "1764480000000",
            "1764480000000-short",
            "x1-abcdefgh",
            "-abcdefghij",
            "1764480000000-ab cdefghij",
        ] {
            let error = super::token(bad, HOUR, NOW).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(error.message().contains("{unix_ms}-{random}"), "{bad}: {}", error.message());
        }
    }

    #[test]
    fn a_token_past_the_window_is_refused_and_one_from_the_future_too() {
        let old = format!("{}-abcdefgh", NOW - 3_600_001);
        assert_eq!(token(&old, HOUR, NOW).unwrap_err().code(), tonic::Code::FailedPrecondition);
        let edge = format!("{}-abcdefgh", NOW - 3_600_000);
        assert!(token(&edge, HOUR, NOW).unwrap().is_some());
        let ahead = format!("{}-abcdefgh", NOW + 120_000);
        assert_eq!(token(&ahead, HOUR, NOW).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn memory_records_leave_when_their_window_ends_without_a_scan() {
        let mut table = Table::default();
        let now = Instant::now();
        for (n, ttl) in [(1, 10), (2, 20), (3, 5)] {
            let expires = now + Duration::from_secs(ttl);
            table.records.insert(format!("k{n}"), Held { value: Vec::new(), version: n, expires });
            table.expiry.push_back((expires, format!("k{n}"), n));
        }
        table.expire(now + Duration::from_secs(11));
        assert!(!table.records.contains_key("k1"));
        // k3 expired too, but waits behind k2, claimed before it.
        assert!(table.records.contains_key("k2") && table.records.contains_key("k3"));
        table.expire(now + Duration::from_secs(21));
        assert!(table.records.is_empty() && table.expiry.is_empty());
    }

    #[test]
    fn records_round_trip() {
        for state in [State::Pending, State::Done(b"response".to_vec()), State::Done(Vec::new())] {
            let record = Record { fingerprint: [7; 32], started_unix_ms: 1_764_480_000_000, state };
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
        assert!(Record::decode(b"\x02junk").is_err());
    }
}
