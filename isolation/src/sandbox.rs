//! The sandbox a plugin process enters before any plugin code runs (`sandbox = "on"`,
//! the default): a Landlock rule set that lets it read the library, the system files a
//! network client needs and the paths its config names, and write only those paths;
//! then a seccomp filter that lets through the system calls an async network client
//! makes and refuses the rest (`ptrace`, `mount`, `execve`, `bpf`, module loading, raw
//! sockets, …) with `EPERM`, so a plugin sees an error it can report rather than a kill.
//!
//! Both are inherited by threads created afterwards but bind only the calling thread
//! when they are applied, so the child enters the sandbox while it has one thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// The Landlock ABI whose rights this sandbox handles (signal scoping came with 6); on an
/// older kernel Landlock enforces what it knows and the log line says "partially".
const LANDLOCK_ABI: ABI = ABI::V6;

/// What a plugin reads wherever it runs: shared libraries and the loader's cache, name
/// resolution, TLS trust stores and OpenSSL's config (not `/etc/ssl/private` and the
/// like, where the machine's TLS keys live), time zones, users and groups (not their
/// passwords), and what the runtime asks of /proc and /sys about CPUs and cgroup quotas.
const SYSTEM_READS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/resolv.conf",
    // Where /etc/resolv.conf points on machines that run systemd-resolved.
    "/run/systemd/resolve",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/ca-trust",
    "/etc/pki/tls/certs",
    "/etc/pki/tls/openssl.cnf",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];

/// Variables that name libraries or a trust store elsewhere (the child keeps them from
/// the gateway's environment): what they name is read like the system's.
const READ_WHERE_THE_ENVIRONMENT_SAYS: &[&str] = &["LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Devices any process may use.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// What the process will open and use: the library and the paths named by its configs
/// (a plugin process has one; a probe child checks every slot's).
pub struct Grants<'a> {
    /// `None` for the in-memory copy a child that switched user opens: Landlock takes no
    /// rule on memory files, and lets a process open those it holds.
    pub library: Option<&'a Path>,
    pub configs: &'a [String],
}

/// What was enforced, for the child's log line.
pub struct Entered {
    pub landlock: RulesetStatus,
    pub writable: Vec<PathBuf>,
}

impl Entered {
    /// What `prism status` shows of it.
    pub fn summary(&self) -> &'static str {
        match self.landlock {
            RulesetStatus::FullyEnforced => "seccomp + Landlock",
            RulesetStatus::PartiallyEnforced => "seccomp + Landlock (partial: an older kernel)",
            RulesetStatus::NotEnforced => "seccomp only (no Landlock in this kernel)",
        }
    }

    pub fn describe(&self) -> String {
        let landlock = match self.landlock {
            RulesetStatus::FullyEnforced => "Landlock enforced",
            RulesetStatus::PartiallyEnforced => {
                "Landlock partially enforced (this kernel knows fewer rights)"
            }
            RulesetStatus::NotEnforced => {
                "Landlock not enforced: this kernel does not support it, so the plugin reaches the files \
                 its user may"
            }
        };
        let writable: Vec<String> = self.writable.iter().map(|path| path.display().to_string()).collect();
        let writable = if writable.is_empty() { "nothing".to_owned() } else { writable.join(", ") };
        format!("sandbox on: seccomp allow-list enforced; {landlock}; writable: {writable}")
    }
}

