//! The cost of a call across the plugin ABI: memstore Get/Set through the loaded
//! library (host handle -> FFI future -> plugin runtime bridge -> driver) against the
//! same driver called in-process as a Rust crate, in one run. Every memstore future
//! completes on its first poll, so each iteration polls once with a no-op waker and
//! no executor cost is counted.
//!
//! Run with `cargo xtask bench-abi` (it builds the release plugin this loads).

#![forbid(unsafe_code)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_abi::host::Plugin;
use plugin_abi::{Driver, KeyValueBasic};
use prism_acceptance::harness::plugin_library;

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("memstore futures complete on their first poll"),
    }
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plugin = Plugin::load(plugin_library("prism_memstore")).expect("load the release memstore plugin");
    let instance = runtime.block_on(plugin.create("")).unwrap();
    let direct = runtime.block_on(prism_memstore::Memstore::create(Default::default())).unwrap();
    let kv = instance.keyvalue_basic().unwrap();
    let value = vec![7u8; 100];
    for i in 0..1000 {
        poll_once(kv.set(&format!("key-{i:04}"), value.clone())).unwrap();
        poll_once(direct.set(&format!("key-{i:04}"), value.clone())).unwrap();
    }
    let mut group = c.benchmark_group("memstore");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get/in-process", |b| {
        b.iter(|| poll_once(direct.get(black_box("key-0500"))).unwrap())
    });
    group.bench_function("get/across-abi", |b| b.iter(|| poll_once(kv.get(black_box("key-0500"))).unwrap()));
    group.bench_function("set/in-process", |b| {
        b.iter(|| poll_once(direct.set(black_box("key-0500"), value.clone())).unwrap())
    });
    group.bench_function("set/across-abi", |b| {
        b.iter(|| poll_once(kv.set(black_box("key-0500"), value.clone())).unwrap())
    });
    group.bench_function("exists/across-abi", |b| {
        b.iter(|| poll_once(kv.exists(black_box("key-0500"))).unwrap())
    });
    group.finish();
    plugin_logs(c, &runtime);
}

/// The cost a plugin pays for a `tracing::debug!` the host's level (info) filters out:
/// a Get on the fixture that makes 100 such calls, against the same Get making none, in
/// one run.
fn plugin_logs(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::io::sink)
        .init();
    let plugin = Plugin::load(plugin_library("prism_fixture_panicking")).expect("load the release fixture");
    let instance = runtime.block_on(plugin.create_in("", "bench")).unwrap();
    let kv = instance.keyvalue_basic().unwrap();
    let mut group = c.benchmark_group("plugin-log");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get/0-disabled-debug", |b| {
        b.iter(|| poll_once(kv.get(black_box("disabled-debug:0"))).unwrap())
    });
    group.bench_function("get/100-disabled-debug", |b| {
        b.iter(|| poll_once(kv.get(black_box("disabled-debug:100"))).unwrap())
    });
    group.finish();
}

criterion_group!(abi, benches);
criterion_main!(abi);
