//! One plugin instance's process: started, watched (exit, closed socket, missed
//! heartbeats), restarted with backoff after a crash, and given up on after too many
//! crashes in the restart window. While it is down, calls fail at once with why.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use plugin_abi::{Metadata, PluginError, PluginResult};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch, Notify};

use super::connection::Connection;
use super::wire::{Call, Hello};
use super::ProcessSettings;

/// What a supervisor needs to start (and restart) one instance's process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The `prism` binary (`prism plugin-host` is the child).
    pub binary: PathBuf,
    pub library: PathBuf,
    /// The configured plugin name and the namespace, for messages and logs.
    pub plugin: String,
    pub namespace: String,
    pub config: String,
    pub settings: ProcessSettings,
}

/// The first restart waits this long; each further one twice as long, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a running child is pinged.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a child may take to exit after it was asked to shut down.
const EXIT_GRACE: Duration = Duration::from_secs(5);

pub struct Supervisor {
    spec: ProcessSpec,
    state: Mutex<State>,
    /// Set when the instance is shut down (or dropped): no more restarts.
    stopping: watch::Sender<bool>,
    /// Kills the child now (shutdown that took too long, or drop).
    kill: Arc<Notify>,
    restarts: std::sync::atomic::AtomicU32,
    /// The running child has ended; its cause is being gathered (its last words).
    ended: std::sync::atomic::AtomicBool,
}

enum State {
    Running { connection: Arc<Connection>, pid: u32, sandbox: String },
    Restarting { cause: String, attempt: u32 },
    CrashLooped { cause: String },
    Stopped,
}

/// What `prism status` shows of one plugin process.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub namespace: String,
    /// `running`, `restarting`, `crash_loop` or `stopped`.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub message: String,
    /// The child's resident memory, when it runs.
    pub rss_bytes: Option<u64>,
    /// What its sandbox enforces, when it runs (`off` when it is off).
    pub sandbox: String,
}

/// A started child: its process, its connection, and how it will report its end.
struct Started {
    child: Child,
    connection: Arc<Connection>,
    disconnected: oneshot::Receiver<String>,
    last_words: Arc<Mutex<String>>,
    stderr_done: tokio::task::JoinHandle<()>,
    sandbox: String,
}

