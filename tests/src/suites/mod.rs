//! The per-interface acceptance suites and their runner.
//!
//! Each case gets a fresh instance and its own key prefix, so suites can run against
//! a shared backend (a Redis or PostgreSQL server) without seeing each other's keys.

mod keyvalue_basic;
mod keyvalue_batch;
mod keyvalue_cas;
mod keyvalue_scan;
mod keyvalue_transactional;
mod keyvalue_ttl;
mod list_basic;
mod list_range;
mod object_store_basic;
mod pubsub_basic;
mod pubsub_persistent;
mod pubsub_wildcards;
mod queue_basic;
mod queue_dead_letter;
mod queue_delayed;
mod queue_visibility;
mod state_transfer;
mod stream_basic;
mod stream_consumer_groups;
mod stream_partitioning;
mod stream_replay;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use plugin_abi::host::{Instance, Plugin};
use plugin_abi::Interface;

pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One acceptance case: panics (through `assert!`) when the plugin breaks a promise.
pub struct Case {
    pub name: &'static str,
    pub run: for<'a> fn(&'a Instance, &'a Keys) -> CaseFuture<'a>,
}

/// Declares a suite's cases: `async fn name(instance, keys) { … }` each.
macro_rules! cases {
    ($(async fn $name:ident($instance:ident, $keys:ident) $body:block)*) => {
        $(
            fn $name<'a>($instance: &'a plugin_abi::host::Instance, $keys: &'a crate::suites::Keys) -> crate::suites::CaseFuture<'a> {
                Box::pin(async move $body)
            }
        )*
        pub const CASES: &[crate::suites::Case] = &[$(crate::suites::Case { name: stringify!($name), run: $name }),*];
    };
}
pub(crate) use cases;

macro_rules! suites {
    ($($variant:ident $module:ident $box:ident $object:ident $handle:ident $call:ident $to:ident;)*) => {
        /// The cases that prove an interface: the module named like it.
        pub fn suite_for(interface: Interface) -> &'static [Case] {
            match interface {
                $(Interface::$variant => $module::CASES,)*
            }
        }

        /// The source of suite file `file` (`keyvalue_basic.rs`), to quote a failing call.
        fn suite_source(file: &str) -> Option<&'static str> {
            match file {
                $(concat!(stringify!($module), ".rs") => Some(include_str!(concat!(stringify!($module), ".rs"))),)*
                _ => None,
            }
        }
    };
}
plugin_abi::for_each_interface!(suites);

/// Unique key names for one case: `acc/<run>/<case>/<name>`. It remembers every name
/// it handed out, so the runner can remove what the case left behind.
pub struct Keys {
    prefix: String,
    handed_out: std::sync::Mutex<Vec<String>>,
}

impl Keys {
    fn new(case: &str) -> Keys {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let run = format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        Keys { prefix: format!("acc/{run}/{case}/"), handed_out: Default::default() }
    }

    pub fn key(&self, name: &str) -> String {
        let key = format!("{}{name}", self.prefix);
        self.handed_out.lock().unwrap_or_else(|e| e.into_inner()).push(key.clone());
        key
    }

    /// The prefix every key of this case starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A plugin library and the slot config to create its instances with.
pub struct Target {
    pub plugin: Plugin,
    pub config: String,
    path: std::path::PathBuf,
    /// With process isolation: the `prism` binary whose `plugin-host` runs each instance.
    process: Option<std::path::PathBuf>,
}

impl Target {
    pub fn load(path: &Path, config: &str) -> Result<Target, String> {
        let plugin = Plugin::load(path).map_err(|e| e.to_string())?;
        plugin.check_config(config).map_err(|e| format!("the plugin rejected the config: {e}"))?;
        Ok(Target { plugin, config: config.to_owned(), path: path.to_path_buf(), process: None })
    }

