//! Live reload: a new plugin build is picked up from the file, traffic moves with the
//! state, streams end cleanly; config edits add and remove namespaces; and every refusal
//! path (corrupt file, ABI mismatch, lost interface, bad config edit, SHA-256 pin,
//! world-writable file) keeps the old version serving and says why.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use prism_acceptance::harness::{plugin_library, run_prism, PluginDir, Server};
use prism_api::*;
use tonic::Code;

fn config(plugin: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
health_interval_ms = 200
reload_debounce_ms = 100
{extra}
[plugins.memstore]
path = "{}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"

[[namespaces]]
name = "events"
pattern = "pubsub"
[namespaces.slots.broker]
plugin = "memstore"
"#,
        plugin.display()
    )
}

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest { key: key.into(), value: value.as_bytes().to_vec().into(), ..Default::default() }
}

async fn get(server: &Server, key: &str) -> Option<Vec<u8>> {
    let reply =
        server.keyvalue().await.get(GetRequest { key: key.into(), ..Default::default() }).await.unwrap();
    let reply = reply.into_inner();
    reply.found.then(|| reply.value.to_vec())
}

async fn status(server: &Server) -> GetReloadStatusResponse {
    server.admin().await.get_reload_status(GetReloadStatusRequest {}).await.unwrap().into_inner()
}

