//! Secrets in plugin configs come from `${env:…}` / `${file:…}` and are never shown:
//! not by `prism validate`, `prism status`, the server's logs (at debug level) or the
//! errors a failing backend produces.

use prism_acceptance::harness::{self, plugin_library, prism_binary, run_prism, Backend, Server};
use prism_api::*;

fn unique_secret() -> String {
    format!("pw-{}-{}", std::process::id(), plugin_abi::unix_millis())
}

#[tokio::test]
async fn a_password_from_a_file_reaches_the_plugin_and_is_never_shown() {
    if !harness::backends_available(&[Backend::Postgres]) {
        return;
    }
    let secret = unique_secret();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    // Trust authentication ignores the password, so the value can be anything; that the
    // namespace serves proves the reference was replaced (a literal "${file:…}" is not a
    // valid URL).
    let config = format!(
        r#"
[plugins.postgres]
path = "{{postgres}}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "postgres", config = {{ url = "postgres://postgres:${{file:{}}}@127.0.0.1:5432/test", table = "secrets_e2e" }} }}
"#,
        password_file.display()
    );
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(&config_path, prism_acceptance::harness::with_plugin_paths(&config)).unwrap();

    let (code, stdout, stderr) = run_prism(&["validate", config_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret), "validate showed the secret");

    let server = Server::start_with_env(&config, &[], &[("PRISM_LOG", "debug")]);
    let mut kv = server.keyvalue().await;
    kv.set(SetRequest { key: "k".into(), value: b"v".to_vec().into(), ..Default::default() }).await.unwrap();
    let got = kv.get(GetRequest { key: "k".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"v");

    let (code, status_out, status_err) = run_prism(&["status", "--server", &server.url()]);
    assert_eq!(code, 0, "{status_err}");
    for (what, text) in [("status", status_out + &status_err), ("the server log", server.stderr())] {
        assert!(!text.contains(&secret), "{what} showed the secret:\n{text}");
    }
}

#[test]
fn a_backend_that_refuses_shows_its_error_without_the_secret() {
    let secret = unique_secret();
    let dir = tempfile::tempdir().unwrap();
    // Port 1 refuses connections: the redis plugin fails to start and says why.
    let config = format!(
        r#"
[plugins.redis]
path = "{}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "redis", config = {{ url = "redis://:${{env:PRISM_TEST_REDIS_PASSWORD}}@127.0.0.1:1/0" }} }}
"#,
        plugin_library("prism_redis").display()
    );
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = std::process::Command::new(prism_binary())
        .args(["serve", "--no-watch", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .env("PRISM_TEST_REDIS_PASSWORD", &secret)
        .env("PRISM_LOG", "debug")
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a redis on port 1 cannot serve:\n{shown}");
    assert!(shown.contains("127.0.0.1:1"), "the error should still say where it tried:\n{shown}");
    assert!(!shown.contains(&secret), "the secret was shown:\n{shown}");
}

#[tokio::test]
async fn a_plugin_that_echoes_its_config_has_the_secret_redacted_in_logs_and_errors() {
    let secret = unique_secret();
    let config = r#"
[plugins.careless]
path = "{panicking}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "careless", config = { echo = "db://app:${env:PRISM_TEST_ECHO_SECRET}@db.internal" } }
"#;
    let server = Server::start_with_env(config, &[], &[("PRISM_TEST_ECHO_SECRET", &secret)]);
    let mut kv = server.keyvalue().await;
    let error = kv.get(GetRequest { key: "echo".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert_eq!(error.message(), "cannot reach db://app:[redacted]@db.internal");
    let log = server.stderr();
    assert!(log.contains("connecting to db://app:[redacted]@db.internal"), "{log}");
    assert!(!log.contains(&secret), "the log showed the secret:\n{log}");
}

#[test]
fn an_unset_variable_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[plugins.memstore]
path = "{}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = {{ plugin = "memstore", config = {{ note = "${{env:PRISM_TEST_NEVER_SET}}" }} }}
"#,
        plugin_library("prism_memstore").display()
    );
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(&config_path, config).unwrap();
    let (code, _, stderr) = run_prism(&["validate", config_path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("namespaces[0].slots.store.config.note")
            && stderr.contains("PRISM_TEST_NEVER_SET is not set"),
        "{stderr}"
    );
}

/// The ways a secret can be shown: raw, quoted by serde/Rust, in a JSON string, and a
/// JSON string of that quoted form (a JSON log line holding an error message).
fn shown_forms(secret: &str) -> Vec<String> {
    let unquoted = |quoted: String| quoted[1..quoted.len() - 1].to_owned();
    let debug = unquoted(format!("{secret:?}"));
    let json = |text: &str| unquoted(serde_json::to_string(text).unwrap());
    vec![secret.to_owned(), debug.clone(), json(secret), json(&debug)]
}

fn assert_hidden(what: &str, text: &str, secret: &str) {
    for form in shown_forms(secret) {
        assert!(!text.contains(&form), "{what} shows the secret as {form:?}:\n{text}");
    }
}

/// A secret made of what escaping changes: quotes, backslashes, a newline, non-ASCII, `%`.
#[tokio::test]
async fn a_secret_with_quotes_backslashes_and_newlines_is_hidden_in_every_channel() {
    let secret = format!("q\"uo\\te\nné%41-{}", unique_secret());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{secret}\n")).unwrap();
    let base = r#"
[admin]
listen = "127.0.0.1:0"

[plugins.panicking]
path = "{panicking}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
"#;
    let good = format!("{base}slots.store = {{ plugin = \"panicking\" }}\n");
    // hang_health takes a boolean: the plugin refuses the string, and serde quotes it.
    let pw = dir.path().join("pw");
    let bad = format!(
        "{base}slots.store = {{ plugin = \"panicking\", config = {{ hang_health = \"${{file:{}}}\" }} }}\n",
        pw.display()
    );

    let bad_path = dir.path().join("bad.toml");
    std::fs::write(&bad_path, harness::with_plugin_paths(&bad)).unwrap();
    let (code, stdout, stderr) = run_prism(&["validate", bad_path.to_str().unwrap()]);
    assert_eq!(code, 2, "validate refuses the config: {stdout}{stderr}");
    // The error names the key and the reference the value came from, never the value.
    let named = format!("hang_health: invalid type: string \"${{file:{}}}\"", pw.display());
    assert!(stderr.contains(&named), "expected {named:?} in: {stdout}{stderr}");
    assert_hidden("prism validate", &format!("{stdout}{stderr}"), &secret);
    let refused = std::process::Command::new(prism_binary())
        .args(["serve", "--no-watch", "--listen", "127.0.0.1:0", "--config"])
        .arg(&bad_path)
        .env("PRISM_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert_hidden("a refused prism serve", &String::from_utf8_lossy(&refused.stderr), &secret);

    for log_format in ["text", "json"] {
        let server = Server::start_with_env(&good, &["--log-format", log_format], &[("PRISM_LOG", "debug")]);
        std::fs::write(server.config_path(), harness::with_plugin_paths(&bad)).unwrap();
        let reload = server.admin().await.reload(ReloadRequest {}).await.unwrap().into_inner();
        let outcome = reload.outcome.unwrap();
        assert!(!outcome.ok && outcome.message.contains("hang_health"), "{}", outcome.message);
        assert_hidden("AdminService.Reload", &outcome.message, &secret);
        let status = server.admin().await.get_reload_status(GetReloadStatusRequest {}).await.unwrap();
        assert_hidden("AdminService.GetReloadStatus", &format!("{:?}", status.into_inner()), &secret);
        let (_, out, err) = run_prism(&["status", "--server", &server.url()]);
        assert_hidden("prism status", &format!("{out}{err}"), &secret);
        let admin = server.admin_address.clone().unwrap();
        let (_, console) = super::observe::http_get(&admin, "/api/overview", &[]).await;
        assert!(console.contains("hang_health"), "the console shows the refused reload: {console}");
        assert_hidden("the console's JSON", &console, &secret);
        assert_hidden(&format!("the {log_format} log"), &server.stderr(), &secret);
    }
}
