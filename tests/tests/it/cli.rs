//! The `prism` CLI: metadata tables, patterns and config errors, as operators see them.

use prism_acceptance::harness::{plugin_library, prism_binary, run_prism};

/// Replaces machine-specific paths so snapshots are stable.
fn redact(text: &str, paths: &[(&str, String)]) -> String {
    paths.iter().fold(text.to_owned(), |text, (label, path)| text.replace(path.as_str(), label))
}

#[test]
fn plugins_prints_the_metadata_table() {
    let memstore = plugin_library("prism_memstore").display().to_string();
    let (code, stdout, stderr) = run_prism(&["plugins", &memstore]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact(&stdout, &[("[memstore]", memstore)]));
}

#[test]
fn plugins_refuses_an_incompatible_library_with_exit_code_2() {
    let old = plugin_library("prism_fixture_incompatible_abi").display().to_string();
    let (code, stdout, stderr) = run_prism(&["plugins", &old]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    insta::assert_snapshot!(redact(&stderr, &[("[old-plugin]", old)]));
}

#[test]
fn patterns_lists_slots_and_interfaces() {
    let (code, stdout, _) = run_prism(&["patterns"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout);
}

/// Writes `config` to a temp plugins.toml and runs `prism validate` on it.
fn validate(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let config = prism_acceptance::harness::with_plugin_paths(config)
        .replace("{old}", &plugin_library("prism_fixture_incompatible_abi").display().to_string());
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = run_prism(&["validate", &path.display().to_string()]);
    let stderr = redact(
        &stderr,
        &[
            ("[config]", path.display().to_string()),
            ("[memstore]", plugin_library("prism_memstore").display().to_string()),
            ("[old-plugin]", plugin_library("prism_fixture_incompatible_abi").display().to_string()),
        ],
    );
    (code, stdout, stderr)
}

#[test]
fn the_default_config_validates() {
    let (code, stdout, stderr) =
        run_prism(&["validate", concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins.toml")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (3 plugins, 6 namespaces)"), "{stdout}");
}

#[test]
fn config_error_unknown_key() {
    let (code, _, stderr) = validate("[server]\nlisten = \"127.0.0.1:1\"\nmax_value_byte = 3\n");
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_jwt_settings() {
    let base = "[plugins.memstore]\npath = \"{memstore}\"\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\" }\n";
    let mut stderrs = String::new();
    for jwt in [
        "jwks_url = \"http://issuer.example/jwks.json\"\nissuer = \"i\"\naudience = \"a\"",
        "jwks_url = \"https://issuer.example/jwks.json\"\njwks_file = \"jwks.json\"\nissuer = \"i\"\naudience = \"a\"",
        "jwks_url = \"https://issuer.example/jwks.json\"\njwks_refresh_s = 1\nissuer = \"\"\naudience = \"a\"\nalgorithms = [\"HS256\", \"none\"]\nleeway_s = 86400",
        "jwks_file = \"/nonexistent/jwks.json\"\njwks_ca_file = \"ca.pem\"\nissuer = \"i\"\naudience = \"a\"",
    ] {
        let (code, _, stderr) = validate(&format!("[auth.jwt]\n{jwt}\n{base}"));
        assert_eq!(code, 2, "{stderr}");
        stderrs += &stderr;
        stderrs += "---\n";
    }
    insta::assert_snapshot!(stderrs);
}

#[test]
fn config_error_tracing_settings() {
    let base = "[plugins.memstore]\npath = \"{memstore}\"\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\" }\n";
    let (code, _, stderr) = validate(&format!(
        "[tracing]\notlp_endpoint = \"https://collector.example:4317\"\nsample_ratio = 1.5\nservice_name = \" \"\nexport_timeout_ms = 0\n{base}"
    ));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_process_isolation_settings() {
    let namespace = "[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\" }\n";
    let mut stderrs = String::new();
    for plugin in [
        "isolation = \"proces\"",
        "[plugins.memstore.process]\nmemory_limit_mb = 1024",
        "isolation = \"process\"\n[plugins.memstore.process]\nmemory_limit_mb = 16\nmax_open_files = 4\nrestart_window_s = 0\nheartbeat_timeout_ms = 10\nuser = \"no-such-user-prism\"",
        "isolation = \"process\"\n[plugins.memstore.process]\nmemory_limt_mb = 1024",
        "isolation = \"process\"\n[plugins.memstore.process]\nsandbox = \"false\"",
    ] {
        let (code, _, stderr) = validate(&format!("[plugins.memstore]\npath = \"{{memstore}}\"\n{plugin}\n{namespace}"));
        assert_eq!(code, 2, "{stderr}");
        stderrs += &stderr;
        stderrs += "---\n";
    }
    insta::assert_snapshot!(stderrs);
}

#[test]
fn a_process_isolated_plugin_validates_without_this_process_opening_it() {
    let (code, stdout, stderr) = validate(
        "[plugins.memstore]\npath = \"{memstore}\"\nisolation = \"process\"\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\", config = { max_keys = 10 } }\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (1 plugin, 1 namespace)"), "{stdout}");
    // The plugin's own config check still runs (in the probe child).
    let (code, _, stderr) = validate(
        "[plugins.memstore]\npath = \"{memstore}\"\nisolation = \"process\"\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\", config = { max_keyz = 10 } }\n",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("namespaces[0].slots.store.config") && stderr.contains("max_keyz"), "{stderr}");
}

#[test]
fn config_error_bad_value_type() {
    let (code, _, stderr) = validate("[server]\nlisten = \"not an address\"\n");
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_references_and_patterns() {
    let (code, _, stderr) = validate(
        r#"
[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "kv"

[[namespaces]]
name = "orders"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "redis"

[[namespaces]]
name = "orders"
pattern = "keyvalue"
[namespaces.slots.storage]
plugin = "memstore"
"#,
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_slot_plugin_lacks_a_required_interface() {
    let (code, _, stderr) = validate(
        r#"
[plugins.panicking]
path = "{panicking}"

[[namespaces]]
name = "lists"
pattern = "list"
[namespaces.slots.store]
plugin = "panicking"
"#,
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_plugin_rejects_its_slot_config() {
    let (code, _, stderr) = validate(
        r#"
[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
[namespaces.slots.store]
plugin = "memstore"
config = { max_key = 10 }
"#,
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_missing_plugin_file_and_incompatible_abi() {
    let (code, _, stderr) = validate(
        r#"
[plugins.gone]
path = "/nonexistent/libgone.so"

[plugins.old]
path = "{old}"
"#,
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr);
}

#[test]
fn config_error_sha256_pin_mismatch() {
    let (code, _, stderr) =
        validate(&format!("[plugins.memstore]\npath = \"{{memstore}}\"\nsha256 = \"{}\"\n", "0".repeat(64)));
    assert_eq!(code, 2);
    let stderr = stderr.lines().map(|line| {
        // The real hash changes with every build.
        match line.find("has SHA-256 ") {
            Some(at) => format!("{}has SHA-256 [hash]{}", &line[..at], &line[at + 12 + 64..]),
            None => line.to_owned(),
        }
    });
    insta::assert_snapshot!(stderr.collect::<Vec<_>>().join("\n"));
}

#[cfg(unix)]
#[test]
fn config_error_world_writable_plugin_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libcopy.so");
    std::fs::copy(plugin_library("prism_memstore"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, stderr) = validate(&format!("[plugins.copy]\npath = \"{}\"\n", copy.display()));
    assert_eq!(code, 2);
    assert!(stderr.contains("is writable by other users"), "{stderr}");
    assert!(stderr.contains("chmod o-w"), "{stderr}");
}

#[test]
fn serve_with_an_invalid_config_exits_2_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, "[[namespaces]]\nname = \"x\"\npattern = \"nope\"\n").unwrap();
    let (code, stdout, stderr) = run_prism(&["serve", "--config", &path.display().to_string()]);
    assert_eq!(code, 2);
    assert!(!stdout.contains("serving"), "{stdout}");
    assert!(stderr.contains("namespaces[0].pattern: unknown pattern 'nope'"), "{stderr}");
}

/// The workspace's built plugin libraries, as `(label, path)` pairs for `redact`.
fn libraries(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|name| (format!("[{name}]"), plugin_library(&format!("prism_{name}")).display().to_string()))
        .collect()
}

fn redact_libraries(text: &str, libraries: &[(String, String)]) -> String {
    libraries.iter().fold(text.to_owned(), |text, (label, path)| text.replace(path.as_str(), label))
}

#[test]
fn patterns_name_shows_which_plugins_fit_each_slot() {
    let libs = libraries(&["memstore", "redis", "postgres", "nats", "kafka"]);
    let mut args = vec!["patterns", "multicast-registry"];
    for (_, path) in &libs {
        args.extend(["--plugin", path.as_str()]);
    }
    let (code, stdout, stderr) = run_prism(&args);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact_libraries(&stdout, &libs));

    let (code, _, stderr) = run_prism(&["patterns", "multicast"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown pattern 'multicast'") && stderr.contains("multicast-registry"),
        "{stderr}"
    );
}

#[test]
fn plugins_find_lists_the_plugins_with_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["memstore", "redis", "postgres", "nats", "kafka"] {
        let library = plugin_library(&format!("prism_{name}"));
        std::fs::copy(&library, dir.path().join(library.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("not-a-plugin.so"), b"junk").unwrap();
    let shown = dir.path().display().to_string();
    let find = |interfaces: &[&str]| {
        let mut args = vec!["plugins", "find", "--dir", shown.as_str()];
        for interface in interfaces {
            args.extend(["--interface", interface]);
        }
        let (code, stdout, stderr) = run_prism(&args);
        assert_eq!(code, 0, "{stderr}");
        redact(&stdout, &[("[dir]", shown.clone())])
    };
    let output = [
        find(&["keyvalue_scan"]),
        find(&["pubsub_basic", "pubsub_persistent"]),
        find(&["stream_consumer_groups", "state_transfer"]),
        find(&["queue_dead_letter", "pubsub_basic"]),
    ]
    .join("--\n");
    insta::assert_snapshot!(output);
    let (code, _, stderr) =
        run_prism(&["plugins", "find", "--dir", &shown, "--interface", "keyvalue_teleport"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown interface 'keyvalue_teleport'"), "{stderr}");
}

#[test]
fn generate_config_prints_a_fragment_that_validates_and_refuses_misfits() {
    let libs = libraries(&["memstore", "nats", "postgres", "redis"]);
    let path = |name: &str| libs.iter().find(|(l, _)| l == &format!("[{name}]")).unwrap().1.clone();
    let slot = |slot: &str, name: &str| format!("{slot}={}", path(name));
    let (code, fragment, stderr) = run_prism(&[
        "generate",
        "config",
        "--pattern",
        "multicast-registry",
        "--namespace",
        "devices",
        "--slot",
        &slot("registry", "redis"),
        "--slot",
        &slot("messaging", "nats"),
        "--slot",
        &slot("durability", "postgres"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("generate_config_fits", redact_libraries(&fragment, &libs));
    // The fragment lists each plugin's config keys; it is a valid config once the
    // required ones (each plugin's url, in slot order) are uncommented and filled in.
    let filled =
        ["redis://127.0.0.1:6379", "nats://127.0.0.1:4222", "postgres://postgres@127.0.0.1:5432/test"]
            .iter()
            .fold(fragment.clone(), |text, url| text.replacen("# url = …", &format!("url = \"{url}\""), 1));
    assert!(!filled.contains("# url = …"), "three required urls: {filled}");
    let (code, _, stderr) = validate(&filled);
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = run_prism(&[
        "generate",
        "config",
        "--pattern",
        "multicast-registry",
        "--namespace",
        "devices",
        "--slot",
        &slot("registry", "nats"),
        "--slot",
        &slot("durability", "memstore"),
        "--slot",
        &slot("mailbox", "memstore"),
    ]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    insta::assert_snapshot!("generate_config_refuses", redact_libraries(&stderr, &libs));
}

#[test]
fn config_error_each_multicast_slot_lacking_an_interface_is_named_and_durability_is_optional() {
    let config = format!(
        r#"
[plugins.memstore]
path = "{{memstore}}"
[plugins.nats]
path = "{}"
[plugins.redis]
path = "{}"
[plugins.postgres]
path = "{}"

[[namespaces]]
name = "registry-without-scan"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "nats"
config = {{ url = "nats://127.0.0.1:4222" }}
[namespaces.slots.messaging]
plugin = "memstore"

[[namespaces]]
name = "messaging-without-pubsub"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "memstore"
[namespaces.slots.messaging]
plugin = "postgres"
config = {{ url = "postgres://postgres@127.0.0.1:5432/test" }}

[[namespaces]]
name = "durability-without-queues"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "memstore"
[namespaces.slots.messaging]
plugin = "memstore"
[namespaces.slots.durability]
plugin = "redis"
config = {{ url = "redis://127.0.0.1:6379" }}

[[namespaces]]
name = "fine-without-durability"
pattern = "multicast-registry"
[namespaces.slots.registry]
plugin = "memstore"
[namespaces.slots.messaging]
plugin = "memstore"
"#,
        plugin_library("prism_nats").display(),
        plugin_library("prism_redis").display(),
        plugin_library("prism_postgres").display()
    );
    let (code, _, stderr) = validate(&config);
    assert_eq!(code, 2);
    assert!(!stderr.contains("namespaces[3]"), "an optional slot left out is fine: {stderr}");
    insta::assert_snapshot!(redact_libraries(&stderr, &libraries(&["nats", "redis", "postgres"])));
}

/// `prism plugins PATH` must answer for a bad file at once, with exit code 2 and the
/// file named: no hang, no signal, nothing of it run in the CLI's process.
fn plugins_refuses(path: &std::path::Path, expect: &str) {
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run_prism(&["plugins", &path.display().to_string()]);
    assert_eq!(code, 2, "exit code 2, not a signal: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&path.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "answers at once");
}

#[cfg(unix)]
#[test]
fn plugins_refuses_fifos_devices_directories_and_endless_files_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libfifo.so");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    plugins_refuses(&fifo, "is a FIFO, socket or device, not a plugin library");
    let zero = dir.path().join("libzero.so");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    plugins_refuses(&zero, "is a FIFO, socket or device, not a plugin library");
    let directory = dir.path().join("libdir.so");
    std::fs::create_dir(&directory).unwrap();
    plugins_refuses(&directory, "is a directory, not a plugin library");
    // A sparse file past the size bound is refused before it is read or copied.
    let huge = dir.path().join("libhuge.so");
    std::fs::File::create(&huge).unwrap().set_len(4 * 1024 * 1024 * 1024).unwrap();
    plugins_refuses(&huge, "larger than any plugin library this host opens");
}

#[test]
fn plugins_on_a_truncated_library_exits_2_instead_of_dying_of_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("libtruncated.so");
    let whole = std::fs::read(plugin_library("prism_memstore")).unwrap();
    // Cut inside the segments the loader maps (the tail of a debug build is debug info).
    std::fs::write(&truncated, &whole[..300_000]).unwrap();
    plugins_refuses(&truncated, "crashed the probe process that opened it");
}

#[cfg(unix)]
#[test]
fn plugins_applies_the_permission_check_of_serve() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libcopy.so");
    std::fs::copy(plugin_library("prism_memstore"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    plugins_refuses(&copy, "is writable by other users");
}

#[test]
fn plugins_with_a_config_applies_its_pins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugins.toml");
    let memstore = plugin_library("prism_memstore").display().to_string();
    std::fs::write(
        &config,
        format!("[plugins.memstore]\npath = \"{memstore}\"\nsha256 = \"{}\"\n", "0".repeat(64)),
    )
    .unwrap();
    let (code, stdout, stderr) = run_prism(&["plugins", "--config", &config.display().to_string()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("but the config pins 0000"), "{stderr}");
}

#[test]
fn require_pins_refuses_a_plugin_without_one_naming_its_sha256_key() {
    let (code, _, stderr) =
        validate("[server]\nrequire_pins = true\n\n[plugins.memstore]\npath = \"{memstore}\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("plugins.memstore.sha256: [memstore] has no sha256 pin"), "{stderr}");
    assert!(stderr.contains("add sha256 = \""), "the fix carries the hash to pin: {stderr}");
}

#[test]
fn a_plugin_config_type_error_names_the_key() {
    let (code, _, stderr) = validate(
        "[plugins.memstore]\npath = \"{memstore}\"\n\n[[namespaces]]\nname = \"kv\"\npattern = \"keyvalue\"\nslots.store = { plugin = \"memstore\", config = { sweep_interval_ms = \"soon\" } }\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("rejected its config: sweep_interval_ms: invalid type: string \"soon\""),
        "{stderr}"
    );
}

#[test]
fn a_library_that_crashes_when_an_instance_starts_is_refused_by_the_probe_not_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let panicking = plugin_library("prism_fixture_panicking").display().to_string();
    std::fs::write(
        &path,
        format!(
            "[plugins.crashy]\npath = \"{panicking}\"\n\n[[namespaces]]\nname = \"kv\"\npattern = \"keyvalue\"\n\
             [namespaces.slots.store]\nplugin = \"crashy\"\nconfig = {{ abort_on_create = true }}\n"
        ),
    )
    .unwrap();
    let config = path.display().to_string();
    let (code, _, stderr) =
        run_prism(&["serve", "--config", &config, "--listen", "127.0.0.1:0", "--no-watch"]);
    assert_eq!(code, 2, "a clean refusal, not the gateway killed by SIGABRT: {stderr}");
    assert!(stderr.contains("crashed the probe process that opened it (killed by signal 6)"), "{stderr}");
    // `validate` never connects, so it does not start an instance, and passes.
    let (code, _, stderr) = run_prism(&["validate", &config]);
    assert_eq!(code, 0, "{stderr}");
}

/// What glibc's loader reports (`LD_DEBUG=files`) for a `prism` run with `args`, in its
/// own process only (not its children), and its exit code.
fn loader_lines_of_the_cli(args: &[&str]) -> (i32, Vec<String>, String) {
    let child = std::process::Command::new(prism_binary())
        .args(args)
        .env("LD_DEBUG", "files")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run prism");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let own =
        stderr.lines().filter(|line| line.trim_start().starts_with(&format!("{pid}:"))).map(str::to_owned);
    (output.status.code().unwrap_or(-1), own.collect(), stderr)
}

#[test]
fn prism_plugins_and_patterns_read_a_library_in_a_probe_child_never_in_the_cli() {
    let memstore = plugin_library("prism_memstore");
    let memstore = memstore.to_str().unwrap();
    for args in [vec!["plugins", memstore], vec!["patterns", "keyvalue", "--plugin", memstore]] {
        let (code, lines, stderr) = loader_lines_of_the_cli(&args);
        assert_eq!(code, 0, "prism {args:?}: {stderr}");
        assert!(!lines.is_empty(), "LD_DEBUG reports the CLI's own libraries: {stderr}");
        let opened: Vec<&String> =
            lines.iter().filter(|line| line.contains("dynamically loaded by")).collect();
        assert!(opened.is_empty(), "prism {args:?} opened a library in its own process: {opened:#?}");
    }
}
