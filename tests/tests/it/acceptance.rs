//! Every plugin runs the acceptance suite of every interface it declares, in process
//! and, where its row lists `process`, with every instance in a child process of its
//! own (`isolation = "process"`): the same library must keep the same promises.
//! Adding a backend is one `plugin_suites!` line.

use plugin_abi::Interface;
use prism_acceptance::{harness, run_suite, Target};

async fn prove(library: &str, config: &str, interface: Interface, isolation: &str) {
    let mut backends: Vec<harness::Backend> = harness::Backend::of_library(library).into_iter().collect();
    // The redis plugin's cluster row talks to the Redis Cluster, not the single Redis.
    if config.contains("cluster = true") {
        backends = vec![harness::Backend::RedisCluster];
    }
    if !harness::backends_available(&backends) {
        return;
    }
    let mut target = Target::load(&harness::plugin_library(library), config).expect("load plugin");
    if isolation == "process" {
        target = target.in_processes_of(&harness::prism_binary());
    }
    assert!(
        target.plugin.metadata().implements(interface),
        "{library} is expected to declare {interface} but does not"
    );
    let report = run_suite(&target, interface).await;
    assert!(!report.passed.is_empty() || !report.failed.is_empty(), "the suite ran no case");
    assert!(report.failed.is_empty(), "{library} broke {interface}: {:#?}", report.failed);
}

fn declared(library: &str) -> Vec<Interface> {
    let plugin = plugin_abi::host::Plugin::load(harness::plugin_library(library)).expect("load plugin");
    plugin.metadata().interfaces.clone()
}

macro_rules! suites_in {
    ($isolation:ident, $library:literal, $config:expr, [$($interface:ident => $variant:ident),* $(,)?]) => {
        mod $isolation {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $interface() {
                    prove($library, &$config, Interface::$variant, stringify!($isolation)).await;
                }
            )*
        }
    };
}

macro_rules! plugin_suites {
    ($module:ident: $library:literal, config = $config:expr, $interfaces:tt) => {
        plugin_suites!($module: $library, config = $config, isolation = [in_process], $interfaces);
    };
    ($module:ident: $library:literal, config = $config:expr, isolation = [$($isolation:ident),*], $interfaces:tt) => {
        mod $module {
            use super::*;

            $(suites_in!($isolation, $library, $config, $interfaces);)*

            plugin_suites!(@declared $library, $interfaces);
        }
    };
    (@declared $library:literal, [$($interface:ident => $variant:ident),* $(,)?]) => {
        /// Every declared interface has a suite in this table, so none goes unproven.
        #[test]
        fn every_declared_interface_is_proven() {
            let proven = vec![$(Interface::$variant),*];
            assert_eq!(declared($library), proven);
        }
    };
}

plugin_suites!(memstore: "prism_memstore", config = "", isolation = [in_process, process], [
    keyvalue_basic => KeyValueBasic,
    keyvalue_ttl => KeyValueTtl,
    keyvalue_scan => KeyValueScan,
    keyvalue_batch => KeyValueBatch,
    keyvalue_cas => KeyValueCas,
    list_basic => ListBasic,
    list_range => ListRange,
    pubsub_basic => PubSubBasic,
    pubsub_wildcards => PubSubWildcards,
    stream_basic => StreamBasic,
    stream_consumer_groups => StreamConsumerGroups,
    stream_replay => StreamReplay,
    stream_partitioning => StreamPartitioning,
    state_transfer => StateTransfer,
]);

plugin_suites!(redis: "prism_redis", config = "url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"prism-acceptance:\"", isolation = [in_process, process], [
    keyvalue_basic => KeyValueBasic,
    keyvalue_ttl => KeyValueTtl,
    keyvalue_scan => KeyValueScan,
    keyvalue_batch => KeyValueBatch,
    keyvalue_cas => KeyValueCas,
    list_basic => ListBasic,
    list_range => ListRange,
    pubsub_basic => PubSubBasic,
    pubsub_wildcards => PubSubWildcards,
]);

plugin_suites!(redis_cluster: "prism_redis",
    config = "url = \"redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003\"\ncluster = true\nkey_prefix = \"prism-acceptance:\"",
    [
        keyvalue_basic => KeyValueBasic,
        keyvalue_ttl => KeyValueTtl,
        keyvalue_scan => KeyValueScan,
        keyvalue_batch => KeyValueBatch,
        keyvalue_cas => KeyValueCas,
        list_basic => ListBasic,
        list_range => ListRange,
        pubsub_basic => PubSubBasic,
        pubsub_wildcards => PubSubWildcards,
    ]
);

