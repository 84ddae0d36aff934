//! Text output of the `prism` subcommands that print rather than serve.

use std::fmt::Write as _;

use plugin_abi::Metadata;

use crate::patterns::PATTERNS;
use crate::resolve::declared_interfaces;

/// A plugin's metadata table, as `prism plugins` prints it.
pub fn render_metadata(path: &str, metadata: &Metadata) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", metadata.name, metadata.version);
    let _ = writeln!(out, "  path:              {path}");
    let _ = writeln!(out, "  description:       {}", metadata.description);
    let _ = writeln!(out, "  connection format: {}", metadata.connection_format);
    let _ = writeln!(out, "  abi version:       {}", metadata.abi_version);
    let _ = writeln!(out, "  interfaces:        {}", declared_interfaces(metadata).join(", "));
    if !metadata.unknown_interfaces.is_empty() {
        let _ =
            writeln!(out, "  (unknown to this host, ignored: {})", metadata.unknown_interfaces.join(", "));
    }
    out
}

/// Every pattern with its slots and their interface requirements (`prism patterns`).
pub fn render_patterns() -> String {
    let mut out = String::new();
    for pattern in PATTERNS {
        let served = if pattern.served { "" } else { " [config only: API not served yet]" };
        let _ = writeln!(out, "{}{served}", pattern.name);
        let _ = writeln!(out, "  {}", pattern.description);
        for slot in pattern.slots {
            let kind = if slot.optional { "optional slot" } else { "slot" };
            let _ = writeln!(out, "  {kind} {}:", slot.name);
            let _ = writeln!(out, "    requires: {}", slot.required.join(", "));
            if !slot.optional_interfaces.is_empty() {
                let _ = writeln!(out, "    uses if present: {}", slot.optional_interfaces.join(", "));
            }
        }
        out.push('\n');
    }
    out
}

fn when(at_unix_ms: i64) -> String {
    let ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| (now.as_millis() as i64 - at_unix_ms).max(0) / 1000)
        .unwrap_or_default();
    format!("{ago} s ago")
}

/// `prism reload`: what changed, or why nothing did.
pub fn render_reload(outcome: &crate::api::ReloadOutcome) -> String {
    let verdict = if outcome.ok { "reloaded" } else { "refused (the running config keeps serving)" };
    format!("{verdict}: {}\n", outcome.message)
}

/// `prism status`: the running plugins and the last reloads.
pub fn render_status(status: &crate::api::GetReloadStatusResponse) -> String {
    let mut out = String::new();
    let watching = if status.watching { "watched for changes" } else { "not watched (--no-watch)" };
    out.push_str(&format!("config: {} ({watching})\n", status.config_path));
    match &status.config {
        Some(last) => out.push_str(&format!(
            "last reload: {} {}: {}\n",
            if last.ok { "ok" } else { "REFUSED" },
            when(last.at_unix_ms),
            last.message
        )),
        None => out.push_str("last reload: none since start\n"),
    }
    out.push_str(&format!("reloads: {}\nplugins:\n", status.reloads));
    for plugin in &status.plugins {
        let running = if plugin.sha256.is_empty() {
            "not running".to_owned()
        } else {
            format!("{} sha256 {}", plugin.version, plugin.sha256)
        };
        out.push_str(&format!("  {}: {running}\n    path: {}\n", plugin.name, plugin.path));
        if let Some(last) = &plugin.last {
            out.push_str(&format!(
                "    last load: {} {}: {}\n",
                if last.ok { "ok" } else { "FAILED" },
                when(last.at_unix_ms),
                last.message
            ));
        }
    }
    out.push_str(&format!(
        "libraries opened by this process: {} ({:.1} MiB, mapped until restart)\n",
        status.libraries_loaded,
        status.library_bytes as f64 / (1024.0 * 1024.0)
    ));
    out
}