fn memstore_sha(status: &GetReloadStatusResponse) -> String {
    status.plugins.iter().find(|p| p.name == "memstore").expect("memstore listed").sha256.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_is_picked_up_live_with_its_state_and_streams_end_cleanly() {
    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_memstore"), b"");
    let server = Server::start(&config(&plugins.path(), ""));
    let mut kv = server.keyvalue().await;
    for i in 0..100 {
        kv.set(set(&format!("key-{i}"), &format!("value-{i}"))).await.unwrap();
    }
    let before = status(&server).await;
    assert!(before.watching);
    let subscribe = SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() };
    let mut stream = server.pubsub().await.subscribe(subscribe.clone()).await.unwrap().into_inner();

    plugins.publish(&plugin_library("prism_memstore"), b"build 2");
    let after = server.wait_for_reloads(1).await;
    let outcome = after.config.clone().expect("a reload outcome");
    assert!(outcome.ok, "{}", outcome.message);
    assert!(outcome.message.contains("plugins reloaded: memstore"), "{}", outcome.message);
    assert_ne!(memstore_sha(&before), memstore_sha(&after), "the new build runs");

    for i in 0..100 {
        let value = get(&server, &format!("key-{i}")).await;
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_bytes()), "key-{i} lost in the reload");
    }
    let ended =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("the stream ends");
    let status = ended.expect_err("the old subscription ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("reloaded"), "{}", status.message());

    // Resubscribing reaches the new instance.
    let mut again = server.pubsub().await.subscribe(subscribe).await.unwrap().into_inner();
    let publish = PublishRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() };
    server.pubsub().await.publish(publish).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), again.message()).await.unwrap().unwrap().unwrap();

    let (code, stdout, _) = run_prism(&["status", "--server", &server.url()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("last reload: ok"), "{stdout}");
    assert!(stdout.contains(&memstore_sha(&after)), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_add_and_remove_namespaces_and_a_bad_edit_changes_nothing() {
    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_memstore"), b"");
    let server = Server::start_with(&config(&plugins.path(), ""), &["--no-watch"]);
    assert!(!status(&server).await.watching);
    let with_lists = config(&plugins.path(), "")
        + "\n[[namespaces]]\nname = \"lists\"\npattern = \"list\"\n[namespaces.slots.store]\nplugin = \"memstore\"\n";
    std::fs::write(server.config_path(), &with_lists).unwrap();
    let (code, stdout, _) = run_prism(&["reload", "--server", &server.url()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("namespaces rebuilt: lists"), "{stdout}");
    let push = PushRequest {
        namespace: "lists".into(),
        key: "l".into(),
        values: vec![b"a".to_vec().into()],
        end: ListEnd::Right as i32,
    };
    server.list().await.push(push.clone()).await.unwrap();

    std::fs::write(server.config_path(), with_lists.replace("pattern = \"list\"", "pattern = \"lisp\""))
        .unwrap();
    let (code, stdout, _) = run_prism(&["reload", "--server", &server.url()]);
    assert_eq!(code, 1, "a refused reload exits 1: {stdout}");
    assert!(stdout.contains("refused") && stdout.contains("unknown pattern 'lisp'"), "{stdout}");
    server.list().await.push(push.clone()).await.expect("the running config keeps serving");

    std::fs::write(server.config_path(), config(&plugins.path(), "")).unwrap();
    let reply = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    let outcome = reply.outcome.unwrap();
    assert!(outcome.ok && outcome.message.contains("removed: lists"), "{}", outcome.message);
    let status = server.list().await.push(push).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Its health service goes too, once the poller has run.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = tonic_health::pb::HealthCheckRequest { service: "lists".into() };
        match health.check(request).await {
            Err(status) if status.code() == Code::NotFound => break,
            other => assert!(Instant::now() < deadline, "'lists' still has a health status: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes one bad change, reloads through the admin API, and checks it was refused with
/// `expect` in the message while the old build keeps serving.
async fn refused(server: &Server, expect: &str) {
    let before = status(server).await;
    let reply = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    let outcome = reply.outcome.unwrap();
    assert!(!outcome.ok, "the reload should have been refused ({expect}): {}", outcome.message);
    assert!(outcome.message.contains(expect), "expected '{expect}' in: {}", outcome.message);
    let after = status(server).await;
    assert_eq!(memstore_sha(&before), memstore_sha(&after), "the old build keeps running");
    assert_eq!(get(server, "kept").await.as_deref(), Some(&b"yes"[..]), "and serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_change_is_refused_and_the_old_version_keeps_serving() {
    let plugins = PluginDir::new();
    let memstore = plugin_library("prism_memstore");
    plugins.publish(&memstore, b"");
    let server = Server::start_with(&config(&plugins.path(), ""), &["--no-watch"]);
    server.keyvalue().await.set(set("kept", "yes")).await.unwrap();

    // A truncated library: opening it kills the probe process, not the host.
    let bytes = std::fs::read(&memstore).unwrap();
    std::fs::write(plugins.dir().join("truncated"), &bytes[..4096]).unwrap();
    plugins.publish(&plugins.dir().join("truncated"), b"");
    refused(&server, "crashed the probe process").await;

    plugins.publish(&plugin_library("prism_fixture_incompatible_abi"), b"");
    refused(&server, "incompatible plugin ABI").await;

    // A library that lost the interface the slot requires (nats has no keyvalue_basic).
    plugins.publish(&plugin_library("prism_nats"), b"");
    refused(&server, "lacks interface keyvalue_basic").await;

    plugins.publish(&memstore, b"world-writable build");
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    refused(&server, "writable by other users").await;

    plugins.publish(&memstore, b"unpinned build");
    let pin = "0".repeat(64);
    std::fs::write(
        server.config_path(),
        config(&plugins.path(), "").replace("path = ", &format!("sha256 = \"{pin}\"\npath = ")),
    )
    .unwrap();
    refused(&server, "but the config pins").await;

    std::fs::write(server.config_path(), "this is [not toml").unwrap();
    refused(&server, "plugins.toml").await;

    // A namespace rebound to an instance that cannot start (no Redis on port 1).
    let unreachable = config(&plugins.path(), "").replace(
        "[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"memstore\"",
        "[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"redis\"\nconfig = { url = \"redis://127.0.0.1:1\" }",
    ) + &format!("\n[plugins.redis]\npath = \"{}\"\n", plugin_library("prism_redis").display());
    assert!(unreachable.contains("plugin = \"redis\""), "the edit applies");
    std::fs::write(server.config_path(), unreachable).unwrap();
    refused(&server, "could not start").await;

    let status = status(&server).await;
    let memstore_status = status.plugins.iter().find(|p| p.name == "memstore").unwrap();
    let last = memstore_status.last.as_ref().unwrap();
    assert!(!last.ok, "the plugin's last load attempt is reported as failed: {last:?}");

    // Fixing the file lets the next reload through.
    std::fs::write(server.config_path(), config(&plugins.path(), "")).unwrap();
    let reply = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    assert!(reply.outcome.as_ref().unwrap().ok, "{:?}", reply.outcome);
    assert_eq!(get(&server, "kept").await.as_deref(), Some(&b"yes"[..]), "state handed over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_swaps_under_load_fail_no_request_and_lose_no_key() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let plugins = PluginDir::new();
    let memstore = plugin_library("prism_memstore");
    plugins.publish(&memstore, b"");
    let server = Arc::new(Server::start(&config(&plugins.path(), "")));
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for writer in 0..4 {
        let (server, stop) = (server.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut kv = server.keyvalue().await;
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}-{written}");
                kv.set(set(&key, &key))
                    .await
                    .unwrap_or_else(|s| panic!("Set {key} failed during a swap: {s}"));
                let reply = kv.get(GetRequest { key: key.clone(), ..Default::default() }).await;
                let reply =
                    reply.unwrap_or_else(|s| panic!("Get {key} failed during a swap: {s}")).into_inner();
                assert_eq!(&reply.value[..], key.as_bytes(), "{key} read back wrong");
                written += 1;
            }
            written
        }));
    }
    let subscriber = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut resubscribed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let request =
                    SubscribeRequest { namespace: "events".into(), topic: "t".into(), ..Default::default() };
                let mut stream = server.pubsub().await.subscribe(request).await.unwrap().into_inner();
                loop {
                    match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                        Err(_) if stop.load(Ordering::Relaxed) => return resubscribed,
                        Err(_) | Ok(Ok(Some(_))) => continue,
                        Ok(Ok(None)) => panic!("a subscription ended without a status"),
                        Ok(Err(status)) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status}");
                            resubscribed += 1;
                            break;
                        }
                    }
                }
            }
            resubscribed
        })
    };

    for swap in 1..=10u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let marker = if swap % 2 == 1 { &b"build B"[..] } else { &b""[..] };
        plugins.publish(&memstore, marker);
        let status = server.wait_for_reloads(swap).await;
        let outcome = status.config.unwrap();
        assert!(outcome.ok, "swap {swap}: {}", outcome.message);
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.expect("a writer failed"));
    }
    let resubscribed = subscriber.await.expect("the subscriber failed");
    assert!(resubscribed >= 1, "the subscriber never saw a swap end its stream");
    let mut kv = server.keyvalue().await;
    for (writer, count) in written.iter().enumerate() {
        assert!(*count > 0, "writer {writer} wrote nothing");
        for n in 0..*count {
            let key = format!("w{writer}-{n}");
            let reply =
                kv.get(GetRequest { key: key.clone(), ..Default::default() }).await.unwrap().into_inner();
            assert!(reply.found, "{key} was lost across the swaps");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_rewritten_in_place_is_picked_up_and_the_host_survives_it() {
    use std::io::Write;
    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_memstore"), b"");
    let server = Server::start(&config(&plugins.path(), ""));
    server.keyvalue().await.set(set("kept", "yes")).await.unwrap();
    let before = status(&server).await;
    // Not the safe way: appending to the file the host was started from. The host runs a
    // private copy, so the running code is untouched, and the change is a new build.
    let mut file = std::fs::OpenOptions::new().append(true).open(plugins.path()).unwrap();
    file.write_all(b"rewritten in place").unwrap();
    drop(file);
    let after = server.wait_for_reloads(1).await;
    assert!(after.config.as_ref().unwrap().ok, "{:?}", after.config);
    assert_ne!(memstore_sha(&before), memstore_sha(&after));
    assert_eq!(get(&server, "kept").await.as_deref(), Some(&b"yes"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_config_under_load_is_refused_and_nothing_fails_or_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_memstore"), b"");
    let server = Arc::new(Server::start(&config(&plugins.path(), "")));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut kv = server.keyvalue().await;
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{written}");
                kv.set(set(&key, &key)).await.unwrap_or_else(|s| panic!("Set {key} failed: {s}"));
                written += 1;
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What `: > plugins.toml` does: the watcher sees a valid, empty config.
    let original = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(server.config_path(), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let config = status(&server).await.config;
        if let Some(outcome) = config.filter(|outcome| !outcome.ok) {
            break outcome.message;
        }
        assert!(Instant::now() < deadline, "the emptied file was never looked at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.contains("declares no namespaces"), "{refusal}");
    assert!(refusal.contains("default, events"), "names what it would remove: {refusal}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(server.config_path(), original).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("no request failed");
    assert!(written > 0);
    let mut kv = server.keyvalue().await;
    for n in 0..written {
        let key = format!("k{n}");
        let reply = kv.get(GetRequest { key: key.clone(), ..Default::default() }).await.unwrap().into_inner();
        assert!(reply.found, "{key} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_plugin_is_shut_down_before_its_new_build_starts_and_no_call_fails() {
    exclusive_handovers("in_process").await;
}

/// The same handovers with the plugin in processes of its own: the old process has
/// exited (its lock released) before the new one starts, and its state moves across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_exclusive_plugin_hands_over_between_processes_and_no_call_fails() {
    exclusive_handovers("process").await;
}

async fn exclusive_handovers(isolation: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // The fixture locks `lock_file` exclusively per instance: two side by side cannot start.
    let plugins = PluginDir::new();
    let fixture = plugin_library("prism_fixture_exclusive");
    plugins.publish(&fixture, b"");
    let lock = plugins.dir().join("store.lock");
    let config = format!(
        "[server]\nhealth_interval_ms = 200\nreload_debounce_ms = 100\n\n[plugins.exclusive]\npath = \"{}\"\nisolation = \"{isolation}\"\n\n\
         [[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"exclusive\"\n\
         config = {{ lock_file = \"{}\" }}\n",
        plugins.path().display(),
        lock.display()
    );
    let server = Arc::new(Server::start(&config));
    if isolation == "process" {
        let (_, status, _) = run_prism(&["status", "--server", &server.url()]);
        assert!(status.contains("process default/store: running pid"), "{status}");
    }
    let (code, stdout, _) = run_prism(&["plugins", &plugins.path().display().to_string()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("exclusive:         yes"), "{stdout}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..2 {
        let (server, stop) = (server.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut kv = server.keyvalue().await;
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("x{writer}-{written}");
                kv.set(set(&key, &key))
                    .await
                    .unwrap_or_else(|s| panic!("Set {key} failed during a handover: {s}"));
                let reply = kv.get(GetRequest { key: key.clone(), ..Default::default() }).await;
                let reply =
                    reply.unwrap_or_else(|s| panic!("Get {key} failed during a handover: {s}")).into_inner();
                assert_eq!(&reply.value[..], key.as_bytes(), "{key} read back wrong");
                written += 1;
            }
            written
        }));
    }
    for swap in 1..=3u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        plugins.publish(&fixture, format!("build {swap}").as_bytes());
        let outcome = server.wait_for_reloads(swap).await.config.unwrap();
        assert!(outcome.ok, "swap {swap}: {}\n{}", outcome.message, server.stderr());
    }
    stop.store(true, Ordering::Relaxed);
    let mut kv = server.keyvalue().await;
    for (writer, handle) in writers.into_iter().enumerate() {
        let count = handle.await.expect("a writer failed");
        assert!(count > 0, "writer {writer} wrote nothing");
        for n in 0..count {
            let key = format!("x{writer}-{n}");
            let reply =
                kv.get(GetRequest { key: key.clone(), ..Default::default() }).await.unwrap().into_inner();
            assert!(reply.found, "{key} was lost across the exclusive handovers");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_plugin_whose_new_instance_cannot_start_gets_its_old_version_back_with_its_state() {
    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_fixture_exclusive"), b"");
    let config = |lock: &Path| {
        format!(
            "[plugins.exclusive]\npath = \"{}\"\n\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n\
             [namespaces.slots.store]\nplugin = \"exclusive\"\nconfig = {{ lock_file = \"{}\" }}\n",
            plugins.path().display(),
            lock.display()
        )
    };
    let lock = plugins.dir().join("store.lock");
    let server = Server::start_with(&config(&lock), &["--no-watch"]);
    server.keyvalue().await.set(set("kept", "yes")).await.unwrap();
    // The new instance's lock file cannot be created: it fails after the old one is down.
    std::fs::write(server.config_path(), config(&plugins.dir().join("missing/dir/store.lock"))).unwrap();
    let reply = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
    let outcome = reply.outcome.unwrap();
    assert!(!outcome.ok, "{}", outcome.message);
    assert!(
        outcome.message.contains("the previous version was started again in its place"),
        "{}",
        outcome.message
    );
    assert_eq!(get(&server, "kept").await.as_deref(), Some(&b"yes"[..]), "its state came back");
    server.keyvalue().await.set(set("after", "ok")).await.expect("and it takes writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_after_an_exclusive_handover_starts_every_stopped_namespace_again() {
    let plugins = PluginDir::new();
    plugins.publish(&plugin_library("prism_fixture_exclusive"), b"");
    let namespace = |name: &str, lock: &Path| {
        format!(
            "[[namespaces]]\nname = \"{name}\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"exclusive\"\n\
             config = {{ lock_file = \"{}\" }}\n\n",
            lock.display()
        )
    };
    let config = |a: &Path, b: &Path| {
        format!(
            "[plugins.exclusive]\npath = \"{}\"\n\n{}{}",
            plugins.path().display(),
            namespace("a", a),
            namespace("b", b)
        )
    };
    let dir = plugins.dir();
    let server = Server::start_with(&config(&dir.join("a.lock"), &dir.join("b.lock")), &["--no-watch"]);
    let mut kv = server.keyvalue().await;
    for name in ["a", "b"] {
        let write = SetRequest { namespace: name.into(), ..set("kept", name) };
        kv.set(write).await.unwrap_or_else(|status| panic!("Set in '{name}': {status:?}"));
    }
    // "a" is handed over (its old instance stops, a new one starts), then "b"'s new
    // instance cannot create its lock file: the reload is refused after "a" moved.
    let refused = config(&dir.join("a2.lock"), &dir.join("missing/dir/b.lock"));
    std::fs::write(server.config_path(), refused).unwrap();
    let outcome = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner().outcome.unwrap();
    assert!(
        !outcome.ok,
        "a reload whose second exclusive namespace cannot start is refused: {}",
        outcome.message
    );
    assert!(outcome.message.contains("started again"), "{}", outcome.message);
    for name in ["a", "b"] {
        let read = GetRequest { namespace: name.into(), key: "kept".into(), ..Default::default() };
        let reply = kv
            .get(read)
            .await
            .unwrap_or_else(|status| panic!("Get in '{name}' after the refusal: {status:?}"));
        assert_eq!(reply.into_inner().value.as_ref(), name.as_bytes(), "'{name}' serves its state again");
        // A shut-down instance of the fixture refuses writes: this one is running.
        let write = SetRequest { namespace: name.into(), ..set("after", "ok") };
        kv.set(write).await.unwrap_or_else(|status| panic!("Set in '{name}' after the refusal: {status:?}"));
    }
}

/// The `prism plugin-host` processes `parent` runs now.
fn plugin_processes(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent pid is the second field after the parenthesised command name.
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent.to_string().as_str())
            && String::from_utf8_lossy(&cmdline).contains("plugin-host")
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_stops_the_instances_it_had_started() {
    let base = r#"
[plugins.memstore]
path = "{memstore}"

[plugins.isolated]
path = "{memstore}"
isolation = "process"

[plugins.panicking]
path = "{panicking}"

[[namespaces]]
name = "kept"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;
    let server = Server::start_with(base, &["--no-watch"]);
    assert_eq!(plugin_processes(server.pid()), Vec::<u32>::new(), "nothing runs isolated yet");
    // "a_started" is built (a plugin process starts), then "b_hung" cannot start.
    let added = "\n[[namespaces]]\nname = \"a_started\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"isolated\" }\n\
                 \n[[namespaces]]\nname = \"b_hung\"\npattern = \"keyvalue\"\n\
                 slots.store = { plugin = \"panicking\", config = { hang_health = true } }\n";
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(server.config_path(), format!("{config}{added}")).unwrap();
    let outcome = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner().outcome.unwrap();
    assert!(!outcome.ok, "a namespace whose health check hangs refuses the reload: {}", outcome.message);
    assert!(outcome.message.contains("b_hung"), "the refusal names the namespace: {}", outcome.message);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plugin_processes(server.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the refused reload left plugin processes running: {:?}",
            plugin_processes(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unknown = GetRequest { namespace: "a_started".into(), key: "k".into(), ..Default::default() };
    assert_eq!(server.keyvalue().await.get(unknown).await.unwrap_err().code(), Code::NotFound);
}
