//! `cargo xtask dist`: the gateway, the load tool and the plugins as one `.tar.gz`.

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, run, workspace_root};

/// `cargo xtask dist`: a release (or `--debug`) build packaged as a `.tar.gz` with
/// `bin/`, `plugins/`, a `plugins.toml` whose paths work from the unpacked directory,
/// README, LICENSE and SHA256SUMS.
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
    for sub in ["bin", "plugins"] {
        std::fs::create_dir_all(stage.join(sub)).map_err(|e| e.to_string())?;
    }
    let copy = |from: PathBuf, to: PathBuf| -> Result<(), String> {
        std::fs::copy(&from, &to).map(drop).map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    for binary in ["prism", "prism-load"] {
        copy(profile.join(binary), stage.join("bin").join(binary))?;
    }
    let plugins = ["memstore", "redis", "postgres", "nats", "kafka"];
    for plugin in plugins {
        let file = format!("libprism_{plugin}.so");
        copy(profile.join(&file), stage.join("plugins").join(&file))?;
    }
    let root = workspace_root();
    copy(root.join("README.md"), stage.join("README.md"))?;
    copy(root.join("LICENSE"), stage.join("LICENSE"))?;
    let config = std::fs::read_to_string(root.join("plugins.toml")).map_err(|e| e.to_string())?;
    let config = config.replace("target/debug/libprism_memstore.so", "plugins/libprism_memstore.so").replace(
        "# Build the plugin first (`cargo build --workspace`, or just use `cargo xtask serve`).\n",
        "",
    );
    std::fs::write(stage.join("plugins.toml"), config).map_err(|e| e.to_string())?;
    let mut sums = String::new();
    let mut files: Vec<String> = ["bin/prism", "bin/prism-load", "plugins.toml", "README.md", "LICENSE"]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
    let archive = out.join(format!("{name}.tar.gz"));
    let mut tar = Command::new("tar");
    // A debug package is for tests: its unstripped binaries compress slowly at gzip's default.
    let gzip = if debug { "gzip -1" } else { "gzip -9" };
    tar.arg("--use-compress-program").arg(gzip).arg("-cf").arg(&archive).arg("-C").arg(&out).arg(&name);
    run(tar)?;
    std::fs::remove_dir_all(&stage).map_err(|e| e.to_string())?;
    println!("{}", archive.display());
    Ok(())
}
