//! `cargo xtask dist`: the gateway, the load tool, the conformance runner and the plugins
//! as one `.tar.gz` of stripped files, their debug info in a second one, plus what a
//! plugin author reads and builds against: the docs, the `plugin-abi` source with its
//! generator, the protos, an example plugin and the acceptance suites' source.

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, run, workspace_root};

/// `cargo xtask dist`: a release (or `--debug`) build packaged as a `.tar.gz` with
/// `bin/` (prism, prism-load, prism-acceptance), `plugins/`, a `plugins.toml` whose paths
/// work from the unpacked directory, `docs/`, `plugin-abi/` (source), README, LICENSE and
/// SHA256SUMS; and `…-debuginfo.tar.gz` with each binary's split debug info.
pub fn dist(args: &[String]) -> Result<(), String> {
    let debug = args.iter().any(|a| a == "--debug");
    let out = match args.iter().position(|a| a == "--out") {
        Some(index) => PathBuf::from(args.get(index + 1).ok_or("--out needs a directory")?),
        None => workspace_root().join("target/dist"),
    };
    let mut build = cargo();
    build.args(["build", "--workspace"]);
    if !debug {
        build.arg("--release");
    }
    run(build)?;
    let profile = workspace_root().join(if debug { "target/debug" } else { "target/release" });
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("prism-{version}-{}-linux", std::env::consts::ARCH);
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    for sub in ["bin", "plugins", "debug"] {
        std::fs::create_dir_all(stage.join(sub)).map_err(|e| e.to_string())?;
    }
    let copy = |from: PathBuf, to: PathBuf| -> Result<(), String> {
        std::fs::copy(&from, &to).map(drop).map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    let binaries = ["prism", "prism-load", "prism-acceptance"];
    for binary in binaries {
        copy(profile.join(binary), stage.join("bin").join(binary))?;
        split_debug_info(&stage, &format!("bin/{binary}"))?;
    }
    let plugins = ["memstore", "sqlite", "files", "redis", "postgres", "nats", "kafka", "s3"];
    for plugin in plugins {
        let file = format!("libprism_{plugin}.so");
        copy(profile.join(&file), stage.join("plugins").join(&file))?;
        split_debug_info(&stage, &format!("plugins/{file}"))?;
    }
    let root = workspace_root();
    copy_tree(&root.join("docs"), &stage.join("docs"))?;
    // What a plugin author builds against and reads: plugin-abi with its generator, the
    // protos, an example plugin, and the suites' source at the paths the runner's
    // failure lines cite.
    copy_tree(&root.join("plugin-abi/src"), &stage.join("plugin-abi/src"))?;
    copy(root.join("plugin-abi/Cargo.toml"), stage.join("plugin-abi/Cargo.toml"))?;
    copy_tree(&root.join("plugin-abi/macros/src"), &stage.join("plugin-abi/macros/src"))?;
    copy(root.join("plugin-abi/macros/Cargo.toml"), stage.join("plugin-abi/macros/Cargo.toml"))?;
    copy_tree(&root.join("proto"), &stage.join("proto"))?;
    copy_tree(&root.join("tests/src/suites"), &stage.join("tests/src/suites"))?;
    example_plugin(&root, &stage)?;
    copy(root.join("ARCHITECTURE.md"), stage.join("ARCHITECTURE.md"))?;
    copy(root.join("README.md"), stage.join("README.md"))?;
    copy(root.join("LICENSE"), stage.join("LICENSE"))?;
    let config = std::fs::read_to_string(root.join("plugins.toml")).map_err(|e| e.to_string())?;
    let config = config
        .replace("target/debug/libprism_memstore.so", "plugins/libprism_memstore.so")
        .replace("target/debug/libprism_sqlite.so", "plugins/libprism_sqlite.so")
        .replace("target/debug/libprism_files.so", "plugins/libprism_files.so")
        .replace(
            "# Build the plugins first (`cargo build --workspace`, or just use `cargo xtask serve`).\n",
            "",
        );
    std::fs::write(stage.join("plugins.toml"), config).map_err(|e| e.to_string())?;
    let mut sums = String::new();
    let mut files: Vec<String> =
        ["plugins.toml", "README.md", "LICENSE"].iter().map(|s| s.to_string()).collect();
    files.extend(binaries.iter().map(|b| format!("bin/{b}")));
    files.extend(plugins.iter().map(|p| format!("plugins/libprism_{p}.so")));
    for file in &files {
        let mut sha = Command::new("sha256sum");
        sha.arg(file).current_dir(&stage);
        let output = sha.output().map_err(|e| format!("cannot run sha256sum: {e}"))?;
        if !output.status.success() {
            return Err(format!("sha256sum {file} failed"));
        }
        sums.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    std::fs::write(stage.join("SHA256SUMS"), sums).map_err(|e| e.to_string())?;
    // A debug package is for tests: gzip's default level would be slow for nothing.
    let gzip = if debug { "gzip -1" } else { "gzip -9" };
    let debug_archive = out.join(format!("{name}-debuginfo.tar.gz"));
    let mut tar = Command::new("tar");
    tar.arg("--use-compress-program")
        .arg(gzip)
        .arg("-cf")
        .arg(&debug_archive)
        .arg("-C")
        .arg(&stage)
        .arg("debug");
    run(tar)?;
    std::fs::remove_dir_all(stage.join("debug")).map_err(|e| e.to_string())?;
    let archive = out.join(format!("{name}.tar.gz"));
    let mut tar = Command::new("tar");
    tar.arg("--use-compress-program").arg(gzip).arg("-cf").arg(&archive).arg("-C").arg(&out).arg(&name);
    run(tar)?;
    std::fs::remove_dir_all(&stage).map_err(|e| e.to_string())?;
    println!("{}", archive.display());
    Ok(())
}

/// The memstore plugin's source as `examples/memstore/`, with a manifest that builds
/// on its own against the package's `plugin-abi/` (the workspace's lock file beside it,
/// so it resolves to the versions the release was tested with).
fn example_plugin(root: &std::path::Path, stage: &std::path::Path) -> Result<(), String> {
    let example = stage.join("examples/memstore");
    copy_tree(&root.join("plugins/memstore/src"), &example.join("src"))?;
    let manifest = format!(
        "# The memstore plugin, as an example to copy: it builds against this package's plugin-abi/.\n\
         [package]\nname = \"prism-memstore\"\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n\
         [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
         [dependencies]\nplugin-abi = {{ path = \"../../plugin-abi\" }}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\
         tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"sync\", \"time\", \"macros\"] }}\n\n\
         # Not part of any workspace around it.\n[workspace]\n",
        version = env!("CARGO_PKG_VERSION"),
    );
    std::fs::write(example.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::copy(root.join("Cargo.lock"), example.join("Cargo.lock")).map_err(|e| e.to_string())?;
    Ok(())
}

/// Moves `file`'s debug info to `debug/<file name>.debug` (linked back by a
/// .gnu_debuglink, so gdb and perf find it when both archives are unpacked side by side).
fn split_debug_info(stage: &std::path::Path, file: &str) -> Result<(), String> {
    let name = std::path::Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or(file);
    let debug_file = format!("debug/{name}.debug");
    let steps: [&[&str]; 3] = [
        &["objcopy", "--only-keep-debug", file, &debug_file],
        &["strip", "--strip-debug", "--strip-unneeded", file],
        &["objcopy", &format!("--add-gnu-debuglink={debug_file}"), file],
    ];
    for step in steps {
        let mut command = Command::new(step[0]);
        command.args(&step[1..]).current_dir(stage);
        let status = command.status().map_err(|e| format!("cannot run {} (binutils): {e}", step[0]))?;
        if !status.success() {
            return Err(format!("{} failed on {file}", step.join(" ")));
        }
    }
    Ok(())
}

/// Copies a directory tree of regular files.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}
