//! Controller-manager benchmarks with hollow nodes (`shoal node --hollow N`: the real node code
//! paths against the real API, with real node tokens, the runtime replaced) against real
//! `shoal control` members (release build; one unless `SHOAL_CONTROL_MEMBERS` says more):
//!
//! - `liveness`: N hollow nodes (default 1000; `SHOAL_HOLLOW_NODES=N`) beating every second;
//!   the control plane's CPU over 10 s with nothing else to do, as a share of one core.
//! - `binds`: W workloads × R replicas (default 200 × 100 = 20,000; `SHOAL_BIND_WORKLOADS`,
//!   `SHOAL_BIND_REPLICAS`) created by 64 clients at once; from the first create until every
//!   instance is bound: binds/s, and the spread (fewest and most instances per node).
//! - `creation`: workloads of one replica created by 64 clients until 15,000 are stored
//!   (`SHOAL_CREATE_WORKLOADS`); creates/s over the first 1,000 and over the last 1,000.
//! - `growth`: 1,000 workloads of one replica created by 64 clients before the other phases
//!   and 1,000 more after them: creates/s with the nodes alone stored and with the store
//!   filled (at 150,000 instances, issue 16's figure).
//! - then the memory figure: the control plane's resident memory per stored instance, over what
//!   it held with the nodes alone (each member's).
//! - `store`: the store's create rate at 64 clients (20,000 Configs; `SHOAL_STORE_CREATES`),
//!   beside the nodes, for comparison with the bind rate.
//!
//! `SHOAL_CONTROL_MEMBERS=3` runs three members instead of one (the nodes spread over them, the
//! CPU figures summed over them). During `binds` one client GETs one object and another creates
//! Configs, one request at a time, through a member that is not the leader: their latencies.
//!
//! Throughout, a watch of the Nodes counts every node marked NotReady (there must be none: the
//! hollow agents run the whole time). `cargo bench --bench controllers [liveness] [binds]
//! [creation] [growth] [store]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ControlProcess, cpu_time, rss_kib, spawn_announcing};
use futures::StreamExt;
use shoal_api::resources::instance::InstanceKind;
use shoal_api::resources::node::NodeKind;
use shoal_api::{AnyObject, Client, ClientConfig, EventType, Kind};
use tokio::sync::watch;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `shoal node --hollow N` process, killed on drop.
struct Hollow(Child);

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` hollow nodes named `prefix-N`, joined to `control`'s API; the cluster CA is in `ca`.
fn start_hollow(control: &ControlProcess, ca: &std::path::Path, prefix: &str, count: usize) -> Hollow {
    let config = control.client_config();
    let count = count.to_string();
    let args = [
        "node",
        "--hollow",
        &count,
        "--hollow-prefix",
        prefix,
        "--join",
        &control.api_url,
        "--token",
        &config.token,
        "--ca",
        ca.to_str().unwrap(),
        "--heartbeat",
        "1s",
        "--capacity-memory",
        "64Gi",
        "--capacity-cpu",
        "64",
        "--max-instances",
        "1000",
    ];
    let log = control.data_dir.join(format!("{prefix}.log"));
    let (child, _) = spawn_announcing(&args, &control.config_path, &log, &["hollow nodes running: "]);
    Hollow(child)
}

fn workload(name: &str, module: &str, replicas: usize) -> AnyObject {
    AnyObject::from_json(
        Kind::Workload,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"module": module, "replicas": replicas, "resources": {"memory": "1Mi", "cpu": "1m"}}}),
    )
    .unwrap()
}

/// Counts Ready→not-Ready transitions of any node, from a watch, until the bench ends.
fn count_not_ready(admin: Client) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let list = admin.list_of::<NodeKind>(None).await.unwrap();
        let mut changes = Box::pin(admin.watch_of::<NodeKind>(None, list.resource_version).await.unwrap());
        while let Some(Ok(change)) = changes.next().await {
            let ready = change.object.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True");
            if change.type_ == EventType::Modified && !ready {
                eprintln!("node {} marked NotReady", change.object.metadata.name);
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    count
}

/// Just enough of a watch line to follow binds: parsing whole typed objects in this process
/// would make the watch lag behind the control plane and the measurement with it.
#[derive(serde::Deserialize)]
struct BindLine {
    #[serde(rename = "type")]
    kind: String,
    object: BindObject,
}

#[derive(serde::Deserialize)]
struct BindObject {
    metadata: BindMeta,
    spec: BindSpec,
    #[serde(default)]
    status: Option<BindStatus>,
}

#[derive(serde::Deserialize)]
struct BindStatus {
    #[serde(default)]
    ready: bool,
}

#[derive(serde::Deserialize)]
struct BindMeta {
    name: String,
    namespace: Option<String>,
}

#[derive(serde::Deserialize)]
struct BindSpec {
    node: Option<String>,
}

/// Follows where every instance is bound (a watch of instances, read line by line); publishes
/// how many are.
/// Where each instance is bound, by `namespace/name`.
type Bindings = Arc<std::sync::Mutex<HashMap<String, String>>>;

/// Follows the instances: how many are bound, how many their nodes report ready, and where each is bound.
fn follow_binds(config: ClientConfig, admin: Client) -> (watch::Receiver<usize>, watch::Receiver<usize>, Bindings) {
    let (tx, rx) = watch::channel(0);
    let (ready_tx, ready_rx) = watch::channel(0);
    let mut ready = std::collections::HashSet::new();
    let bound = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let map = bound.clone();
    tokio::spawn(async move {
        let from = admin.list_of::<InstanceKind>(None).await.unwrap().resource_version;
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(config.ca.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let url = format!("{}/api/v1/instances?watch=true&resourceVersion={from}", config.server);
        let response = http.get(url).bearer_auth(&config.token).send().await.unwrap();
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.extend_from_slice(&chunk);
            let mut map = map.lock().unwrap();
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(line) = serde_json::from_slice::<BindLine>(&line) else { continue };
                let key =
                    format!("{}/{}", line.object.metadata.namespace.unwrap_or_default(), line.object.metadata.name);
                let ready_now = line.object.status.as_ref().is_some_and(|s| s.ready);
                match line.kind.as_str() != "DELETED" && ready_now && line.object.metadata.name.starts_with("bind") {
                    true => ready.insert(key.clone()),
                    false => ready.remove(&key),
                };
                match (line.kind.as_str(), line.object.spec.node) {
                    ("DELETED", _) => {
                        map.remove(&key);
                    }
                    (_, Some(node)) => {
                        map.insert(key, node);
                    }
                    (_, None) => {}
                }
            }
            tx.send_replace(map.len());
            ready_tx.send_replace(ready.len());
        }
    });
    (rx, ready_rx, bound)
}

async fn create_all(admin: &Client, names: Vec<String>, digest: &str, replicas: usize, clients: usize) -> Vec<Instant> {
    let done = Arc::new(std::sync::Mutex::new(Vec::with_capacity(names.len())));
    futures::stream::iter(names)
        .for_each_concurrent(clients, |name| {
            let (admin, done) = (admin.clone(), done.clone());
            async move {
                // A create that failed on a loaded cluster is tried again; one whose outcome
                // was unknown may have been made, and then exists.
                let object = workload(&name, digest, replicas);
                for attempt in 1.. {
                    match admin.create(&object).await {
                        Ok(_) => break,
                        Err(e) if e.reason() == Some(shoal_api::Reason::Conflict) && attempt > 1 => break,
                        Err(e) if attempt < 20 => eprintln!("create {name}: {e}; again"),
                        Err(e) => panic!("create {name}: {e}, 20 times"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                done.lock().unwrap().push(Instant::now());
            }
        })
        .await;
    let mut times = Arc::try_unwrap(done).unwrap().into_inner().unwrap();
    times.sort();
    times
}

/// How many workloads each round of `growth` creates.
const GROWTH_WORKLOADS: usize = 1000;

/// How many Nodes, Workloads and Instances are stored, counted by paging through them.
async fn stored_objects(admin: &Client) -> usize {
    let mut total = 0;
    for kind in [Kind::Node, Kind::Workload, Kind::Instance] {
        total += admin.list_paged(kind, None, None, 5000).await.unwrap().items.len();
    }
    total
}

fn rate(times: &[Instant]) -> f64 {
    let span = times.last().unwrap().duration_since(*times.first().unwrap());
    (times.len() - 1) as f64 / span.as_secs_f64()
}

/// `n` control members (the first founds the cluster, the others join it with its PKI), all
/// voting; returns them with the leader first.
async fn start_members(dir: &std::path::Path, n: usize) -> Vec<ControlProcess> {
    // Members that share two cores with thousands of hollow nodes answer raft late: at the
    // default 50 ms heartbeat a saturated machine misses read-index rounds (503s) and elections
    // follow. A longer heartbeat, as for members far apart (`--raft-heartbeat`).
    let heartbeat = std::env::var("SHOAL_BENCH_RAFT_HEARTBEAT").unwrap_or_else(|_| "200ms".into());
    let timing = if n > 1 { vec!["--raft-heartbeat", heartbeat.as_str()] } else { vec![] };
    let grace = [&["--node-grace", "10s"][..], &timing].concat();
    let first = ControlProcess::start(&dir.join("m1"), &[&["--id", "1"][..], &grace].concat());
    let pki = dir.join("m1/pki");
    let mut members = vec![first];
    for id in 2..=n {
        let (id, join) = (id.to_string(), members[0].raft_addr.clone());
        let flags = [&["--id", &id, "--join", &join, "--pki-dir", pki.to_str().unwrap()][..], &grace].concat();
        members.push(ControlProcess::start(&dir.join(format!("m{id}")), &flags));
    }
    let client = members[0].client();
    let leader = common::wait_for(Duration::from_secs(60), &format!("{n} voting members and a leader"), || async {
        let status = client.cluster_status().await.ok()?;
        (status.members.len() == n).then_some(status.leader?)
    })
    .await;
    members.rotate_left((leader - 1) as usize);
    members
}

/// Latencies of one kind of request made one after another until `stop` (a failed request
/// counts with the time it took to fail), and how many failed.
async fn probe<F, Fut>(stop: tokio_util::sync::CancellationToken, mut call: F) -> (Vec<Duration>, usize)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (mut took, mut failed) = (Vec::new(), 0);
    let mut n = 0;
    while !stop.is_cancelled() {
        let asked = Instant::now();
        failed += usize::from(!call(n).await);
        took.push(asked.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (took, failed)
}

/// `p50 / p99 / max` of what [`probe`] saw, in ms, and its failures.
fn percentiles((mut took, failed): (Vec<Duration>, usize)) -> String {
    took.sort();
    let at = |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    let (n, p50, p99, max) = (took.len(), ms(at(0.5)), ms(at(0.99)), ms(took.last()));
    format!("n {n}, p50 {p50:.1} / p99 {p99:.1} / max {max:.1} ms, {failed} failed")
}

fn config(name: &str) -> AnyObject {
    let json = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Config",
        "metadata": {"name": name, "namespace": "default"}, "spec": {"data": {"k": "v"}}});
    AnyObject::from_json(Kind::Config, &json).unwrap()
}

/// The store's create rate at 64 clients: `n` Configs, creates/s.
async fn store_create_rate(admin: &Client, n: usize) -> f64 {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let admin = admin.clone();
            async move {
                admin.create(&config(&format!("store-{i}"))).await.unwrap();
            }
        })
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let nodes = env_usize("SHOAL_HOLLOW_NODES", 1000);
    let member_count = env_usize("SHOAL_CONTROL_MEMBERS", 1);

    let dir = tempfile::tempdir().unwrap();
    let members = start_members(dir.path(), member_count).await;
    let control = &members[0];
    println!(
        "{member_count} control member(s); data and logs in {} (kept with SHOAL_BENCH_KEEP=1)",
        dir.path().display()
    );
    let admin = control.client();
    let digest = admin.put_module("default", std::fs::read(shoal_guest_artifacts::HELLO).unwrap()).await.unwrap();
    let started = Instant::now();
    // The nodes are spread over the members, as a load balancer in front of them would.
    let ca = dir.path().join("m1/pki/ca.pem");
    let _hollow: Vec<Hollow> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let count = nodes / member_count + usize::from(i < nodes % member_count);
            start_hollow(m, &ca, &format!("hollow{}", i + 1), count)
        })
        .collect();
    println!("{nodes} hollow nodes registered in {:.1} s", started.elapsed().as_secs_f64());
    let not_ready = count_not_ready(admin.clone());
    // A hollow node writes its status (Ready, capacity) within a heartbeat of registering.
    loop {
        let nodes_now = admin.list_of::<NodeKind>(None).await.unwrap().items;
        let ready =
            nodes_now.iter().filter(|n| n.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True"));
        if ready.count() >= nodes {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "hollow nodes not Ready after 2 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{nodes} hollow nodes Ready {:.1} s after start", started.elapsed().as_secs_f64());
    let pids: Vec<u32> = members.iter().map(|m| m.pid().unwrap()).collect();
    let cpu = || pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    let rss_with_nodes: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    if wants("liveness") {
        // Let registrations and first statuses settle, then measure beats alone.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, t0) = (cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let share = (cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
        println!(
            "liveness: {nodes} hollow nodes beating every 1 s: control plane CPU (all members) {:.1}% of a core ({:.1}% per 1,000 nodes)",
            share * 100.0,
            share * 100.0 * 1000.0 / nodes as f64
        );
    }

    // `growth`: the workload creation rate with the nodes alone stored, and again after binds
    // (and whatever else ran) have filled the store.
    let growth = async |round: &str| {
        let names: Vec<String> = (0..GROWTH_WORKLOADS).map(|i| format!("growth-{round}-{i}")).collect();
        let times = create_all(&admin, names, &digest, 1, 64).await;
        let stored = stored_objects(&admin).await;
        (rate(&times), stored)
    };
    let early = if wants("growth") { Some(growth("early").await) } else { None };

    if wants("binds") {
        let (workloads, replicas) = (env_usize("SHOAL_BIND_WORKLOADS", 200), env_usize("SHOAL_BIND_REPLICAS", 100));
        let total = workloads * replicas;
        let (mut bound_count, mut ready_count, bound) = follow_binds(control.client_config(), admin.clone());
        let names: Vec<String> = (0..workloads).map(|i| format!("bind{i}")).collect();
        // Meanwhile one client reads one object and another writes, each one request at a
        // time, through a member that is not the leader where there is one.
        let stop = tokio_util::sync::CancellationToken::new();
        let prober = members.last().unwrap().client();
        prober.create(&config("probe-target")).await.unwrap();
        let getter = prober.clone();
        let gets = tokio::spawn(probe(stop.clone(), move |_| {
            let getter = getter.clone();
            async move { getter.get(Kind::Config, Some("default"), "probe-target").await.is_ok() }
        }));
        let writes = tokio::spawn(probe(stop.clone(), move |n| {
            let prober = prober.clone();
            async move { prober.create(&config(&format!("probe-{n}"))).await.is_ok() }
        }));
        let started = Instant::now();
        create_all(&admin, names, &digest, replicas, 64).await;
        let created = started.elapsed();
        bound_count.wait_for(|n| *n >= total).await.unwrap();
        let elapsed = started.elapsed();
        stop.cancel();
        let (gets, writes) = (gets.await.unwrap(), writes.await.unwrap());
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for node in bound.lock().unwrap().values() {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        let (least, most) =
            (per_node.values().min().copied().unwrap_or(0), per_node.values().max().copied().unwrap_or(0));
        println!(
            "binds: {workloads} workloads x {replicas} replicas = {total} instances over {} nodes bound in {:.2} s (created in {:.2} s): {:.0} binds/s; per node {least}..{most}",
            per_node.len(),
            elapsed.as_secs_f64(),
            created.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        println!("anchor: the previous controller manager bound 20,000 over 1,000 hollow nodes at 1,103/s (issue 12)");
        println!("during binds: a single GET {}; a create {}", percentiles(gets), percentiles(writes));
        // Bound is not yet running: the nodes' reports follow, and writes after this phase
        // queue behind those still on their way.
        ready_count.wait_for(|n| *n >= total).await.unwrap();
        println!(
            "reported ready: all {total} instances {:.2} s after the first create ({:.2} s after the last bind)",
            started.elapsed().as_secs_f64(),
            (started.elapsed() - elapsed).as_secs_f64()
        );
    }

    if wants("creation") {
        let n = env_usize("SHOAL_CREATE_WORKLOADS", 15_000);
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let times = create_all(&admin, names, &digest, 1, 64).await;
        let (first, last) = (rate(&times[..1000.min(n)]), rate(&times[n.saturating_sub(1000)..]));
        println!(
            "creation: {n} workloads of 1 replica by 64 clients: {first:.0}/s over the first 1,000, {last:.0}/s over the last 1,000 (ratio {:.2})",
            last / first
        );
    }
    if let Some((first, stored_first)) = early {
        let (last, stored_last) = growth("late").await;
        println!(
            "growth: {GROWTH_WORKLOADS} workloads of 1 replica by 64 clients: {first:.0}/s with {stored_first} objects stored, {last:.0}/s with {stored_last} (ratio {:.2})",
            last / first
        );
    }
    if wants("binds") || wants("creation") {
        // What the stored instances (and their workloads) cost the control plane's memory,
        // over what it held with the nodes alone.
        let instances = admin.list_paged(Kind::Instance, None, None, 5000).await.unwrap().items.len();
        let workloads = admin.list_paged(Kind::Workload, None, None, 5000).await.unwrap().items.len();
        for (i, pid) in pids.iter().enumerate() {
            let (before, now) = (rss_with_nodes[i], rss_kib(*pid));
            println!(
                "memory (member {}{}): {instances} instances and {workloads} workloads stored: resident {} MiB -> {} MiB, {:.1} KiB per stored instance",
                i + 1,
                if i == 0 { ", the leader" } else { "" },
                before / 1024,
                now / 1024,
                now.saturating_sub(before) as f64 / instances.max(1) as f64
            );
        }
    }
    if wants("store") {
        // Last, so that its objects count in no figure above.
        let store_rate = store_create_rate(&admin, env_usize("SHOAL_STORE_CREATES", 20_000)).await;
        println!("store: Configs created by 64 clients beside the nodes, same run: {store_rate:.0}/s");
    }
    println!("nodes marked NotReady while their hollow agents ran: {}", not_ready.load(Ordering::Relaxed));
    drop(members);
    if std::env::var_os("SHOAL_BENCH_KEEP").is_some() {
        let _ = dir.keep();
    }
}
