//! Text output of the `prism` subcommands that print rather than serve.

use std::fmt::Write as _;

use plugin_abi::Metadata;

use crate::patterns::{interface_names, PATTERNS};
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
    if metadata.exclusive {
        let _ = writeln!(
            out,
            "  exclusive:         yes (instances never run side by side; a reload drains first)"
        );
    }
    match &metadata.config_keys {
        None => {
            let _ = writeln!(out, "  config keys:       not described (built against plugin-abi 1.0)");
        }
        Some(keys) if keys.is_empty() => {
            let _ = writeln!(out, "  config keys:       none described");
        }
        Some(keys) => {
            let _ = writeln!(out, "  config keys:");
            let width = keys.iter().map(|key| key.name.len()).max().unwrap_or(0);
            for key in keys {
                let _ = writeln!(out, "    {:width$}  {}  {}", key.name, key_summary(key), key.doc);
            }
        }
    }
    out
}

/// `string, required` or `integer, default 16`.
fn key_summary(key: &plugin_abi::ConfigKey) -> String {
    match (&key.default, key.required) {
        (_, true) => format!("{}, required", key.type_name),
        (Some(default), false) => format!("{}, default {default}", key.type_name),
        (None, false) => format!("{}, optional", key.type_name),
    }
}

/// Every pattern with its slots and their interface requirements (`prism patterns`).
pub fn render_patterns() -> String {
    let mut out = String::new();
    for pattern in PATTERNS {
        let _ = writeln!(out, "{}", pattern.name);
        let _ = writeln!(out, "  {}", pattern.description);
        for slot in pattern.slots {
            write_slot(&mut out, slot);
        }
        out.push('\n');
    }
    out
}

/// A slot's name and interface requirements, as both pattern listings print them.
fn write_slot(out: &mut String, slot: &crate::patterns::Slot) {
    let kind = if slot.optional { "optional slot" } else { "slot" };
    let _ = writeln!(out, "  {kind} {}:", slot.name);
    let _ = writeln!(out, "    requires: {}", interface_names(slot.required, ", "));
    if !slot.optional_interfaces.is_empty() {
        let _ = writeln!(out, "    uses if present: {}", interface_names(slot.optional_interfaces, ", "));
    }
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

/// `prism claim-check sweep`: one line per namespace, then what to do next.
pub fn render_sweep(reply: &crate::api::SweepClaimChecksResponse) -> String {
    let mut out = String::new();
    if reply.namespaces.is_empty() {
        out.push_str("no namespace binds a claim_check slot: nothing to sweep\n");
    }
    for swept in &reply.namespaces {
        let found = format!(
            "{} of {} objects unreferenced ({} bytes)",
            swept.unreferenced, swept.listed, swept.unreferenced_bytes
        );
        let done = match reply.applied {
            true => format!(", {} deleted ({} bytes)", swept.reclaimed, swept.reclaimed_bytes),
            false => String::new(),
        };
        out.push_str(&format!("{} ({}): {found}{done}\n", swept.namespace, swept.method));
        if !swept.complete {
            out.push_str("  more old objects than one sweep considers: run it again\n");
        }
        if !swept.skipped.is_empty() {
            out.push_str(&format!("  not swept: {}\n", swept.skipped));
        }
        if !swept.error.is_empty() {
            out.push_str(&format!("  error: {}\n", swept.error));
        }
    }
    if !reply.applied && reply.namespaces.iter().any(|swept| swept.unreferenced > 0) {
        out.push_str("dry run: nothing was deleted; run again with --apply to delete them\n");
    }
    out
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
        if plugin.isolation == "process" {
            out.push_str("    isolation: process\n");
        }
        for process in &plugin.processes {
            let pid = if process.pid == 0 { String::new() } else { format!(" pid {}", process.pid) };
            let memory = if process.rss_bytes == 0 {
                String::new()
            } else {
                format!(", {:.1} MiB resident", process.rss_bytes as f64 / (1024.0 * 1024.0))
            };
            let sandbox = if process.sandbox.is_empty() {
                String::new()
            } else {
                format!(", sandbox: {}", process.sandbox)
            };
            out.push_str(&format!(
                "    process {}/{}: {}{pid}, {} restarts{memory}{sandbox}{}\n",
                process.namespace,
                process.slot,
                process.state.replace('_', " "),
                process.restarts,
                if process.message.is_empty() { String::new() } else { format!(": {}", process.message) }
            ));
        }
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

/// A plugin the registry commands consider: from the config (by its `[plugins.NAME]`) or
/// a library file given on the command line.
pub struct Candidate {
    pub name: String,
    pub path: String,
    pub metadata: Metadata,
}

fn missing(required: &[plugin_abi::Interface], candidate: &Candidate) -> Vec<&'static str> {
    required
        .iter()
        .filter(|needed| !candidate.metadata.implements(**needed))
        .map(|needed| needed.name())
        .collect()
}

/// `prism patterns NAME`: the pattern's slots, and which candidates fit each.
pub fn render_pattern(pattern: &crate::patterns::Pattern, candidates: &[Candidate]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", pattern.name);
    let _ = writeln!(out, "  {}", pattern.description);
    for slot in pattern.slots {
        write_slot(&mut out, slot);
        if candidates.is_empty() {
            continue;
        }
        let (fit, unfit): (Vec<&Candidate>, Vec<&Candidate>) =
            candidates.iter().partition(|c| missing(slot.required, c).is_empty());
        let fits: Vec<String> = fit
            .iter()
            .map(|c| {
                let extras: Vec<&str> = slot
                    .optional_interfaces
                    .iter()
                    .filter(|i| c.metadata.implements(**i))
                    .map(|i| i.name())
                    .collect();
                if extras.is_empty() {
                    c.name.clone()
                } else {
                    format!("{} (+ {})", c.name, extras.join(", "))
                }
            })
            .collect();
        let _ = writeln!(out, "    fits: {}", if fits.is_empty() { "none".into() } else { fits.join(", ") });
        for candidate in unfit {
            let _ = writeln!(
                out,
                "    does not fit: {} (lacks {})",
                candidate.name,
                missing(slot.required, candidate).join(", ")
            );
        }
    }
    out
}

/// `prism plugins find`: the candidates that implement every one of `interfaces`.
pub fn render_find(interfaces: &[String], candidates: &[Candidate]) -> String {
    let mut out = String::new();
    // The CLI checked the names; an unknown one matches no plugin.
    let needed: Vec<plugin_abi::Interface> =
        interfaces.iter().filter_map(|name| plugin_abi::Interface::from_name(name)).collect();
    let found: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| needed.len() == interfaces.len() && missing(&needed, c).is_empty())
        .collect();
    if found.is_empty() {
        let _ = writeln!(out, "no plugin implements {}", interfaces.join(" + "));
    }
    for candidate in found {
        let _ = writeln!(out, "{} {}  {}", candidate.name, candidate.metadata.version, candidate.path);
    }
    out
}

