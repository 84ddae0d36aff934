//! `prism probe-plugin`: the child side of the loader's probe. Everything it does runs
//! here first, so a library that crashes does so in this process, not the gateway.

use std::time::Duration;

use plugin_abi::host::Plugin;

use super::{invalid, CommandResult};

/// How long the probe gives one instance to start, answer health and shut down.
const PROBE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn probe_plugin(
    path: &std::path::Path,
    configs_on_stdin: bool,
    run_instance: bool,
    report: bool,
    sandbox: bool,
) -> CommandResult {
    let configs: Vec<String> = if configs_on_stdin {
        serde_json::from_reader(std::io::stdin())
            .map_err(|error| invalid(format!("the probe's configs: {error}")))?
    } else {
        Vec::new()
    };
    if sandbox {
        let grants = crate::isolation::sandbox::Grants { library: Some(path), configs: &configs };
        crate::isolation::sandbox::enter(&grants).map_err(invalid)?;
    }
    let plugin = Plugin::load(path).map_err(invalid)?;
    if report {
        // Each config's verdict goes in the report: a rejected one is the caller's to word.
        let config_errors = configs
            .iter()
            .map(|config| plugin.check_config(config).err().map(|error| error.message().to_owned()))
            .collect();
        let runnable: Vec<String> =
            configs.iter().filter(|config| plugin.check_config(config).is_ok()).cloned().collect();
        run_one_instance(&plugin, &runnable, run_instance)?;
        let report = crate::isolation::ProbeReport { metadata: plugin.metadata().clone(), config_errors };
        println!("{}", serde_json::to_string(&report).map_err(|e| invalid(e.to_string()))?);
        return Ok(());
    }
    for config in &configs {
        plugin
            .check_config(config)
            .map_err(|error| invalid(format!("config rejected: {}", error.message())))?;
    }
    run_one_instance(&plugin, &configs, run_instance)?;
    println!("{} {}", plugin.metadata().name, plugin.metadata().version);
    Ok(())
}

/// Creates, health-checks and shuts down one instance with the first config (unless the
/// plugin is exclusive: its running instance holds what a second one would need).
fn run_one_instance(plugin: &Plugin, configs: &[String], run_instance: bool) -> CommandResult {
    if let Some(config) = configs.first().filter(|_| run_instance && !plugin.metadata().exclusive) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| invalid(format!("cannot start the async runtime: {error}")))?;
        let lifecycle = async {
            let instance = plugin.create(config).await.map_err(|e| e.message().to_owned())?;
            instance.health().await;
            instance.shutdown().await;
            Ok::<(), String>(())
        };
        match runtime.block_on(async { tokio::time::timeout(PROBE_INSTANCE_TIMEOUT, lifecycle).await }) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(invalid(format!("creating an instance failed: {message}"))),
            // Slow to connect is not corrupt: the host finds out for itself.
            Err(_) => {}
        }
    }
    Ok(())
}