impl Supervisor {
    /// Starts the process and its instance; fails (and leaves nothing running) when the
    /// library cannot be opened, the plugin refuses to start, or the child dies trying.
    pub async fn start(spec: ProcessSpec) -> PluginResult<(Arc<Supervisor>, Metadata)> {
        let (started, metadata) = start_child(&spec).await?;
        let pid = started.child.id().unwrap_or_default();
        let supervisor = Arc::new(Supervisor {
            spec,
            state: Mutex::new(State::Running {
                connection: started.connection.clone(),
                pid,
                sandbox: started.sandbox.clone(),
            }),
            stopping: watch::channel(false).0,
            kill: Arc::new(Notify::new()),
            restarts: Default::default(),
            ended: Default::default(),
        });
        let kill = supervisor.kill.clone();
        tokio::spawn(supervise(Arc::downgrade(&supervisor), started, supervisor.stopping.subscribe(), kill));
        Ok((supervisor, metadata))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn who(&self) -> String {
        format!("the process of plugin '{}' (namespace '{}')", self.spec.plugin, self.spec.namespace)
    }

    /// The running child's connection, or `Unavailable` saying why there is none.
    pub fn connection(&self) -> PluginResult<Arc<Connection>> {
        if self.ended.load(std::sync::atomic::Ordering::Acquire) {
            return Err(PluginError::unavailable(format!("{} has ended and is being restarted", self.who())));
        }
        match &*self.lock() {
            State::Running { connection, .. } => Ok(connection.clone()),
            State::Restarting { cause, attempt } => Err(PluginError::unavailable(format!(
                "{} is restarting (attempt {attempt}) after it {cause}",
                self.who()
            ))),
            State::CrashLooped { cause } => Err(PluginError::unavailable(format!(
                "{} crashed more than {} times in {} s and is not restarted; it last {cause}. \
                 Fix or replace the plugin, then reload",
                self.who(),
                self.spec.settings.max_restarts,
                self.spec.settings.restart_window_s
            ))
            .with_retryable(false)),
            State::Stopped => Err(PluginError::unavailable(format!("{} has been shut down", self.who()))),
        }
    }

    pub fn status(&self) -> ProcessStatus {
        let restarts = self.restarts.load(std::sync::atomic::Ordering::Relaxed);
        let (state, pid, message, sandbox) = match &*self.lock() {
            State::Running { pid, sandbox, .. } => ("running", Some(*pid), String::new(), sandbox.clone()),
            State::Restarting { cause, .. } => ("restarting", None, format!("it {cause}"), String::new()),
            State::CrashLooped { cause } => (
                "crash_loop",
                None,
                format!(
                    "not restarted: more than {} crashes in {} s; it last {cause}",
                    self.spec.settings.max_restarts, self.spec.settings.restart_window_s
                ),
                String::new(),
            ),
            State::Stopped => ("stopped", None, String::new(), String::new()),
        };
        let rss_bytes = pid.and_then(rss_of);
        let namespace = self.spec.namespace.clone();
        ProcessStatus { namespace, state, pid, restarts, message, rss_bytes, sandbox }
    }

    /// Whether the supervisor is bringing the process back (or has given up): the
    /// gateway's own health recovery leaves such a namespace to it.
    pub fn recovering(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
            || matches!(&*self.lock(), State::Restarting { .. } | State::CrashLooped { .. })
    }

    /// Asks the instance to shut down, then waits for its process to exit (killing it
    /// after a grace period). Nothing is restarted afterwards.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        let running = match &*self.lock() {
            State::Running { connection, .. } => Some(connection.clone()),
            _ => None,
        };
        if let Some(connection) = running {
            let asked = tokio::time::timeout(EXIT_GRACE, connection.call::<()>(&Call::Shutdown)).await;
            if !matches!(asked, Ok(Ok(()))) {
                self.kill.notify_one();
            }
        }
        let exited = async {
            while !matches!(&*self.lock(), State::Stopped | State::CrashLooped { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(EXIT_GRACE, exited).await.is_err() {
            self.kill.notify_one();
        }
    }

    fn set(&self, state: State) {
        let mut current = self.lock();
        *current = state;
        // Cleared under the state's lock, so no caller sees "ended" with the new state.
        self.ended.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stopping.send_replace(true);
        self.kill.notify_one();
    }
}

/// Watches one child after another until the instance stops or crashes too often.
async fn supervise(
    supervisor: Weak<Supervisor>,
    mut started: Started,
    mut stopping: watch::Receiver<bool>,
    kill: Arc<Notify>,
) {
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ended = watch_child(&supervisor, &mut started, &mut stopping, &kill).await;
        let spec = {
            let Some(this) = supervisor.upgrade() else { return };
            let cause = ended.as_deref().unwrap_or("was shut down");
            started.connection.close(PluginError::unavailable(format!("{} {cause}", this.who())));
            if ended.is_none() || *stopping.borrow() {
                this.set(State::Stopped);
                return;
            }
            tracing::error!(plugin = %this.spec.plugin, namespace = %this.spec.namespace, "plugin process {cause}");
            this.spec.clone()
        };
        let mut cause = ended.unwrap_or_default();
        started = loop {
            let window = Duration::from_secs(spec.settings.restart_window_s);
            let now = Instant::now();
            // A child that stayed up for a whole window earns a fresh backoff.
            if crashes.back().is_some_and(|last| now.duration_since(*last) > window) {
                backoff = FIRST_BACKOFF;
            }
            crashes.push_back(now);
            while crashes.front().is_some_and(|at| now.duration_since(*at) > window) {
                crashes.pop_front();
            }
            {
                let Some(this) = supervisor.upgrade() else { return };
                if crashes.len() > spec.settings.max_restarts as usize {
                    tracing::error!(
                        plugin = %spec.plugin, namespace = %spec.namespace,
                        "plugin process crashed {} times in {window:?}; not restarting it until a reload", crashes.len()
                    );
                    this.set(State::CrashLooped { cause });
                    return;
                }
                let attempt = this.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                this.set(State::Restarting { cause: cause.clone(), attempt });
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stopping) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if *stopping.borrow() {
                if let Some(this) = supervisor.upgrade() {
                    this.set(State::Stopped);
                }
                return;
            }
            match start_child(&spec).await {
                Ok((next, _)) => {
                    let Some(this) = supervisor.upgrade() else { return };
                    let pid = next.child.id().unwrap_or_default();
                    tracing::warn!(plugin = %spec.plugin, namespace = %spec.namespace, pid, "plugin process restarted");
                    this.set(State::Running {
                        connection: next.connection.clone(),
                        pid,
                        sandbox: next.sandbox.clone(),
                    });
                    break next;
                }
                Err(error) => {
                    cause = format!("could not be restarted: {}", error.message());
                    tracing::error!(plugin = %spec.plugin, namespace = %spec.namespace, "plugin process {cause}");
                }
            }
        };
    }
}

/// Waits for the child to end; `None` when it ended because the instance is stopping.
async fn watch_child(
    supervisor: &Weak<Supervisor>,
    started: &mut Started,
    stopping: &mut watch::Receiver<bool>,
    kill: &Notify,
) -> Option<String> {
    let heartbeat_timeout = match supervisor.upgrade() {
        Some(this) => Duration::from_millis(this.spec.settings.heartbeat_timeout_ms),
        None => Duration::ZERO,
    };
    let connection = started.connection.clone();
    let heartbeats = async {
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            if !connection.ping(heartbeat_timeout).await {
                return;
            }
        }
    };
    let why = tokio::select! {
        status = started.child.wait() => Some(ended_how(status)),
        closed = &mut started.disconnected => {
            // The socket closing first is usually the process exiting: wait for its status.
            match tokio::time::timeout(Duration::from_secs(2), started.child.wait()).await {
                Ok(status) => Some(ended_how(status)),
                Err(_) => {
                    let _ = started.child.kill().await;
                    Some(format!("{} and was killed", closed.unwrap_or_else(|_| "closed its connection".into())))
                }
            }
        }
        _ = heartbeats => {
            let _ = started.child.kill().await;
            Some(format!("missed its heartbeat (no answer within {heartbeat_timeout:?}) and was killed"))
        }
        _ = kill.notified() => {
            let _ = started.child.kill().await;
            None
        }
        _ = stopped(stopping) => {
            // Shutting down: the child exits once its instance has shut down.
            tokio::select! {
                _ = started.child.wait() => {}
                _ = kill.notified() => {
                    let _ = started.child.kill().await;
                }
            }
            None
        }
    };
    let why = why?;
    if let Some(this) = supervisor.upgrade() {
        this.ended.store(true, std::sync::atomic::Ordering::Release);
    }
    // Its last line on stderr usually says what went wrong (an allocation failure, a panic).
    let _ = tokio::time::timeout(Duration::from_millis(500), &mut started.stderr_done).await;
    let last = started.last_words.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Some(if last.is_empty() { why } else { format!("{why}; its last words: {last}") })
}