/// Enters the sandbox. Fails (and the child refuses to open the library) if the process
/// already has other threads, or the filter cannot be installed.
pub fn enter(grants: &Grants) -> Result<Entered, String> {
    let threads = thread_count();
    if threads != Some(1) {
        return Err(format!(
            "cannot enter the sandbox with {} threads running: it would bind only this one",
            threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
        ));
    }
    // Both need it unless the process holds CAP_SYS_ADMIN; it is set here so that a probe
    // child, which applies no other limit, gets it too.
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    let writable = writable_paths(grants.configs);
    let landlock = restrict_files(grants, &writable).map_err(|e| format!("cannot set up Landlock: {e}"))?;
    let filter = system_call_filter()?;
    seccompiler::apply_filter_all_threads(&filter)
        .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    Ok(Entered { landlock, writable })
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// The paths the configs name, made writable: every string value that is an existing
/// directory, or a file (existing, or to be created on first use) whose directory exists,
/// which grants that directory, where databases keep their journals. An absolute path
/// whose directory is missing but whose grandparent exists gets that directory created
/// (`${config_dir}/data/x.db` on a first run) rather than a grant of its grandparent.
/// `/` is never granted, and nothing else in a config is a path.
pub fn writable_paths(configs: &[String]) -> Vec<PathBuf> {
    let mut strings = Vec::new();
    for table in configs.iter().filter_map(|config| config.parse::<toml::Table>().ok()) {
        collect_strings(&toml::Value::Table(table), &mut strings);
    }
    let mut paths: Vec<PathBuf> = strings.iter().filter_map(|value| granted_for(value)).collect();
    paths.sort();
    paths.dedup();
    paths
}

fn collect_strings(value: &toml::Value, into: &mut Vec<String>) {
    match value {
        toml::Value::String(text) => into.push(text.clone()),
        toml::Value::Array(items) => items.iter().for_each(|item| collect_strings(item, into)),
        toml::Value::Table(table) => table.values().for_each(|item| collect_strings(item, into)),
        _ => {}
    }
}

fn granted_for(value: &str) -> Option<PathBuf> {
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    let path = Path::new(value);
    if path.is_dir() {
        return usable(path);
    }
    let parent = match path.parent() {
        // A bare word (a key prefix, a table name) is a path only if such a file exists.
        Some(parent) if parent.as_os_str().is_empty() && path.exists() => Path::new("."),
        Some(parent) if parent.as_os_str().is_empty() => return None,
        Some(parent) => parent,
        None => return None,
    };
    if parent.is_dir() {
        return usable(parent);
    }
    parent.parent().filter(|g| path.is_absolute() && g != &Path::new("/") && g.is_dir())?;
    // Made as the plugin's user, before any plugin code runs: what the plugin would do.
    std::fs::create_dir(parent).ok()?;
    usable(parent)
}

fn usable(directory: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(directory).ok().filter(|p| p != Path::new("/"))
}

fn paths_named_by_the_environment() -> Vec<PathBuf> {
    READ_WHERE_THE_ENVIRONMENT_SAYS
        .iter()
        .filter_map(std::env::var_os)
        .flat_map(|value| std::env::split_paths(&value).collect::<Vec<_>>())
        .filter(|path| path.is_absolute())
        .collect()
}

fn restrict_files(grants: &Grants, writable: &[PathBuf]) -> Result<RulesetStatus, landlock::RulesetError> {
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let write = AccessFs::from_all(LANDLOCK_ABI) & !AccessFs::Execute;
    let device = AccessFs::ReadFile | AccessFs::WriteFile;
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .add_rules(path_beneath_rules(SYSTEM_READS, read))?
        .add_rules(path_beneath_rules(paths_named_by_the_environment(), read))?
        .add_rules(path_beneath_rules(DEVICES, device))?
        .add_rules(path_beneath_rules(writable, write))?
        .add_rules(path_beneath_rules(grants.library, read))?;
    Ok(ruleset.restrict_self()?.ruleset)
}

/// Calls allowed whatever their arguments.
fn unconditional() -> Vec<i64> {
    #[rustfmt::skip]
    let mut calls = vec![
        // memory
        libc::SYS_brk, libc::SYS_mmap, libc::SYS_munmap, libc::SYS_mremap, libc::SYS_mprotect,
        libc::SYS_madvise, libc::SYS_msync, libc::SYS_mincore, libc::SYS_membarrier,
        libc::SYS_get_mempolicy,
        // threads, time, signals, identity
        libc::SYS_clone, libc::SYS_clone3, libc::SYS_exit, libc::SYS_exit_group, libc::SYS_futex,
        libc::SYS_set_robust_list, libc::SYS_get_robust_list, libc::SYS_set_tid_address, libc::SYS_rseq,
        libc::SYS_sched_yield, libc::SYS_sched_getaffinity, libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler, libc::SYS_getcpu, libc::SYS_nanosleep, libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime, libc::SYS_clock_getres, libc::SYS_gettimeofday,
        libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigreturn, libc::SYS_sigaltstack,
        libc::SYS_rt_sigtimedwait, libc::SYS_restart_syscall, libc::SYS_kill, libc::SYS_tgkill,
        libc::SYS_tkill, libc::SYS_wait4, libc::SYS_waitid,
        libc::SYS_getpid, libc::SYS_gettid, libc::SYS_getppid, libc::SYS_getuid, libc::SYS_geteuid,
        libc::SYS_getgid, libc::SYS_getegid, libc::SYS_getresuid, libc::SYS_getresgid,
        libc::SYS_getgroups, libc::SYS_getpgid, libc::SYS_getsid, libc::SYS_getrusage, libc::SYS_times,
        libc::SYS_getpriority, libc::SYS_uname, libc::SYS_sysinfo, libc::SYS_getrandom, libc::SYS_capget,
        // descriptors and polling
        libc::SYS_read, libc::SYS_write, libc::SYS_readv, libc::SYS_writev, libc::SYS_pread64,
        libc::SYS_pwrite64, libc::SYS_preadv, libc::SYS_pwritev, libc::SYS_preadv2, libc::SYS_pwritev2,
        libc::SYS_close, libc::SYS_close_range, libc::SYS_dup, libc::SYS_dup3, libc::SYS_fcntl,
        libc::SYS_pipe2, libc::SYS_eventfd2, libc::SYS_epoll_create1, libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2, libc::SYS_ppoll, libc::SYS_pselect6,
        libc::SYS_timerfd_create, libc::SYS_timerfd_settime, libc::SYS_timerfd_gettime,
        libc::SYS_sendfile, libc::SYS_splice, libc::SYS_tee, libc::SYS_copy_file_range,
        // files (Landlock decides which)
        libc::SYS_openat, libc::SYS_openat2, libc::SYS_newfstatat, libc::SYS_fstat, libc::SYS_statx,
        libc::SYS_statfs, libc::SYS_fstatfs, libc::SYS_lseek, libc::SYS_faccessat, libc::SYS_faccessat2,
        libc::SYS_getdents64, libc::SYS_getcwd, libc::SYS_readlinkat, libc::SYS_mkdirat,
        libc::SYS_unlinkat, libc::SYS_renameat, libc::SYS_renameat2, libc::SYS_linkat,
        libc::SYS_symlinkat, libc::SYS_fchmod, libc::SYS_fchmodat, libc::SYS_fchown,
        libc::SYS_utimensat, libc::SYS_umask, libc::SYS_flock, libc::SYS_fsync, libc::SYS_fdatasync,
        libc::SYS_sync_file_range, libc::SYS_ftruncate, libc::SYS_truncate, libc::SYS_fallocate,
        libc::SYS_fadvise64, libc::SYS_readahead,
        // sockets (`socket` itself is conditional)
        libc::SYS_connect, libc::SYS_bind, libc::SYS_listen, libc::SYS_accept, libc::SYS_accept4,
        libc::SYS_getsockname, libc::SYS_getpeername, libc::SYS_setsockopt, libc::SYS_getsockopt,
        libc::SYS_sendto, libc::SYS_recvfrom, libc::SYS_sendmsg, libc::SYS_recvmsg,
        libc::SYS_sendmmsg, libc::SYS_recvmmsg, libc::SYS_shutdown,
    ];
    #[cfg(target_arch = "x86_64")]
    #[rustfmt::skip]
    calls.extend([
        libc::SYS_arch_prctl, libc::SYS_open, libc::SYS_stat, libc::SYS_lstat, libc::SYS_access,
        libc::SYS_readlink, libc::SYS_mkdir, libc::SYS_rmdir, libc::SYS_unlink, libc::SYS_rename,
        libc::SYS_link, libc::SYS_symlink, libc::SYS_chmod, libc::SYS_dup2, libc::SYS_pipe,
        libc::SYS_poll, libc::SYS_select, libc::SYS_epoll_create, libc::SYS_epoll_wait,
        libc::SYS_eventfd, libc::SYS_getdents, libc::SYS_getpgrp, libc::SYS_time, libc::SYS_getrlimit,
    ]);
    calls
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

/// `socket`: Unix, IPv4 and IPv6 streams and datagrams, and the routing netlink socket
/// name resolution reads interfaces from; never raw or packet sockets.
fn socket_rules() -> Result<Vec<SeccompRule>, String> {
    const TYPE_MASK: u64 = 0xf; // the type without SOCK_NONBLOCK / SOCK_CLOEXEC
    let mut rules = Vec::new();
    for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
        for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            rules.push(rule(vec![
                condition(0, SeccompCmpOp::Eq, family as u64)?,
                condition(1, SeccompCmpOp::MaskedEq(TYPE_MASK), kind as u64)?,
            ])?);
        }
    }
    for kind in [libc::SOCK_RAW, libc::SOCK_DGRAM] {
        rules.push(rule(vec![
            condition(0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64)?,
            condition(1, SeccompCmpOp::MaskedEq(TYPE_MASK), kind as u64)?,
            condition(2, SeccompCmpOp::Eq, libc::NETLINK_ROUTE as u64)?,
        ])?);
    }
    Ok(rules)
}