/// `prism generate config`: a `plugins.toml` fragment binding `slots` (slot → candidate)
/// for a namespace, or the reasons the combination does not fit.
pub fn generate_config(
    namespace: &str,
    pattern: &crate::patterns::Pattern,
    slots: &[(String, &Candidate)],
) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    for (slot_name, candidate) in slots {
        match pattern.slot(slot_name) {
            None => {
                let known: Vec<&str> = pattern.slots.iter().map(|s| s.name).collect();
                problems.push(format!(
                    "pattern '{}' has no slot '{slot_name}' (its slots: {})",
                    pattern.name,
                    known.join(", ")
                ));
            }
            Some(slot) => {
                let lacking = missing(slot.required, candidate);
                if !lacking.is_empty() {
                    problems.push(format!(
                        "slot '{slot_name}' needs {}; plugin '{}' lacks {}",
                        interface_names(slot.required, " + "),
                        candidate.name,
                        lacking.join(", ")
                    ));
                }
            }
        }
    }
    for slot in pattern.slots.iter().filter(|s| !s.optional) {
        if !slots.iter().any(|(name, _)| name == slot.name) {
            problems.push(format!(
                "slot '{}' is required: add --slot {}=PLUGIN (a plugin with {})",
                slot.name,
                slot.name,
                interface_names(slot.required, " + ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut out = String::new();
    let mut declared: Vec<&str> = Vec::new();
    for (_, candidate) in slots {
        if declared.contains(&candidate.name.as_str()) {
            continue;
        }
        declared.push(&candidate.name);
        let _ = writeln!(out, "[plugins.{}]\npath = \"{}\"\n", candidate.name, candidate.path);
    }
    let _ = writeln!(out, "[[namespaces]]\nname = \"{namespace}\"\npattern = \"{}\"", pattern.name);
    for (slot, candidate) in slots {
        let _ = writeln!(out, "[namespaces.slots.{slot}]\nplugin = \"{}\"", candidate.name);
        match &candidate.metadata.config_keys {
            Some(keys) if !keys.is_empty() => {
                // Every key, commented out at its default: uncomment what you change.
                let _ = writeln!(out, "[namespaces.slots.{slot}.config]");
                for key in keys {
                    let value = key.default.clone().unwrap_or_else(|| "…".to_owned());
                    let note = match (key.doc.as_str(), key.required) {
                        ("", false) => String::new(),
                        ("", true) => "  # required".to_owned(),
                        (doc, false) => format!("  # {doc}"),
                        (doc, true) => format!("  # required: {doc}"),
                    };
                    let _ = writeln!(out, "# {} = {value}{note}", key.name);
                }
            }
            _ => {
                let _ = writeln!(
                    out,
                    "# config = {{ … }}  # the plugin's settings: see `prism plugins {}`",
                    candidate.path
                );
            }
        }
    }
    Ok(out)
}

/// `prism auth new-api-key`: the key once, and the config entry holding only its hash.
pub fn render_new_api_key(name: &str, key: &str, sha256: &str) -> String {
    format!(
        "API key for '{name}' (shown once; give it to the service, which sends it as x-api-key):\n  {key}\n\n\
         Add to plugins.toml:\n[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{sha256}\"\n"
    )
}
