//! The deployment files under deploy/ say what the gateway does: the ConfigMap's
//! plugins.toml validates against the plugins this build makes, and the Deployment's
//! probes and ports are the ones that config serves.

use prism_acceptance::harness::{run_prism_with_env, target_dir};

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `plugins.toml: |` block of the ConfigMap, unindented.
fn configmap_plugins_toml() -> String {
    let manifest = std::fs::read_to_string(workspace().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let mut lines =
        manifest.lines().skip_while(|line| !line.trim_start().starts_with("plugins.toml: |")).skip(1);
    let mut config = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        config.push_str(line.strip_prefix("    ").unwrap_or(line));
        config.push('\n');
    }
    assert!(config.contains("[[namespaces]]"), "no plugins.toml found in the ConfigMap");
    config
}

#[test]
fn the_configmap_config_validates_with_this_build_of_the_plugins() {
    let config =
        configmap_plugins_toml().replace("/opt/prism/plugins/", &format!("{}/", target_dir().display()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, config).unwrap();
    let env = [
        ("PRISM_POSTGRES_URL", "postgres://prism@postgres:5432/prism"),
        ("PRISM_NATS_URL", "nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222"),
        ("PRISM_REDIS_URL", "redis://redis:6379"),
    ];
    let (code, stdout, stderr) = run_prism_with_env(&["validate", path.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn the_deployment_probes_and_ports_match_the_config() {
    let config = configmap_plugins_toml();
    let deployment = std::fs::read_to_string(workspace().join("deploy/kubernetes/deployment.yaml")).unwrap();
    assert!(config.contains("listen = \"0.0.0.0:8980\"") && deployment.contains("grpc: { port: 8980 }"));
    assert!(
        config.contains("[admin]\nlisten = \"0.0.0.0:9464\"") && deployment.contains("containerPort: 9464")
    );
    assert!(
        deployment.contains("httpGet: { path: /healthz, port: admin }"),
        "liveness and startup on /healthz"
    );
    assert!(
        !deployment.contains("startupProbe:\n            httpGet: { path: /readyz"),
        "a startup probe on readiness would kill new pods while a backend is down"
    );
    // Namespaces on one NATS must not share subjects.
    let prefixes: Vec<&str> =
        config.lines().filter_map(|line| line.split("subject_prefix = ").nth(1)).collect();
    let distinct: std::collections::BTreeSet<&&str> = prefixes.iter().collect();
    assert_eq!(distinct.len(), prefixes.len(), "two namespaces share a subject_prefix: {prefixes:?}");
    // The pod is given longer than the preStop pause plus the server's own grace.
    let grace: u64 = config
        .lines()
        .find_map(|line| line.strip_prefix("shutdown_grace_ms = "))
        .and_then(|value| value.trim().parse().ok())
        .expect("shutdown_grace_ms is set");
    let termination: u64 = deployment
        .lines()
        .find_map(|line| line.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("terminationGracePeriodSeconds is set");
    assert!(termination * 1000 > 5000 + grace, "{termination} s is not more than 5 s + {grace} ms");
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 8980 9464") && dockerfile.contains("10001"));
}