    /// Runs every instance in its own process (`isolation = "process"`), started by
    /// `prism`, the gateway binary at that path.
    pub fn in_processes_of(mut self, prism: &Path) -> Target {
        self.process = Some(prism.to_path_buf());
        self
    }

    /// A fresh instance, in this process or in a child of its own.
    pub async fn create(&self) -> Result<Instance, plugin_abi::PluginError> {
        let Some(prism) = &self.process else { return self.plugin.create(&self.config).await };
        let spec = prism_isolation::ProcessSpec {
            binary: prism.clone(),
            library: self.path.clone(),
            plugin: self.plugin.metadata().name.clone(),
            namespace: "acceptance".into(),
            config: self.config.clone(),
            settings: Default::default(),
        };
        Ok(prism_isolation::start_instance(spec).await?.0)
    }
}

#[derive(Debug, Default)]
pub struct SuiteReport {
    pub passed: Vec<&'static str>,
    /// Case name and the failure message.
    pub failed: Vec<(&'static str, String)>,
}

/// Runs every case of `interface`'s suite, each on a fresh instance. Needs a tokio
/// multi-thread runtime (cases run as tasks so a failed assertion fails only its case).
pub async fn run_suite(target: &Target, interface: Interface) -> SuiteReport {
    let mut report = SuiteReport::default();
    for case in suite_for(interface) {
        let instance = match target.create().await {
            Ok(instance) => Arc::new(instance),
            Err(error) => {
                report.failed.push((case.name, format!("could not create an instance: {error}")));
                continue;
            }
        };
        let run = case.run;
        let keys = Arc::new(Keys::new(case.name));
        let (task_instance, task_keys) = (instance.clone(), keys.clone());
        let failed_at = Arc::new(std::sync::Mutex::new(None));
        install_case_panic_hook();
        let outcome = tokio::spawn(
            CASE_FAILED_AT.scope(failed_at.clone(), async move { run(&task_instance, &task_keys).await }),
        )
        .await;
        clean_up(&instance, &keys).await;
        instance.shutdown().await;
        match outcome {
            Ok(()) => report.passed.push(case.name),
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                let at = failed_at.lock().unwrap_or_else(|e| e.into_inner()).take();
                report.failed.push((case.name, describe_failure(&message, at.as_deref())));
            }
            Err(error) => report.failed.push((case.name, error.to_string())),
        }
    }
    report
}

/// A case's failure as the runner reports it: the statement that failed, quoted from the
/// suite's source, what came back and what was expected, and where.
fn describe_failure(message: &str, at: Option<&str>) -> String {
    let got = if let Some(error) = message.strip_prefix("called `Result::unwrap()` on an `Err` value: ") {
        format!("got the error {error}; expected success")
    } else if let Some(value) = message.strip_prefix("called `Result::unwrap_err()` on an `Ok` value: ") {
        format!("got Ok({value}); expected an error")
    } else if message.starts_with("called `Option::unwrap()` on a `None` value") {
        "got None; expected a value".to_owned()
    } else {
        message.to_owned()
    };
    let Some(at) = at else { return got };
    match statement_at(at) {
        Some(statement) => format!("`{statement}`: {got} (at {at})"),
        None => format!("{got} (at {at})"),
    }
}

/// The statement around `file:line` of a suite, on one line.
fn statement_at(at: &str) -> Option<String> {
    let (path, line) = at.rsplit_once(':')?;
    let line: usize = line.parse().ok()?;
    let source = suite_source(Path::new(path).file_name()?.to_str()?)?;
    let lines: Vec<&str> = source.lines().collect();
    let last = line.checked_sub(1).filter(|&last| last < lines.len())?;
    let ends_statement = |text: &str| {
        let text = text.trim_end();
        text.ends_with(';') || text.ends_with('{') || text.ends_with('}')
    };
    let mut first = last;
    while first > 0 && last - first < 8 && !ends_statement(lines[first - 1]) {
        first -= 1;
    }
    let mut end = last;
    while end + 1 < lines.len() && end - last < 8 && !ends_statement(lines[end]) {
        end += 1;
    }
    let mut statement = String::new();
    for part in lines[first..=end].iter().map(|line| line.trim()) {
        if !statement.is_empty() && !part.starts_with('.') && !part.starts_with(')') {
            statement.push(' ');
        }
        statement.push_str(part);
    }
    let statement = statement.trim_end_matches(';').to_owned();
    const LONGEST: usize = 240;
    Some(match statement.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &statement[..cut]),
        None => statement,
    })
}

