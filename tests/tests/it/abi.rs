//! The plugin ABI seen from the host side: loading side by side, refusing what does not
//! fit, and surviving a plugin that panics.

use std::path::PathBuf;

use plugin_abi::host::{LoadError, Plugin};
use plugin_abi::{ErrorCode, HealthStatus};
use prism_acceptance::harness::plugin_library;

fn copy_to(dir: &tempfile::TempDir, library: &str, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::copy(plugin_library(library), &path).unwrap();
    path
}

#[tokio::test]
async fn two_copies_of_one_plugin_load_side_by_side_with_separate_state() {
    let dir = tempfile::tempdir().unwrap();
    let first = Plugin::load(copy_to(&dir, "prism_memstore", "first.so")).unwrap();
    let second = Plugin::load(copy_to(&dir, "prism_memstore", "second.so")).unwrap();
    let a = first.create("").await.unwrap();
    let b = second.create("").await.unwrap();
    a.keyvalue_basic().unwrap().set("k", b"from a".to_vec()).await.unwrap();
    b.keyvalue_basic().unwrap().set("k", b"from b".to_vec()).await.unwrap();
    assert_eq!(a.keyvalue_basic().unwrap().get("k").await.unwrap(), Some(b"from a".to_vec()));
    assert_eq!(b.keyvalue_basic().unwrap().get("k").await.unwrap(), Some(b"from b".to_vec()));
    // And a different plugin beside them.
    let other = Plugin::load(plugin_library("prism_fixture_panicking")).unwrap();
    assert_eq!(other.metadata().name, "panicking");
    assert_eq!(first.metadata().name, "memstore");
}

#[test]
fn a_library_with_an_incompatible_root_module_is_refused_with_one_clear_line() {
    let error = Plugin::load(plugin_library("prism_fixture_incompatible_abi")).unwrap_err();
    let LoadError::IncompatibleAbi { summary, detail, .. } = &error else {
        panic!("expected IncompatibleAbi, got {error:?}")
    };
    assert!(summary.contains("layout differs at PluginModule"), "names the type: {summary}");
    assert!(
        summary.contains("package plugin-abi expected, prism-fixture-incompatible-abi found"),
        "{summary}"
    );
    assert!(!summary.contains('\n'), "the operator gets one line: {summary}");
    assert!(detail.lines().count() > 20, "the full report is kept for debug logs");
}

#[test]
fn a_plugin_of_another_major_abi_version_is_refused_naming_both_versions() {
    let error = Plugin::load(plugin_library("prism_fixture_other_major")).unwrap_err();
    let LoadError::IncompatibleAbi { summary, .. } = &error else {
        panic!("expected IncompatibleAbi, got {error:?}")
    };
    assert!(summary.contains("built against plugin-abi 2.0.0"), "{summary}");
    assert!(summary.contains(&format!("this host (plugin-abi {})", plugin_abi::ABI_VERSION)), "{summary}");
    assert!(!summary.contains('\n'), "{summary}");
}

#[test]
fn metadata_reports_the_abi_version_the_plugin_was_built_against() {
    let plugin = Plugin::load(plugin_library("prism_memstore")).unwrap();
    assert_eq!(plugin.metadata().abi_version, plugin_abi::ABI_VERSION);
    assert!(plugin_abi::ABI_VERSION.starts_with("1."), "the ABI's major is 1 since this release");
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.so");
    std::fs::write(&text, "not a library at all").unwrap();
    assert!(matches!(Plugin::load(&text), Err(LoadError::Open { .. })));
    assert!(matches!(Plugin::load(dir.path().join("missing.so")), Err(LoadError::Open { .. })));
}

#[tokio::test]
async fn a_panic_inside_a_plugin_becomes_an_internal_error_and_marks_it_unhealthy() {
    let plugin = Plugin::load(plugin_library("prism_fixture_panicking")).unwrap();
    let instance = plugin.create("").await.unwrap();
    assert_eq!(instance.health().await.status, HealthStatus::Serving);
    let kv = instance.keyvalue_basic().unwrap();
    kv.set("k", b"v".to_vec()).await.unwrap();
    let error = kv.get("panic").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Internal);
    assert!(error.message().contains("the fixture was asked to panic"), "{error}");
    // The instance still answers, but reports the panic.
    assert_eq!(kv.get("k").await.unwrap(), Some(b"v".to_vec()));
    let health = instance.health().await;
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert!(health.message.contains("panicked"), "{}", health.message);
}

#[tokio::test]
async fn config_errors_come_back_as_invalid_argument_naming_the_key() {
    let plugin = Plugin::load(plugin_library("prism_memstore")).unwrap();
    let error = plugin.check_config("max_key = 5").unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.message().contains("max_key"), "{error}");
    plugin.check_config("max_keys = 5").unwrap();
    let error = plugin.check_config("shards = 0").unwrap_err();
    assert!(
        error.message().contains("shards = 0 is out of range"),
        "validation runs without creating: {error}"
    );
    let error = plugin.create("shards = 0").await.err().expect("shards = 0 is refused");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.message().contains("shards"), "{error}");
}

#[tokio::test]
async fn memstore_refuses_writes_past_its_capacity_with_resource_exhausted() {
    let plugin = Plugin::load(plugin_library("prism_memstore")).unwrap();
    let instance = plugin.create("max_keys = 3").await.unwrap();
    let kv = instance.keyvalue_basic().unwrap();
    for key in ["a", "b", "c"] {
        kv.set(key, b"v".to_vec()).await.unwrap();
    }
    let error = kv.set("d", b"v".to_vec()).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ResourceExhausted);
    assert!(error.message().contains("max_keys"), "{error}");
    kv.set("a", b"overwrite is fine".to_vec()).await.unwrap();
    kv.delete("b").await.unwrap();
    kv.set("d", b"room again".to_vec()).await.unwrap();

    let instance = plugin.create("max_bytes = 100").await.unwrap();
    let kv = instance.keyvalue_basic().unwrap();
    kv.set("k", vec![0; 90]).await.unwrap();
    let error = kv.set("j", vec![0; 20]).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ResourceExhausted);
    assert!(error.message().contains("max_bytes"), "{error}");
    let lists = instance.list_basic().unwrap();
    assert_eq!(
        lists.push("l", plugin_abi::ListEnd::Right, vec![vec![0; 50]]).await.unwrap_err().code(),
        ErrorCode::ResourceExhausted
    );
}
