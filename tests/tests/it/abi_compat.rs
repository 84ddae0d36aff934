//! Compatibility across ABI releases: a plugin built against the frozen plugin-abi 1.0.0
//! (tests/fixtures/abi-1.0, built by `cargo xtask test`) loads in this host, serves
//! through gRPC, and reads as lacking everything later minor versions added (1.1: config
//! keys, the exclusive flag, `create_in` with log forwarding). One built against the
//! frozen 1.1.0 (tests/fixtures/abi-1.1) loads with what 1.1 declared and reads as lacking
//! what 1.2 added (`object_store_basic`). One built against the frozen 1.2.0
//! (tests/fixtures/abi-1.2) serves objects, and its `list` (new in 1.3) answers
//! `Unimplemented` naming the method. A plugin built against a
//! pretend next minor release (tests/fixtures/abi-next: 1.99.0, one more metadata field,
//! an interface no host knows) loads too, and the interface is reported and ignored.

use plugin_abi::host::Plugin;
use plugin_abi::Interface;
use prism_acceptance::harness::{plugin_library, run_prism, Server};
use prism_api::*;

const OLD: &str = "prism_fixture_abi_1_0";
const V1_1: &str = "prism_fixture_abi_1_1";
const V1_2: &str = "prism_fixture_abi_1_2";
const NEXT: &str = "prism_fixture_abi_next";

#[tokio::test]
async fn a_plugin_built_against_abi_1_0_loads_and_reports_its_version() {
    let plugin = Plugin::load(plugin_library(OLD)).unwrap();
    let metadata = plugin.metadata();
    assert_eq!(metadata.abi_version, "1.0.0");
    assert_eq!(metadata.interfaces, vec![Interface::KeyValueBasic, Interface::KeyValueScan]);
    // What 1.1 added to the metadata table reads as absent.
    assert_eq!(metadata.config_keys, None, "config keys came with 1.1");
    assert!(!metadata.exclusive, "the exclusive flag came with 1.1");
    let instance = plugin.create("").await.unwrap();
    for &interface in Interface::ALL {
        let expected = metadata.implements(interface);
        assert_eq!(instance.provides(interface), expected, "{interface}");
    }
    let kv = instance.keyvalue_basic().unwrap();
    kv.set("k", b"v".to_vec()).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), Some(b"v".to_vec()));
    instance.shutdown().await;
}

#[tokio::test]
async fn a_plugin_built_against_abi_1_1_loads_with_its_config_keys_and_lacks_what_1_2_added() {
    let plugin = Plugin::load(plugin_library(V1_1)).unwrap();
    let metadata = plugin.metadata();
    assert_eq!(metadata.abi_version, "1.1.0");
    assert_eq!(metadata.interfaces, vec![Interface::KeyValueBasic]);
    let keys = metadata.config_keys.as_ref().expect("1.1 plugins describe their config keys");
    assert_eq!(keys.iter().map(|key| key.name.as_str()).collect::<Vec<_>>(), ["greeting"]);
    let instance = plugin.create_in("greeting = \"hello\"", "compat").await.unwrap();
    assert!(instance.object_store_basic().is_none(), "object_store_basic came with 1.2");
    for &interface in Interface::ALL {
        assert_eq!(instance.provides(interface), metadata.implements(interface), "{interface}");
    }
    let kv = instance.keyvalue_basic().unwrap();
    kv.set("k", b"v".to_vec()).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), Some(b"v".to_vec()));
    instance.shutdown().await;
}

#[tokio::test]
async fn a_plugin_built_against_abi_1_2_serves_objects_and_answers_unimplemented_to_what_1_3_added() {
    let plugin = Plugin::load(plugin_library(V1_2)).unwrap();
    let metadata = plugin.metadata();
    assert_eq!(metadata.abi_version, "1.2.0");
    assert_eq!(metadata.interfaces, vec![Interface::ObjectStoreBasic]);
    let instance = plugin.create_in("", "compat").await.unwrap();
    let objects = instance.object_store_basic().expect("1.2 plugins have object_store_basic");
    let mut upload = objects.put("ns/object").await.unwrap();
    upload.write(b"bytes".to_vec()).await.unwrap();
    assert_eq!(upload.finish().await.unwrap().size, 5);
    assert_eq!(objects.head("ns/object").await.unwrap().map(|info| info.size), Some(5));
    let error = objects.list("ns/", "", 10).await.expect_err("list came with 1.3");
    assert_eq!(error.code(), plugin_abi::ErrorCode::Unimplemented, "{error}");
    assert!(error.message().contains("`list`"), "the error names the method: {error}");
    instance.shutdown().await;
}

#[test]
fn prism_plugins_shows_the_old_version() {
    let path = plugin_library(OLD).display().to_string();
    let (code, stdout, stderr) = run_prism(&["plugins", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("abi version:       1.0.0"), "{stdout}");
    assert!(stdout.contains("interfaces:        keyvalue_basic, keyvalue_scan"), "{stdout}");
    assert!(stdout.contains("config keys:       not described (built against plugin-abi 1.0)"), "{stdout}");
}

#[tokio::test]
async fn the_old_plugin_serves_through_grpc() {
    let server = Server::start(
        "[plugins.old]\npath = \"{abi_1_0}\"\n\n[[namespaces]]\nname = \"old\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"old\"\n",
    );
    let mut kv = server.keyvalue().await;
    for key in ["a/1", "a/2", "b/1"] {
        let request =
            SetRequest { namespace: "old".into(), key: key.into(), value: key.into(), ..Default::default() };
        kv.set(request).await.unwrap();
    }
    let reply = kv
        .get(GetRequest { namespace: "old".into(), key: "a/2".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&reply.value[..], b"a/2");
    let page = kv
        .scan(ScanRequest { namespace: "old".into(), prefix: "a/".into(), limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&str> = page.entries.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    // An interface the old plugin lacks is UNIMPLEMENTED, naming it.
    let status = kv
        .expire(ExpireRequest { namespace: "old".into(), key: "a/1".into(), ttl_ms: 1000 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("keyvalue_ttl"), "{}", status.message());
}

#[tokio::test]
async fn a_plugin_built_against_a_newer_minor_loads_and_its_unknown_interface_is_ignored() {
    let plugin = Plugin::load(plugin_library(NEXT)).unwrap();
    let metadata = plugin.metadata();
    assert_eq!(metadata.abi_version, "1.99.0");
    assert_eq!(metadata.interfaces, vec![Interface::KeyValueBasic, Interface::KeyValueScan]);
    assert_eq!(metadata.unknown_interfaces, vec!["keyvalue_from_the_future".to_owned()]);
    assert_eq!(metadata.config_keys, Some(Vec::new()), "the 1.1 fields it has are read");

    let path = plugin_library(NEXT).display().to_string();
    let (code, stdout, stderr) = run_prism(&["plugins", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(unknown to this host, ignored: keyvalue_from_the_future)"), "{stdout}");

    let server = Server::start(
        "[plugins.next]\npath = \"{abi_next}\"\n\n[[namespaces]]\nname = \"next\"\npattern = \"keyvalue\"\n[namespaces.slots.store]\nplugin = \"next\"\n",
    );
    let mut kv = server.keyvalue().await;
    let request = SetRequest {
        namespace: "next".into(),
        key: "k".into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    };
    kv.set(request).await.unwrap();
    let reply = kv
        .get(GetRequest { namespace: "next".into(), key: "k".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&reply.value[..], b"v");
    assert!(
        server.stderr().contains("keyvalue_from_the_future"),
        "the unknown interface is logged: {}",
        server.stderr()
    );
}
