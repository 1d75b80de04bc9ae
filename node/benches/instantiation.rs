//! Instantiation: from the pre-instantiated `hello` component to a ready instance in a fresh
//! store with Shoal's per-request setup (host state with deny-by-default WASI, memory guard, CPU
//! budget and deadline), with the pooling allocator, and dropping it again: what every HTTP
//! request pays before the guest runs. The anchor, in the same run: the same with a bare store
//! (no Shoal setup beyond the WASI context wasi-http needs).
//!
//! `cargo bench -p shoal-node --bench instantiation`

#![allow(missing_docs)] // criterion_group! makes an undocumented function

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shoal_node::runtime::host::Sandbox;
use shoal_node::runtime::http::HttpApp;
use shoal_node::runtime::limits::Limits;
use shoal_node::runtime::{Program, Runtime, RuntimeConfig};

fn instantiation(c: &mut Criterion) {
    let runtime = Runtime::new(&RuntimeConfig { max_instances: 64, ..Default::default() }).unwrap();
    let bytes = std::fs::read(shoal_guest_artifacts::HELLO).unwrap();
    let Program::Component(component) = runtime.load(&bytes).unwrap() else { panic!("hello is a component") };
    let app = HttpApp::new(&runtime, &component).unwrap();
    let mut sandbox = Sandbox::new("hello");
    sandbox.env = vec![("GREETING".into(), "hello".into())];
    sandbox.limits = Limits { memory: Some(32 << 20), cpu_millis: Some(250), timeout: Some(Duration::from_secs(30)) };
    let bare = Sandbox::new("hello");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut group = c.benchmark_group("instantiate hello");
    group.bench_function("shoal per-request setup", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = app.new_store(&sandbox).unwrap();
            app.instantiate(&mut store).await.unwrap();
        })
    });
    group.bench_function("no limits, no env", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = app.new_store(&bare).unwrap();
            app.instantiate(&mut store).await.unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, instantiation);
criterion_main!(benches);
