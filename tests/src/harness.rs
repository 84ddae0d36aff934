//! Locating built artifacts and running the real `prism` binary for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_api::admin_service_client::AdminServiceClient;
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::list_service_client::ListServiceClient;
use prism_api::pub_sub_service_client::PubSubServiceClient;
use prism_api::queue_service_client::QueueServiceClient;
use prism_api::stream_service_client::StreamServiceClient;
use tonic::transport::Channel;

/// The cargo target profile directory the tests were built into (e.g. `target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test binary> -> target/debug
    exe.parent().and_then(Path::parent).expect("binary lives in target/<profile>/deps").to_path_buf()
}

fn built(path: PathBuf, what: &str) -> PathBuf {
    build_once();
    assert!(
        path.exists(),
        "{} is missing: build {what} first with `cargo xtask build` (`cargo xtask test` does this)",
        path.display()
    );
    path
}

/// `cargo test` builds neither the plugin libraries, nor the `prism` binary, nor the
/// fixture plugins of the separate ABI workspaces, all of which the end-to-end tests load
/// or start. So the first test that needs one runs `cargo xtask build` (cargo holds no
/// lock while tests run), once per test process, which also keeps them from going stale
/// after an edit. Under `cargo xtask test` (`PRISM_REQUIRE_BACKENDS` set) they were built
/// just before, and outside a debug build of this workspace there is nothing to build.
fn build_once() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let in_this_workspace = workspace.join("xtask").is_dir() && target_dir().ends_with("debug");
        if std::env::var_os("PRISM_REQUIRE_BACKENDS").is_some() || !in_this_workspace {
            return;
        }
        eprintln!("building the plugins, fixtures and the prism binary the tests load (`cargo xtask build`)");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["xtask", "build"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo xtask build");
        assert!(status.success(), "`cargo xtask build` failed ({status}): the tests need what it builds");
    });
}

/// The path of a workspace plugin library by crate name, e.g. `prism_memstore`.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    let file = format!("{}{crate_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    built(target_dir().join(file), crate_name)
}

pub fn prism_binary() -> PathBuf {
    built(target_dir().join(format!("prism{}", std::env::consts::EXE_SUFFIX)), "the prism binary")
}

/// Runs `prism` with arguments, returning (exit code, stdout, stderr).
pub fn run_prism(args: &[&str]) -> (i32, String, String) {
    run_prism_with_env(args, &[])
}

/// [`run_prism`] with extra environment variables (for `${env:…}` in a config).
pub fn run_prism_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output =
        Command::new(prism_binary()).args(args).envs(env.iter().copied()).output().expect("run prism");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `prism serve` on a free loopback port, killed when dropped.
/// `config` with each `{memstore}`, `{redis}`, `{kafka}`, … placeholder replaced by the
/// path of that plugin library.
pub fn with_plugin_paths(config: &str) -> String {
    let mut config = config.to_owned();
    for (placeholder, library) in [
        ("{memstore}", "prism_memstore"),
        ("{panicking}", "prism_fixture_panicking"),
        ("{crashing}", "prism_fixture_crashing"),
        ("{escaping}", "prism_fixture_escaping"),
        ("{abi_1_0}", "prism_fixture_abi_1_0"),
        ("{abi_1_1}", "prism_fixture_abi_1_1"),
        ("{abi_1_2}", "prism_fixture_abi_1_2"),
        ("{abi_next}", "prism_fixture_abi_next"),
        ("{exclusive}", "prism_fixture_exclusive"),
        ("{redis}", "prism_redis"),
        ("{postgres}", "prism_postgres"),
        ("{sqlite}", "prism_sqlite"),
        ("{nats}", "prism_nats"),
        ("{kafka}", "prism_kafka"),
        ("{s3}", "prism_s3"),
        ("{files}", "prism_files"),
    ] {
        if config.contains(placeholder) {
            config = config.replace(placeholder, &plugin_library(library).display().to_string());
        }
    }
    config
}

pub struct Server {
    child: Child,
    pub address: String,
    /// The admin HTTP listener's address, when the config has `[admin]`.
    pub admin_address: Option<String>,
    _dir: tempfile::TempDir,
    stderr_log: PathBuf,
}

