//! docs/SECURITY.md's walkthrough, run as written: certificates and a signed token made
//! with openssl, a gateway with TLS and JWT, an authorized `prism status`, and one
//! refused for want of credentials.

use prism_acceptance::harness::{free_port, plugin_library, prism_binary};

fn walkthrough_script() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md")).unwrap();
    let section = &doc[doc.find("## Walkthrough").expect("a walkthrough section")..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let end = start + section[start..].find("\n```").expect("the block ends");
    section[start..end].to_owned()
}

#[test]
fn the_security_walkthrough_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(walkthrough_script())
        .current_dir(dir.path())
        .env("PRISM", prism_binary())
        .env("MEMSTORE", plugin_library("prism_memstore"))
        .env("PORT", port.to_string())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = std::fs::read_to_string(dir.path().join("secure/server.log")).unwrap_or_default();
    assert!(output.status.success(), "the walkthrough failed:\n{stdout}\n{stderr}\nserver log:\n{log}");
    assert!(stdout.contains("memstore"), "alice's status shows the plugins:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: Unauthenticated: no credentials"),
        "the call without a token is refused:\n{stderr}"
    );
}