/// Calls allowed with some arguments only.
fn conditional() -> Result<Vec<(i64, Vec<SeccompRule>)>, String> {
    let each = |arg: u8, values: &[u64]| -> Result<Vec<SeccompRule>, String> {
        values.iter().map(|value| rule(vec![condition(arg, SeccompCmpOp::Eq, *value)?])).collect()
    };
    const PR_SET_VMA: u64 = 0x5356_4d41;
    let prctl = [libc::PR_SET_NAME, libc::PR_GET_NAME, libc::PR_GET_DUMPABLE, libc::PR_GET_NO_NEW_PRIVS]
        .map(|op| op as u64);
    // The request's type is c_ulong with glibc and c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    let ioctl =
        [libc::FIONBIO, libc::FIONREAD, libc::FIOCLEX, libc::FIONCLEX, libc::TCGETS, libc::TIOCGWINSZ]
            .map(|request| request as u64);
    Ok(vec![
        (libc::SYS_socket, socket_rules()?),
        (libc::SYS_socketpair, each(0, &[libc::AF_UNIX as u64])?),
        (libc::SYS_prctl, each(0, &[&prctl[..], &[PR_SET_VMA]].concat())?),
        (libc::SYS_ioctl, each(1, &ioctl)?),
        // Reading limits (the stack size a new thread gets), never setting them.
        (
            libc::SYS_prlimit64,
            vec![rule(vec![SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)
                .map_err(|e| e.to_string())?])?],
        ),
    ])
}

