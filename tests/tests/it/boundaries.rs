//! The boundaries ARCHITECTURE.md states, checked against the source: which crates may
//! know abi_stable, async-ffi, gRPC/protobuf, and `unsafe`.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// Every `.rs` file under `dir`, with its code (line comments and doc comments removed).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code: Vec<&str> =
                    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect();
                found.push((path, code.join("\n")));
            }
        }
    }
    found
}

/// `word` as a whole identifier somewhere in `code`.
fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn violations(dir: &str, skip: &[&str], words: &[&str]) -> Vec<String> {
    let root = workspace().join(dir);
    let skip: Vec<PathBuf> = skip.iter().map(|s| root.join(s)).collect();
    let mut found = Vec::new();
    for (path, code) in sources(&root) {
        if skip.iter().any(|skip| path.starts_with(skip)) {
            continue;
        }
        for word in words {
            if mentions(&code, word) {
                found.push(format!("{} uses {word}", path.display()));
            }
        }
    }
    found
}

#[test]
fn only_plugin_abi_ffi_knows_abi_stable_async_ffi_and_unsafe() {
    let found = violations("plugin-abi/src", &["ffi", "macros.rs"], &["abi_stable", "async_ffi", "unsafe"]);
    assert!(found.is_empty(), "{found:#?}");
    let found = violations("plugin-abi/src", &["ffi"], &["abi_stable", "async_ffi"]);
    assert!(found.is_empty(), "{found:#?}");
    // The export macro's expansion needs `unsafe` to build abi_stable's header; its
    // source says so, and nothing else in macros.rs may.
    let macros = std::fs::read_to_string(workspace().join("plugin-abi/src/macros.rs")).unwrap();
    assert_eq!(macros.matches("unsafe {").count(), 1, "one unsafe block: the LibHeader constructor");
}

#[test]
fn plugins_see_only_plugin_abi() {
    for plugin in std::fs::read_dir(workspace().join("plugins")).unwrap() {
        let dir = plugin.unwrap().path();
        let dir = dir.strip_prefix(workspace()).unwrap().join("src");
        let found =
            violations(dir.to_str().unwrap(), &[], &["abi_stable", "async_ffi", "unsafe", "tonic", "prost"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

#[test]
fn the_host_and_its_plugin_processes_know_no_ffi_and_no_unsafe() {
    for dir in ["host/src", "isolation/src"] {
        let found = violations(dir, &[], &["abi_stable", "async_ffi", "unsafe"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

#[test]
fn grpc_and_protobuf_stay_in_the_host_the_load_tool_and_the_tests() {
    for dir in ["plugin-abi/src", "xtask/src"] {
        let found = violations(dir, &[], &["tonic", "prost"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

/// Every target root of every workspace crate (from `cargo metadata`, so a new crate or
/// binary cannot be missed), but plugin-abi's and the test fixtures', which exist to do
/// unsafe things (crash, imitate another ABI).
fn crate_roots_that_must_forbid_unsafe() -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let fixtures = workspace().join("tests/fixtures");
    let mut roots = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
        if package["name"] == "plugin-abi" || manifest.starts_with(&fixtures) {
            continue;
        }
        for target in package["targets"].as_array().expect("targets") {
            roots.push(PathBuf::from(target["src_path"].as_str().expect("src_path")));
        }
    }
    roots
}

#[test]
fn every_crate_but_plugin_abi_forbids_unsafe_code() {
    let roots = crate_roots_that_must_forbid_unsafe();
    assert!(roots.len() >= 15, "cargo metadata found only {} target roots: {roots:?}", roots.len());
    let lacking: Vec<String> = roots
        .iter()
        .filter(|root| !std::fs::read_to_string(root).unwrap().contains("#![forbid(unsafe_code)]"))
        .map(|root| root.strip_prefix(workspace()).unwrap_or(root).display().to_string())
        .collect();
    assert!(lacking.is_empty(), "these crate roots do not forbid unsafe code: {lacking:#?}");
}

/// The sqlite plugin links the system's shared libsqlite3 and carries no SQLite of its
/// own: two builds of the plugin run side by side during a reload, and two copies of
/// SQLite in one process would each keep their own table of POSIX locks on the file.
#[test]
fn the_sqlite_plugin_shares_the_system_sqlite_instead_of_bundling_one() {
    let library = prism_acceptance::harness::plugin_library("prism_sqlite");
    let dynamic =
        std::process::Command::new("readelf").arg("--dynamic").arg(&library).output().expect("run readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.lines().any(|line| line.contains("(NEEDED)") && line.contains("[libsqlite3.so")),
        "{} does not link the shared libsqlite3:\n{dynamic}",
        library.display()
    );
    let symbols = std::process::Command::new("readelf")
        .arg("--syms")
        .arg("--wide")
        .arg(&library)
        .output()
        .expect("run readelf");
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    let defined_sqlite: Vec<&str> = symbols
        .lines()
        .filter(|line| line.split_whitespace().last().is_some_and(|name| name.starts_with("sqlite3_")))
        .filter(|line| !line.contains(" UND "))
        .collect();
    assert!(defined_sqlite.is_empty(), "{} defines SQLite itself: {defined_sqlite:#?}", library.display());
}