tokio::task_local! {
    /// Where the case running in this task failed (`tests/src/suites/FILE.rs:LINE`, a
    /// path the release package carries), set by the panic hook.
    static CASE_FAILED_AT: Arc<std::sync::Mutex<Option<String>>>;
}

/// Installs, once, a panic hook that notes where a case panicked and keeps it off
/// stderr (the runner reports it with the case); other panics print as usual.
fn install_case_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
            let in_case = CASE_FAILED_AT
                .try_with(|failed_at| *failed_at.lock().unwrap_or_else(|e| e.into_inner()) = at)
                .is_ok();
            if !in_case {
                default(info);
            }
        }));
    });
}

/// Removes what a case left under its keys, as far as the interfaces allow: key-value
/// entries (by scanning the case's prefix, or key by key), lists and objects. Queues,
/// topics and streams have no delete in any interface; their names are unique per run.
/// Best effort, bounded in time: a failing backend must not hide the case's result.
async fn clean_up(instance: &Instance, keys: &Keys) {
    let handed_out = std::mem::take(&mut *keys.handed_out.lock().unwrap_or_else(|e| e.into_inner()));
    let work = async {
        let basic = instance.keyvalue_basic();
        let scan = instance.keyvalue_scan();
        if let (Some(scan), Some(basic)) = (&scan, &basic) {
            let mut stream = scan.scan_stream(keys.prefix());
            while let Some(Ok((key, _))) = stream.next().await {
                let _ = basic.delete(&key).await;
            }
        }
        for key in &handed_out {
            // Without a scan, key-value entries go key by key.
            if let (None, Some(basic)) = (&scan, &basic) {
                let _ = basic.delete(key).await;
            }
            if let Some(lists) = instance.list_basic() {
                let _ = lists.pop(key, plugin_abi::ListEnd::Left, u32::MAX).await;
            }
            if let Some(objects) = instance.object_store_basic() {
                let _ = objects.delete(key).await;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), work).await;
}

#[cfg(test)]
mod tests {
    /// A failed `unwrap` is reported with the statement that made the call, what came
    /// back and what was expected.
    #[test]
    fn a_failed_unwrap_names_the_call_what_came_back_and_what_was_expected() {
        let source = super::suite_source("keyvalue_basic.rs").expect("the suite's source is embedded");
        let (index, line) = source
            .lines()
            .enumerate()
            .find(|(_, line)| line.trim_end().ends_with(".unwrap();"))
            .expect("an unwrap");
        let at = format!("tests/src/suites/keyvalue_basic.rs:{}", index + 1);
        let message = "called `Result::unwrap()` on an `Err` value: PluginError { code: Unavailable }";
        let described = super::describe_failure(message, Some(&at));
        let call = line.trim().trim_end_matches(';');
        assert!(described.contains(call), "{described:?} should quote {call:?}");
        assert!(
            described.contains("got the error PluginError { code: Unavailable }; expected success"),
            "{described:?}"
        );
        assert!(described.ends_with(&format!("(at {at})")), "{described:?}");

        let none = super::describe_failure("called `Option::unwrap()` on a `None` value", Some(&at));
        assert!(none.contains("got None; expected a value"), "{none:?}");
        let ok = super::describe_failure("called `Result::unwrap_err()` on an `Ok` value: 3", None);
        assert_eq!(ok, "got Ok(3); expected an error");
    }
}
