//! End-to-end on SQLite: every acknowledged write survives the gateway being killed
//! with SIGKILL mid-load; new builds of the plugin swapped in under write load (two
//! builds with the file open at once) lose nothing and leave the file sound; and a
//! database named with `${config_dir}` lands next to the config.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_acceptance::harness::{plugin_library, PluginDir, Server};
use prism_api::*;

fn config(library: &str, data: &Path) -> String {
    format!(
        r#"
[server]
health_interval_ms = 200
reload_debounce_ms = 100

[plugins.sqlite]
path = "{library}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "sqlite"
config = {{ path = "{kv}" }}

[[namespaces]]
name = "jobs"
pattern = "queue"
[namespaces.slots.queue]
plugin = "sqlite"
config = {{ path = "{jobs}" }}

[[namespaces]]
name = "lists"
pattern = "list"
[namespaces.slots.store]
plugin = "sqlite"
config = {{ path = "{lists}" }}
"#,
        kv = data.join("default.db").display(),
        jobs = data.join("jobs.db").display(),
        lists = data.join("lists.db").display(),
    )
}

fn set(key: &str) -> SetRequest {
    SetRequest { key: key.into(), value: key.as_bytes().to_vec().into(), ..Default::default() }
}

/// What the writers were told was done, before the gateway died.
#[derive(Default)]
struct Acknowledged {
    keys: Vec<String>,
    messages: Vec<String>,
    pushed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_sigkill_mid_load() {
    let data = tempfile::tempdir().unwrap();
    let config = config(&plugin_library("prism_sqlite").display().to_string(), data.path());
    let server = Arc::new(Server::start(&config));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (server, acknowledged) = (server.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let (mut kv, mut queue, mut list) =
                (server.keyvalue().await, server.queue().await, server.list().await);
            for n in 0.. {
                let key = format!("w{writer}-{n}");
                if kv.set(set(&key)).await.is_err() {
                    return;
                }
                acknowledged.lock().unwrap().keys.push(key.clone());
                let enqueue = EnqueueRequest {
                    namespace: "jobs".into(),
                    queue: "work".into(),
                    payload: key.as_bytes().to_vec().into(),
                    ..Default::default()
                };
                let Ok(reply) = queue.enqueue(enqueue).await else { return };
                acknowledged.lock().unwrap().messages.push(reply.into_inner().message_id);
                let push = PushRequest {
                    namespace: "lists".into(),
                    key: "log".into(),
                    values: vec![key.as_bytes().to_vec().into()],
                    end: ListEnd::Right as i32,
                };
                if list.push(push).await.is_err() {
                    return;
                }
                acknowledged.lock().unwrap().pushed.push(key);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = server.pid();
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    for writer in writers {
        writer.await.expect("a writer panicked");
    }
    drop(Arc::try_unwrap(server).ok().expect("the writers are done"));
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.keys.len() > 50, "too little load to prove anything: {}", acknowledged.keys.len());

    let server = Server::start(&config);
    let mut kv = server.keyvalue().await;
    for key in &acknowledged.keys {
        let reply = kv.get(GetRequest { key: key.clone(), ..Default::default() }).await.unwrap().into_inner();
        assert!(reply.found && reply.value == key.as_bytes(), "acknowledged Set of {key} was lost");
    }
    let delivered: std::collections::HashSet<String> =
        server.drain_queue("jobs", "work").await.into_iter().map(|m| m.message_id).collect();
    for id in &acknowledged.messages {
        assert!(delivered.contains(id), "acknowledged message {id} was lost");
    }
    let range = RangeRequest { namespace: "lists".into(), key: "log".into(), start: 0, stop: -1 };
    let items = server.list().await.range(range).await.unwrap().into_inner().values;
    let items: std::collections::HashSet<Vec<u8>> = items.into_iter().map(|v| v.to_vec()).collect();
    for key in &acknowledged.pushed {
        assert!(items.contains(key.as_bytes()), "acknowledged push of {key} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_builds_under_write_load_loses_nothing_and_leaves_the_file_sound() {
    let plugins = PluginDir::new();
    let library = plugins.path();
    let built = plugin_library("prism_sqlite");
    plugins.publish(&built, b"");
    let data = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(&config(&library.display().to_string(), data.path())));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (server, stop) = (server.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut kv = server.keyvalue().await;
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}-{written}");
                kv.set(set(&key)).await.unwrap_or_else(|s| panic!("Set {key} failed during a swap: {s}"));
                written += 1;
            }
            written
        }));
    }
    for swap in 1..=4u64 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        plugins.publish(&built, format!("build {swap}").as_bytes());
        let outcome = server.wait_for_reloads(swap).await.config.unwrap();
        assert!(outcome.ok, "swap {swap}: {}", outcome.message);
    }
    stop.store(true, Ordering::Relaxed);
    let mut kv = server.keyvalue().await;
    for (writer, handle) in writers.into_iter().enumerate() {
        let written = handle.await.expect("a writer failed");
        assert!(written > 0, "writer {writer} wrote nothing");
        for n in 0..written {
            let key = format!("w{writer}-{n}");
            let reply =
                kv.get(GetRequest { key: key.clone(), ..Default::default() }).await.unwrap().into_inner();
            assert!(reply.found, "{key} was lost across the swaps");
        }
    }
    drop(server);
    let check = std::process::Command::new("sqlite3")
        .arg(data.path().join("default.db"))
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("run sqlite3 (cargo xtask test installs it)");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_under_config_dir_is_created_next_to_the_config() {
    let server = Server::start(
        r#"
[plugins.sqlite]
path = "{sqlite}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "sqlite"
config = { path = "${config_dir}/data/default.db" }
"#,
    );
    server.keyvalue().await.set(set("here")).await.unwrap();
    let database = server.config_path().parent().unwrap().join("data/default.db");
    assert!(database.is_file(), "{} was not created", database.display());
}