impl Server {
    /// Writes `config` (with `{memstore}`, `{redis}`, … replaced by library paths) to a
    /// temporary plugins.toml and serves it on 127.0.0.1:0.
    pub fn start(config: &str) -> Server {
        Server::start_with(config, &[])
    }

    /// Like `start`, with extra `prism serve` arguments (e.g. `--no-watch`).
    pub fn start_with(config: &str, args: &[&str]) -> Server {
        Server::start_with_env(config, args, &[])
    }

    /// Like `start_with`, with extra environment variables for the server.
    pub fn start_with_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = with_plugin_paths(config);
        let config_path = dir.path().join("plugins.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr_log = dir.path().join("stderr.log");
        let mut child = Command::new(prism_binary())
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).expect("stderr log"))
            .spawn()
            .expect("start prism");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut admin_address = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The admin line comes first, when there is one.
                if let Some(address) = line.strip_prefix("prism: admin on ") {
                    admin_address = Some(address.to_owned());
                }
                if let Some(address) = line.strip_prefix("prism: serving on ") {
                    let _ = sender.send((address.to_owned(), admin_address.take()));
                }
            }
        });
        let (address, admin_address) = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(addresses) => addresses,
            Err(_) => {
                let _ = child.kill();
                panic!("prism did not start: {}", std::fs::read_to_string(&stderr_log).unwrap_or_default());
            }
        };
        Server { child, address, admin_address, _dir: dir, stderr_log }
    }

    /// The plugins.toml this server runs (tests edit it to trigger reloads).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("plugins.toml")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What `prism status` prints of this server (the command must succeed).
    pub fn status(&self) -> String {
        let (code, stdout, stderr) = run_prism(&["status", "--server", &self.url()]);
        assert_eq!(code, 0, "prism status failed: {stderr}");
        stdout
    }

    /// The pid of the first running plugin process `prism status` shows.
    pub fn plugin_process_pid(&self) -> u32 {
        let status = self.status();
        status
            .split("running pid ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no running plugin process in {status}"))
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("valid url").connect().await.expect("connect to prism")
    }

    pub async fn keyvalue(&self) -> KeyValueServiceClient<Channel> {
        KeyValueServiceClient::new(self.channel().await)
    }

    pub async fn list(&self) -> ListServiceClient<Channel> {
        ListServiceClient::new(self.channel().await)
    }

    pub async fn queue(&self) -> QueueServiceClient<Channel> {
        QueueServiceClient::new(self.channel().await)
    }

    pub async fn pubsub(&self) -> PubSubServiceClient<Channel> {
        PubSubServiceClient::new(self.channel().await)
    }

    pub async fn stream(&self) -> StreamServiceClient<Channel> {
        StreamServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Waits (up to 20 s) until the server has finished `count` reloads; returns the
    /// reload status then.
    pub async fn wait_for_reloads(&self, count: u64) -> prism_api::GetReloadStatusResponse {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut admin = self.admin().await;
        loop {
            let status = admin
                .get_reload_status(prism_api::GetReloadStatusRequest {})
                .await
                .expect("reload status")
                .into_inner();
            if status.reloads >= count {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no reload #{count} within 20 s: {status:?}\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Dequeues every message now visible in `queue` of `namespace`, leaving each
    /// invisible for a minute, and returns them.
    pub async fn drain_queue(&self, namespace: &str, queue: &str) -> Vec<prism_api::QueueMessage> {
        let mut client = self.queue().await;
        let mut all = Vec::new();
        loop {
            let request = prism_api::DequeueRequest {
                namespace: namespace.into(),
                queue: queue.into(),
                max_messages: 100,
                visibility_timeout_ms: 60_000,
                wait_ms: 0,
            };
            let messages = client.dequeue(request).await.expect("dequeue").into_inner().messages;
            if messages.is_empty() {
                return all;
            }
            all.extend(messages);
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident memory (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Server {
    /// How the server process ended, once it has (`None` if it still runs after `timeout`).
    pub fn wait_exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (bound, then released for a server to take).
/// Whether the tests run as root (the user switch, `/etc/shadow` and raw sockets need it).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// A private `redis-server` on a free port with an append-only file fsynced on every
/// write, so a test can kill and restart it without touching the shared server.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let mut redis =
            PrivateRedis { port: free_port(), dir: tempfile::tempdir().expect("temp dir"), child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (cargo xtask test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final save; only what was fsynced survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service some tests need, at the address `cargo xtask test` starts it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Postgres,
    Nats,
    Kafka,
    /// s3s-fs with the bucket `prism-test` ([`S3_CONFIG`]).
    S3,
    /// A Redis Cluster of three masters on 127.0.0.1:7001-7003.
    RedisCluster,
}

/// The s3 plugin's slot config for the test server `cargo xtask test` starts.
/// Parts of the smallest size S3 allows, so tests of a few MiB run multipart uploads.
pub const S3_CONFIG: &str = "endpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nbucket = \"prism-test\"\naccess_key_id = \"prism\"\nsecret_access_key = \"prism-secret\"\npart_size_bytes = 5242880";

impl Backend {
    fn address(self) -> &'static str {
        match self {
            Backend::Redis => "127.0.0.1:6379",
            Backend::Postgres => "127.0.0.1:5432",
            Backend::Nats => "127.0.0.1:4222",
            Backend::Kafka => "127.0.0.1:9092",
            Backend::S3 => "127.0.0.1:9000",
            Backend::RedisCluster => "127.0.0.1:7001",
        }
    }

    /// The backend a workspace plugin library talks to, if any.
    pub fn of_library(library: &str) -> Option<Backend> {
        match library {
            "prism_redis" => Some(Backend::Redis),
            "prism_postgres" => Some(Backend::Postgres),
            "prism_nats" => Some(Backend::Nats),
            "prism_kafka" => Some(Backend::Kafka),
            "prism_s3" => Some(Backend::S3),
            _ => None,
        }
    }
}

/// Whether `program` (e.g. `chromium`, `prometheus`) is on the PATH, with the same rule
/// as [`backends_available`]: skipped with a line saying why, unless
/// `PRISM_REQUIRE_BACKENDS` is set (`cargo xtask test` installs the programs).
pub fn program_available(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("PRISM_REQUIRE_BACKENDS").is_none(),
        "{program} is not installed, and PRISM_REQUIRE_BACKENDS is set (`cargo xtask test` installs it)"
    );
    eprintln!("skipped: {program} is not installed (`cargo xtask test` installs it and runs this test)");
    false
}

/// Whether every one of `backends` accepts connections. When one does not, the calling
/// test should return early: it is skipped with a line saying why, so a plain
/// `cargo test` on a machine without the services passes. `cargo xtask test` sets
/// `PRISM_REQUIRE_BACKENDS`, and then a missing service fails the test instead.
pub fn backends_available(backends: &[Backend]) -> bool {
    let missing: Vec<String> = backends
        .iter()
        .filter(|backend| {
            let address: std::net::SocketAddr = backend.address().parse().expect("a literal address");
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err()
        })
        .map(|backend| format!("{backend:?} on {}", backend.address()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{} not reachable", missing.join(", "));
    assert!(
        std::env::var_os("PRISM_REQUIRE_BACKENDS").is_none(),
        "{reason}, and PRISM_REQUIRE_BACKENDS is set (`cargo xtask test` starts the services)"
    );
    eprintln!("skipped: {reason} (`cargo xtask test` starts the services and runs this test)");
    false
}

/// A private directory holding a copy of a built library, which a test replaces with
/// "new builds" to trigger live reloads.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl Default for PluginDir {
    fn default() -> Self {
        PluginDir::new()
    }
}

impl PluginDir {
    pub fn new() -> PluginDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        PluginDir { dir }
    }

    /// The directory, for a test's other files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the library is published.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("libplugin.so")
    }

    /// Publishes `library` (plus `marker` bytes at its end, which make a distinct build
    /// that loads the same) the safe way: write elsewhere, rename into place.
    pub fn publish(&self, library: &Path, marker: &[u8]) {
        let mut bytes = std::fs::read(library).expect("read library");
        bytes.extend_from_slice(marker);
        let staging = self.dir.path().join(".staging");
        std::fs::write(&staging, bytes).unwrap();
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&staging, self.path()).unwrap();
    }
}
