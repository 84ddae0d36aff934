//! Brings up the backends the tests talk to, on loopback: reuse a running one, start an
//! installed one, or install it from Debian's packages first (as root, e.g. in CI).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::run;

fn reachable(address: &str) -> bool {
    let address: SocketAddr = address.parse().expect("a literal socket address");
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        return Err(format!(
            "{} missing: install them (sudo apt-get install {})",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-qq"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

fn wait_for(address: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reachable(address) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what} did not come up on {address}"))
}

pub fn ensure_redis() -> Result<(), String> {
    const ADDRESS: &str = "127.0.0.1:6379";
    if reachable(ADDRESS) {
        return Ok(());
    }
    if !installed("redis-server") {
        apt_install(&["redis-server"])?;
    }
    let mut start = Command::new("redis-server");
    start.args([
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    run(start)?;
    wait_for(ADDRESS, "redis-server")
}
