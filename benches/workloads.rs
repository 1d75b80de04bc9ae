//! Workload benchmarks against a real `shoal dev` (release build):
//!
//! - `cold-start`: from `apply` of a new HTTP workload whose module the node has never seen
//!   (upload, create) to its first 200 through the ingress, for 100 workloads one after another,
//!   each with a module of its own (the `hello` component plus a unique custom section, so the
//!   node must fetch and compile every one). Reports p50/p99 next to the anchors (Kubernetes'
//!   pod startup SLO p99 ≤ 5 s; containerd-shim-spin ~1.1 s end to end).
//! - `density`: N distinct HTTP workloads (default 5000; `SHOAL_DENSITY=N`) on one node, all
//!   made to answer through the ingress; reports how many answered and the resident memory of
//!   the `shoal dev` process per idle workload; then the time and size of one scrape of the
//!   node's metrics through the API server (issue 15: at most 1 s and 10 MiB at 10,000), and
//!   of its per-instance metrics.
//!
//! `cargo bench --bench workloads` (both), or `cargo bench --bench workloads -- density`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_api::resources::instance::InstanceKind;
use shoal_api::{AnyObject, Client, ClientConfig, Kind};

struct Dev {
    child: Child,
    ingress: String,
    admin: Client,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release `shoal dev` in `dir`, with `extra` arguments.
fn start_dev(dir: &Path, extra: &[&str]) -> Dev {
    let data = dir.join("data");
    let mut args = vec![
        "dev",
        "--data-dir",
        data.to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
        "--dns-listen",
        "127.0.0.1:0",
        "--ingress-listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let (child, announced) = common::spawn_announcing(
        &args,
        &dir.join("config.yaml"),
        &dir.join("dev.log"),
        &["ingress listening on http://"],
    );
    let admin = Client::new(&ClientConfig::load(&data.join("client.yaml")).unwrap()).unwrap();
    Dev { child, ingress: announced[0].clone(), admin }
}

/// `hello.wasm` with a custom section that makes it a module of its own.
fn unique_module(base: &[u8], i: usize) -> Vec<u8> {
    common::with_custom_section(base, "shoal-bench", format!("cold-start {i} {}", std::process::id()).as_bytes())
}

fn workload(name: &str, module: &str) -> AnyObject {
    AnyObject::from_json(
        Kind::Workload,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"module": module, "replicas": 1}}),
    )
    .unwrap()
}

async fn answers(http: &reqwest::Client, ingress: &str, name: &str) -> bool {
    let response =
        http.get(format!("http://{ingress}/")).header("host", format!("{name}.default.localhost")).send().await;
    response.is_ok_and(|r| r.status() == 200)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path(), &[]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let base = std::fs::read(shoal_guest_artifacts::HELLO).unwrap();
    // One warm-up workload, so that the first sample does not pay for process start-up.
    let modules: Vec<Vec<u8>> = (0..=100).map(|i| unique_module(&base, i)).collect();
    let mut samples = Vec::new();
    for (i, bytes) in modules.into_iter().enumerate() {
        let name = format!("cs{i}");
        let started = Instant::now();
        let digest = dev.admin.put_module("default", bytes).await.unwrap();
        dev.admin.create(&workload(&name, &digest)).await.unwrap();
        while !answers(&http, &dev.ingress, &name).await {
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(started.elapsed() < Duration::from_secs(30), "{name} did not answer within 30 s");
        }
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cold start over {} workloads (upload + create -> first 200 via the ingress): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
    println!("anchors: Kubernetes pod startup SLO p99 <= 5000 ms; containerd-shim-spin ~1100 ms end to end");
}

async fn density() {
    let n: usize = std::env::var("SHOAL_DENSITY").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    // Room on the node for the N and the baseline workload.
    let room = (n + 16).to_string();
    let dev = start_dev(dir.path(), &["--max-instances", &room]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let digest = dev.admin.put_module("default", std::fs::read(shoal_guest_artifacts::HELLO).unwrap()).await.unwrap();
    // A first workload, so that the baseline includes the compiled module and warm caches.
    dev.admin.create(&workload("baseline", &digest)).await.unwrap();
    while !answers(&http, &dev.ingress, "baseline").await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = common::rss_kib(dev.child.id());
    let started = Instant::now();
    let admin = Arc::new(dev.admin.clone());
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (admin, digest) = (admin.clone(), digest.clone());
            async move { admin.create(&workload(&format!("d{i}"), &digest)).await.map(drop).unwrap() }
        })
        .await;
    let created = started.elapsed();
    loop {
        let list = dev.admin.list_of::<InstanceKind>(Some("default")).await.unwrap();
        let ready = list.items.iter().filter(|i| i.is_ready()).count();
        if ready > n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "only {ready} of {n} ready after 30 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = started.elapsed();
    let ok = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (http, ingress, ok) = (http.clone(), dev.ingress.clone(), ok.clone());
            async move {
                if answers(&http, &ingress, &format!("d{i}")).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    // The node's metrics now cover every workload (each answered once).
    let scraped = Instant::now();
    let metrics = dev.admin.node_metrics("dev", false).await.unwrap();
    let scrape = scraped.elapsed();
    let series = metrics.lines().filter(|l| l.starts_with("shoal_node_workload_requests_total{")).count();
    let scraped = Instant::now();
    let per_instance = dev.admin.node_metrics("dev", true).await.unwrap();
    let instance_scrape = scraped.elapsed();
    // Let the request burst's transient allocations settle before reading the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = common::rss_kib(dev.child.id());
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "density: {ok}/{n} distinct HTTP workloads answered on one node; created in {:.1} s, all ready after {:.1} s",
        created.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!(
        "resident memory of shoal dev: {} MiB before, {} MiB after: {:.1} KiB per idle workload (control plane and node together)",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    println!(
        "node metrics with {series} workloads counted: scraped through the API server in {:.0} ms, {:.1} MiB (goal: at most 1 s and 10 MiB at 10,000 workloads)",
        scrape.as_secs_f64() * 1000.0,
        metrics.len() as f64 / (1024.0 * 1024.0),
    );
    println!(
        "node per-instance metrics (/metrics/resource, what shoal top reads): {:.0} ms, {:.1} MiB",
        instance_scrape.as_secs_f64() * 1000.0,
        per_instance.len() as f64 / (1024.0 * 1024.0),
    );
    println!("anchor: Kubernetes' default limit is 110 pods per node");
}

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("cold-start") {
        cold_start().await;
    }
    if wants("density") {
        density().await;
    }
}