/// The allow-list as a BPF program; anything not on it fails with `EPERM`.
pub fn system_call_filter() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        unconditional().into_iter().map(|call| (call, vec![])).collect();
    rules.extend(conditional()?);
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let filter =
        SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
            .map_err(|e| format!("the seccomp filter is malformed: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("the seccomp filter does not compile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_for_this_machine() {
        let program = system_call_filter().expect("the allow-list compiles");
        assert!(program.len() > 100, "{} instructions is too few for the allow-list", program.len());
    }

    #[test]
    fn a_config_grants_the_paths_it_names_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("prism-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        std::fs::write(dir.join("ca.pem"), "x").unwrap();
        let config = format!(
            "root = \"{dir}/objects\"\nca_file = \"{dir}/ca.pem\"\npath = \"{dir}/new/deeper/x.db\"\n\
             fresh = \"{dir}/fresh/x.db\"\nkey_prefix = \"prism-acceptance:\"\ntable = \"prism_kv\"\n\
             url = \"redis://127.0.0.1:6379\"\nprefix = \"a/b\"\npassword = \"/\"\nnested = {{ list = [\"/nonexistent-root-dir/x\"] }}\n",
            dir = dir.display()
        );
        let granted = writable_paths(std::slice::from_ref(&config));
        let dir = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(granted, vec![dir.clone(), dir.join("fresh"), dir.join("objects")], "from {config}");
        assert!(!dir.join("new").exists(), "only a missing parent is made, never a chain of them");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