/// Resolves once the instance is stopping (without holding the watch's lock).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

fn ended_how(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (_, Some(signal)) => {
                let name =
                    nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("unknown");
                format!("was killed by signal {signal} ({name})")
            }
            _ => "ended".into(),
        },
        Err(error) => format!("could not be waited for: {error}"),
    }
}

/// The resident memory of process `pid`, from /proc.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a plugin process inherits of the gateway's environment: locale, paths, log
/// settings and where TLS roots are. Secrets a slot needs reach it resolved in its config.
const CHILD_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PRISM_LOG",
    "PRISM_LOG_FORMAT",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

static SOCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts `prism plugin-host`, connects to it and has it open the library and create
/// the instance; its metadata comes back.
async fn start_child(spec: &ProcessSpec) -> PluginResult<(Started, Metadata)> {
    let failed = |what: String| PluginError::unavailable(format!("cannot start the plugin process: {what}"));
    let dir = super::socket_dir().map_err(|e| failed(format!("its socket directory: {e}")))?;
    let n = SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener =
        tokio::net::UnixListener::bind(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    let mut command = Command::new(&spec.binary);
    command.arg("plugin-host").arg("--connect").arg(&path);
    if let Some(format) = super::CHILD_LOG_FORMAT.get() {
        command.arg("--log-format").arg(format);
    }
    spec.settings.add_child_args(&mut command);
    // The child sees only the environment it needs, not the gateway's (which may hold
    // credentials for other plugins or for the gateway itself).
    command.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(|name| CHILD_ENVIRONMENT.contains(&name)) {
            command.env(name, value);
        }
    }
    command
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            return Err(failed(format!("{}: {error}", spec.binary.display())));
        }
    };
    let last_words = Arc::new(Mutex::new(String::new()));
    let stderr_done = forward_stderr(&mut child, last_words.clone());
    let pid = child.id();
    let startup = async {
        let (stream, _) =
            listener.accept().await.map_err(|e| failed(format!("accepting its connection: {e}")))?;
        let peer = stream.peer_cred().ok().and_then(|cred| cred.pid());
        if peer.is_none_or(|peer| Some(peer as u32) != pid) {
            return Err(failed(format!("a process other than the child ({peer:?}) connected to its socket")));
        }
        let (connection, disconnected) = Connection::open(stream);
        let hello = Hello {
            library: spec.library.clone(),
            config: spec.config.clone(),
            namespace: spec.namespace.clone(),
        };
        let ready = connection.hello(&hello).await?;
        Ok::<_, PluginError>((connection, disconnected, ready))
    };
    let timeout = Duration::from_millis(spec.settings.start_timeout_ms);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, startup) => match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(failed(format!("it did not start within {timeout:?}"))),
        },
        status = child.wait() => {
            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
            let last = last_words.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = std::fs::remove_file(&path);
            let last = if last.is_empty() { String::new() } else { format!(": {last}") };
            return Err(PluginError::unavailable(format!("the plugin process {} while starting{last}", ended_how(status))));
        }
    };
    let _ = std::fs::remove_file(&path);
    match outcome {
        Ok((connection, disconnected, ready)) => {
            let sandbox = ready.sandbox;
            Ok((
                Started { child, connection, disconnected, last_words, stderr_done, sandbox },
                ready.metadata,
            ))
        }
        Err(error) => {
            let _ = child.kill().await;
            Err(error)
        }
    }
}

