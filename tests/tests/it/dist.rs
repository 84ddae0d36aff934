//! `cargo xtask dist`: the package unpacks anywhere, its checksums hold, the gateway
//! starts from the unpacked directory with the bundled config and answers, its files are
//! stripped with their debug info in a second archive, and a plugin author has what they
//! need without a source tree: the docs, the plugin-abi source, and the conformance runner.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use prism_api::admin_service_client::AdminServiceClient;
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::{GetRequest, GetStreamRequest, ListPluginsRequest, SetRequest, SetStreamRequest};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace")
}

#[tokio::test]
async fn the_package_unpacks_verifies_and_serves() {
    let out = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(workspace())
        .args(["run", "-q", "-p", "xtask", "--", "dist", "--debug", "--out"])
        .arg(out.path())
        .output()
        .expect("run cargo xtask dist");
    assert!(built.status.success(), "dist failed: {}", String::from_utf8_lossy(&built.stderr));
    let archive = String::from_utf8_lossy(&built.stdout).lines().last().expect("the archive path").to_owned();
    assert!(archive.ends_with(".tar.gz"), "{archive}");

    let unpacked = tempfile::tempdir().unwrap();
    let status =
        Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(unpacked.path()).status().unwrap();
    assert!(status.success());
    let root = std::fs::read_dir(unpacked.path()).unwrap().next().unwrap().unwrap().path();
    for file in [
        "bin/prism",
        "bin/prism-load",
        "bin/prism-acceptance",
        "plugins/libprism_memstore.so",
        "plugins/libprism_sqlite.so",
        "plugins/libprism_files.so",
        "plugins/libprism_s3.so",
        "plugins.toml",
        "README.md",
        "LICENSE",
        "docs/CONFIG.md",
        "docs/PLUGIN_GUIDE.md",
        "docs/PLUGIN_ABI.md",
        "docs/SEMANTICS.md",
        "plugin-abi/Cargo.toml",
        "plugin-abi/src/lib.rs",
        "plugin-abi/src/ffi/mod.rs",
        "plugin-abi/macros/Cargo.toml",
        "plugin-abi/macros/src/lib.rs",
        "proto/prism/v1/keyvalue.proto",
        "examples/memstore/Cargo.toml",
        "examples/memstore/src/lib.rs",
        "tests/src/suites/keyvalue_basic.rs",
        "ARCHITECTURE.md",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing from the package");
    }
    let manifest = std::fs::read_to_string(root.join("plugin-abi/Cargo.toml")).unwrap();
    assert!(!manifest.contains(".workspace"), "plugin-abi builds on its own: {manifest}");
    // The example plugin builds from the package alone, against its plugin-abi.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let example = Command::new(cargo)
        .args(["check", "--offline", "--quiet", "--manifest-path"])
        .arg(root.join("examples/memstore/Cargo.toml"))
        .env("CARGO_TARGET_DIR", workspace().join("target/dist-example"))
        .output()
        .expect("run cargo check");
    assert!(
        example.status.success(),
        "the packaged example plugin does not build against the packaged plugin-abi:\n{}",
        String::from_utf8_lossy(&example.stderr)
    );

    // Stripped, with the debug info apart and linked back.
    let debug_archive = archive.replace(".tar.gz", "-debuginfo.tar.gz");
    assert!(Path::new(&debug_archive).is_file(), "{debug_archive} is missing");
    for file in ["bin/prism", "plugins/libprism_memstore.so"] {
        let sections = Command::new("readelf").arg("-S").arg(root.join(file)).output().unwrap();
        let sections = String::from_utf8_lossy(&sections.stdout);
        assert!(!sections.contains(".debug_info"), "{file} still carries debug info");
        assert!(sections.contains(".gnu_debuglink"), "{file} does not point at its debug file");
    }
    let listing = Command::new("tar").arg("-tzf").arg(&debug_archive).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("debug/libprism_memstore.so.debug"));
    let check =
        Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&root).output().unwrap();
    assert!(check.status.success(), "SHA256SUMS does not hold: {}", String::from_utf8_lossy(&check.stdout));

    let mut prism = Command::new(root.join("bin/prism"))
        .current_dir(&root)
        .args(["serve", "--config", "plugins.toml", "--listen", "127.0.0.1:0", "--no-watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(prism.stdout.take().unwrap()).lines();
    let address = lines
        .find_map(|line| line.ok()?.strip_prefix("prism: serving on ").map(str::to_owned))
        .expect("the packaged gateway starts");
    let url = format!("http://{address}");
    let mut kv = KeyValueServiceClient::connect(url.clone()).await.unwrap();
    let request = SetRequest { key: "k".into(), value: b"v".to_vec().into(), ..Default::default() };
    kv.set(request).await.unwrap();
    let reply = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(&reply.value[..], b"v");
    assert!(
        root.join("data/default.db").is_file(),
        "the default namespace keeps its data in the package's data/"
    );
    // A value larger than one message streams through the default claim check, which
    // keeps it as a file under data/objects/.
    let chunks = (0..3u8).map(|index| SetStreamRequest {
        key: if index == 0 { "big".into() } else { String::new() },
        chunk: vec![index; 1 << 20].into(),
        ..Default::default()
    });
    let stored = kv.set_stream(futures::stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(stored.size, 3 << 20);
    let mut streamed = kv
        .get_stream(GetStreamRequest { key: "big".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut read = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut streamed).await {
        read.extend_from_slice(&message.unwrap().chunk);
    }
    assert_eq!(read.len(), 3 << 20);
    assert!(read[(2 << 20)..].iter().all(|&byte| byte == 2), "the last MiB reads back as written");
    let objects = std::fs::read_dir(root.join("data/objects")).unwrap().count();
    assert_eq!(objects, 1, "the streamed value is one file in data/objects/");
    let plugins =
        AdminServiceClient::connect(url).await.unwrap().list_plugins(ListPluginsRequest {}).await.unwrap();
    let plugins = plugins.into_inner().plugins;
    assert_eq!(plugins.len(), 3, "memstore, sqlite and files");
    for plugin in &plugins {
        assert!(
            plugin.path.contains("plugins/libprism_") && !plugin.path.contains("target/"),
            "the plugin comes from the package, not the build tree: {}",
            plugin.path
        );
    }
    let _ = prism.kill();
    let _ = prism.wait();

    // The conformance runner proves a plugin with nothing but the package.
    let conformance = Command::new(root.join("bin/prism-acceptance"))
        .arg("plugins/libprism_memstore.so")
        .current_dir(&root)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&conformance.stdout);
    assert!(conformance.status.success(), "{report}{}", String::from_utf8_lossy(&conformance.stderr));
    let last = report.lines().last().unwrap_or_default();
    let passed: usize = last.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(last.ends_with("passed, 0 failed") && passed > 20, "{report}");

    // And in process isolation, hosted by the packaged prism next to it.
    let isolated = Command::new(root.join("bin/prism-acceptance"))
        .args(["plugins/libprism_memstore.so", "--isolation", "process", "--interface", "keyvalue_basic"])
        .current_dir(&root)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&isolated.stdout);
    assert!(isolated.status.success(), "{report}{}", String::from_utf8_lossy(&isolated.stderr));
    assert!(
        report.contains(", process)")
            && report.lines().last().unwrap_or_default().ends_with("passed, 0 failed"),
        "{report}"
    );
}
