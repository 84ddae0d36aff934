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
