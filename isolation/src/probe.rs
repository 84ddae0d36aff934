//! Probe children: `prism probe-plugin` opens a library (and, asked to, checks slot
//! configs and runs one instance) in a process of its own, so a library that crashes or
//! hangs while it is opened costs a child, never the gateway.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a probe may take before the library is refused as hanging.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a probe child ended, and what it wrote.
pub struct ProbeRun {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

pub enum ProbeFailure {
    Spawn(std::io::Error),
    /// It ran past [`PROBE_TIMEOUT`] and was killed.
    Hung,
}

pub const HUNG_FIX: &str = "check the library's initialisers (static constructors) and rebuild it";

pub fn hung_message(source: &Path) -> String {
    format!("{} hung for {PROBE_TIMEOUT:?} while being opened in a probe process", source.display())
}

/// "`source` crashed the probe process that opened it (how): its last stderr line".
pub fn crashed_message(source: &Path, run: &ProbeRun) -> String {
    let how = match run.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => signal_of(&run.status),
    };
    format!(
        "{} crashed the probe process that opened it ({how}){}",
        source.display(),
        run.stderr.lines().last().map(|line| format!(": {line}")).unwrap_or_default()
    )
}

/// Runs `prism probe-plugin COPY --configs-on-stdin ARGS…` with `configs` on its stdin,
/// for at most [`PROBE_TIMEOUT`]: a library that hangs while it is opened is killed.
pub fn run_probe(
    prober: &Path,
    copy: &Path,
    configs: &[String],
    args: &[&str],
) -> Result<ProbeRun, ProbeFailure> {
    let mut child = Command::new(prober)
        .arg("probe-plugin")
        .arg(copy)
        .arg("--configs-on-stdin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ProbeFailure::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        // A child that died before reading is reported by its exit status below.
        let _ = stdin.write_all(serde_json::to_string(configs).unwrap_or_default().as_bytes());
    }
    // Drained while it runs, so a full pipe cannot stall it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeFailure::Hung);
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    Ok(ProbeRun { status, stdout, stderr })
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(7) => "killed by SIGBUS".into(),
        Some(11) => "killed by SIGSEGV".into(),
        Some(signal) => format!("killed by signal {signal}"),
        None => "ended abnormally".into(),
    }
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> String {
    "ended abnormally".into()
}

/// Creates `dir` (0700) or checks that it is this user's own and not writable by others.
#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let metadata = std::fs::metadata(dir)?;
    // A file this process creates carries its effective uid: compare the directory's owner.
    let marker = dir.join(format!(".owner-{}", std::process::id()));
    std::fs::write(&marker, b"")?;
    let me = std::fs::metadata(&marker).map(|m| m.uid());
    let _ = std::fs::remove_file(&marker);
    if metadata.uid() != me? || metadata.permissions().mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it belongs to another user or others can write to it",
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