plugin_suites!(postgres: "prism_postgres",
    config = "url = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"prism_acceptance_kv\"\nqueue_table = \"prism_acceptance_queue\"\nmax_deliveries = 3",
    isolation = [in_process, process],
    [
        keyvalue_basic => KeyValueBasic,
        keyvalue_ttl => KeyValueTtl,
        keyvalue_scan => KeyValueScan,
        keyvalue_batch => KeyValueBatch,
        keyvalue_cas => KeyValueCas,
        keyvalue_transactional => KeyValueTransactional,
        queue_basic => QueueBasic,
        queue_visibility => QueueVisibility,
        queue_dead_letter => QueueDeadLetter,
        queue_delayed => QueueDelayed,
    ]
);

plugin_suites!(nats: "prism_nats", config = "url = \"nats://127.0.0.1:4222\"\nsubject_prefix = \"prism.acceptance.\"", isolation = [in_process, process], [
    pubsub_basic => PubSubBasic,
    pubsub_wildcards => PubSubWildcards,
    pubsub_persistent => PubSubPersistent,
]);

plugin_suites!(kafka: "prism_kafka", config = "brokers = \"127.0.0.1:9092\"\ntopic_prefix = \"prism-acceptance.\"\npartitions = 3", isolation = [in_process, process], [
    stream_basic => StreamBasic,
    stream_consumer_groups => StreamConsumerGroups,
    stream_replay => StreamReplay,
    stream_partitioning => StreamPartitioning,
    pubsub_basic => PubSubBasic,
    pubsub_persistent => PubSubPersistent,
]);

plugin_suites!(s3: "prism_s3", config = harness::S3_CONFIG, isolation = [in_process, process], [
    object_store_basic => ObjectStoreBasic,
]);

fn files_config() -> String {
    let path = std::env::temp_dir().join(format!("prism-acceptance-{}", std::process::id())).join("objects");
    format!("path = \"{}\"", path.display())
}

plugin_suites!(files: "prism_files", config = files_config(), isolation = [in_process, process], [
    object_store_basic => ObjectStoreBasic,
]);

/// One database file for every sqlite suite of this test process, as several instances
/// of one namespace would share it.
fn sqlite_config() -> String {
    let path =
        std::env::temp_dir().join(format!("prism-acceptance-{}", std::process::id())).join("sqlite.db");
    format!("path = \"{}\"\nmax_deliveries = 3", path.display())
}

plugin_suites!(sqlite: "prism_sqlite", config = sqlite_config(), isolation = [in_process, process], [
    keyvalue_basic => KeyValueBasic,
    keyvalue_ttl => KeyValueTtl,
    keyvalue_scan => KeyValueScan,
    keyvalue_batch => KeyValueBatch,
    keyvalue_cas => KeyValueCas,
    keyvalue_transactional => KeyValueTransactional,
    list_basic => ListBasic,
    list_range => ListRange,
    queue_basic => QueueBasic,
    queue_visibility => QueueVisibility,
    queue_dead_letter => QueueDeadLetter,
    queue_delayed => QueueDelayed,
]);

/// The runner removes what each case wrote under its keys: after the key-value and list
/// suites on a Redis server, nothing the cases wrote is left under the run's key prefix
/// (the plugin's own version counter, `{prefix}n`, stays: it is not the suites' data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suites_leave_no_keys_or_lists_behind() {
    if !harness::backends_available(&[harness::Backend::Redis]) {
        return;
    }
    let prefix = format!("cleanup-{}-{}:", std::process::id(), plugin_abi::unix_millis());
    let config = format!("url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"");
    let target = Target::load(&harness::plugin_library("prism_redis"), &config).expect("load plugin");
    for interface in
        [Interface::KeyValueBasic, Interface::KeyValueTtl, Interface::ListBasic, Interface::ListRange]
    {
        let report = run_suite(&target, interface).await;
        assert!(report.failed.is_empty(), "{interface}: {:#?}", report.failed);
    }
    let scan = std::process::Command::new("redis-cli")
        .args(["-p", "6379", "--scan", "--pattern", &format!("{prefix}*")])
        .output()
        .expect("run redis-cli");
    let counter = format!("{prefix}n");
    let listing = String::from_utf8_lossy(&scan.stdout);
    let left: Vec<&str> = listing.lines().filter(|key| *key != counter).collect();
    assert!(
        left.is_empty(),
        "the suites left {} keys under {prefix}: {:?}",
        left.len(),
        &left[..left.len().min(10)]
    );
}
