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
fn the_host_knows_no_ffi_and_no_unsafe() {
    let found = violations("host/src", &[], &["abi_stable", "async_ffi", "unsafe"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn grpc_and_protobuf_stay_in_the_host_the_load_tool_and_the_tests() {
    for dir in ["plugin-abi/src", "xtask/src"] {
        let found = violations(dir, &[], &["tonic", "prost"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

#[test]
fn every_crate_but_plugin_abi_forbids_unsafe_code() {
    let mut roots = vec![
        "api/src/lib.rs".to_owned(),
        "host/src/lib.rs".to_owned(),
        "host/src/main.rs".to_owned(),
        "load/src/main.rs".to_owned(),
        "xtask/src/main.rs".to_owned(),
        "tests/src/lib.rs".to_owned(),
    ];
    for plugin in std::fs::read_dir(workspace().join("plugins")).unwrap() {
        let name = plugin.unwrap().file_name().into_string().unwrap();
        roots.push(format!("plugins/{name}/src/lib.rs"));
    }
    for root in roots {
        let text = std::fs::read_to_string(workspace().join(&root)).unwrap();
        assert!(text.contains("#![forbid(unsafe_code)]"), "{root} does not forbid unsafe code");
    }
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
