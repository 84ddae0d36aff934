//! `cargo xtask dist`: the package unpacks anywhere, its checksums hold, and the gateway
//! starts from the unpacked directory with the bundled config and answers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use prism_host::api::admin_service_client::AdminServiceClient;
use prism_host::api::key_value_service_client::KeyValueServiceClient;
use prism_host::api::{GetRequest, ListPluginsRequest, SetRequest};

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
        "plugins/libprism_memstore.so",
        "plugins.toml",
        "README.md",
        "LICENSE",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing from the package");
    }
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
    let plugins =
        AdminServiceClient::connect(url).await.unwrap().list_plugins(ListPluginsRequest {}).await.unwrap();
    let memstore = &plugins.into_inner().plugins[0];
    assert!(
        memstore.path.ends_with("plugins/libprism_memstore.so") && !memstore.path.contains("target/"),
        "the plugin comes from the package, not the build tree: {}",
        memstore.path
    );
    let _ = prism.kill();
    let _ = prism.wait();
}
