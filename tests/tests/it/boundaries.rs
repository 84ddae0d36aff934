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
    for dir in ["plugin-abi/src", "isolation/src", "xtask/src", "plugins"] {
        let found = violations(dir, &[], &["tonic", "prost"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

/// `cargo metadata` of the workspace's own packages.
fn workspace_metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    metadata
}

/// Each workspace package's manifest directory and the names of its normal and build
/// dependencies (dev-dependencies aside), from `cargo metadata`.
fn package_dependencies() -> Vec<(String, PathBuf, Vec<String>)> {
    let metadata = workspace_metadata();
    let mut packages = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|dependency| dependency["kind"].as_str() != Some("dev"))
            .map(|dependency| dependency["name"].as_str().expect("a dependency's name").to_owned())
            .collect();
        let name = package["name"].as_str().expect("name").to_owned();
        packages.push((name, manifest.parent().expect("a manifest's directory").to_path_buf(), dependencies));
    }
    packages
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let gateway_side = ["prism-host", "prism-api", "prism-isolation", "tonic", "prost"];
    let plugins = workspace().join("plugins");
    let mut problems = Vec::new();
    let mut plugins_seen = 0;
    for (name, dir, dependencies) in package_dependencies() {
        let forbidden: &[&str] = if dir.starts_with(&plugins) {
            plugins_seen += 1;
            &gateway_side
        } else {
            match name.as_str() {
                "plugin-abi" | "prism-isolation" => &gateway_side,
                "prism-acceptance" | "prism-load" => &["prism-host"],
                _ => &[],
            }
        };
        for dependency in dependencies.iter().filter(|dependency| forbidden.contains(&dependency.as_str())) {
            problems.push(format!("{name} depends on {dependency}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(plugins_seen >= 8, "found only {plugins_seen} plugins under plugins/");
}

/// Every target root of every workspace crate (from `cargo metadata`, so a new crate or
/// binary cannot be missed), but plugin-abi's and the test fixtures', which exist to do
/// unsafe things (crash, imitate another ABI).
fn crate_roots_that_must_forbid_unsafe() -> Vec<PathBuf> {
    let metadata = workspace_metadata();
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

/// The host's top-level modules, bottom to top. A module may import from its own level
/// and the levels below it, never from above, and the imports form no cycle; ARCHITECTURE.md
/// explains the levels.
const HOST_LEVELS: &[(&str, &[&str])] = &[
    ("leaf helpers", &["api", "secrets", "shared"]),
    ("domain modules", &["connections", "tls", "patterns", "filter", "auth", "quota", "observe", "loader"]),
    ("the config file, assembled from the domains' sections", &["config"]),
    ("namespaces resolved to loaded plugins", &["resolve"]),
    ("the gateway: routing, bound slots, admission", &["gateway"]),
    ("what changes or watches the gateway", &["reload", "health", "watch"]),
    ("the store layer: claim checks, idempotency, budgets, transaction ids", &["store"]),
    ("tower layers, gRPC services and the admin listener", &["layers", "service", "admin_http"]),
    ("server, CLI and commands", &["server", "cli", "commands", "main"]),
];

/// Each top-level host module and the top-level host modules its code names
/// (`crate::x…` and `crate::{x, …}`).
fn host_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = workspace().join("host/src");
    let mut imports: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (path, code) in sources(&root) {
        let relative = path.strip_prefix(&root).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let named = imports.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').collect(),
                None => vec![rest],
            };
            for head in heads {
                let name: String =
                    head.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    named.insert(name);
                }
            }
        }
    }
    imports
}

fn host_level(module: &str) -> Option<usize> {
    HOST_LEVELS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Whether `to` can be reached from `from` over `imports`.
fn reaches(
    imports: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut paths = vec![vec![from.to_owned()]];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = paths.pop() {
        let last = path.last().unwrap();
        for next in imports.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == to {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                paths.push(longer);
            }
        }
    }
    None
}

#[test]
fn host_modules_import_only_downwards_and_form_no_cycle() {
    let imports = host_imports();
    let mut problems = Vec::new();
    for (module, named) in &imports {
        let Some(level) = host_level(module) else {
            problems.push(format!(
                "host module `{module}` has no level: add it to HOST_LEVELS and ARCHITECTURE.md"
            ));
            continue;
        };
        for target in named {
            match host_level(target) {
                Some(target_level) if target_level > level => problems.push(format!(
                    "`{module}` ({}) imports `{target}` ({}), which is above it",
                    HOST_LEVELS[level].0, HOST_LEVELS[target_level].0
                )),
                // Not a module of the host: `isolation`, the re-exported crate below it.
                Some(_) | None => {}
            }
        }
    }
    for module in imports.keys() {
        if let Some(cycle) = reaches(&imports, module, module) {
            problems.push(format!("import cycle: {}", cycle.join(" -> ")));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(imports.len() > 20, "found only {:?}: is host/src where it was?", imports.keys());
}