/// Whether a line of the child's stderr says something, rather than being part of a
/// backtrace that follows the message (`stack backtrace:`, frames, `note: …`).
fn is_headline(line: &str) -> bool {
    let trimmed = line.trim();
    !(trimmed.is_empty()
        || line.starts_with(char::is_whitespace)
        || trimmed == "stack backtrace:"
        || trimmed.starts_with("skipping backtrace printing")
        || trimmed.starts_with("note: "))
}

/// Copies the child's stderr to ours line by line (its logs), keeping the last line
/// that says something.
fn forward_stderr(child: &mut Child, last_words: Arc<Mutex<String>>) -> tokio::task::JoinHandle<()> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(stderr) = stderr else { return };
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
            if is_headline(&line) {
                *last_words.lock().unwrap_or_else(|e| e.into_inner()) = line.chars().take(500).collect();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::is_headline;

    #[test]
    fn last_words_skip_the_backtrace_after_the_message() {
        let stderr = "memory allocation of 67108864 bytes failed\nstack backtrace:\n   0: std::backtrace\n             at /rustc/x\nnote: Some details are omitted\n";
        let last = stderr.lines().rfind(|line| is_headline(line));
        assert_eq!(last, Some("memory allocation of 67108864 bytes failed"));
        // What std prints instead of the backtrace when a thread is already printing one.
        let skipped = "memory allocation of 64 bytes failed\nskipping backtrace printing to avoid potential recursion\n";
        assert_eq!(
            skipped.lines().rfind(|line| is_headline(line)),
            Some("memory allocation of 64 bytes failed")
        );
        assert!(is_headline("2026-12-07T01:00:00Z ERROR prism_plugin: connection refused"));
    }
}
