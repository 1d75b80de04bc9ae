//! Control-plane write benchmark: object creates per second and p50/p99 latency against a
//! 3-member Shoal control plane and, in the same run, a 3-member etcd 3.4 cluster (both on
//! loopback, both fsyncing before they acknowledge), driven by the same load generator with
//! ~256-byte values at 1 and 64 concurrent clients. Then leader failover: SIGKILL of the leader
//! to the next successful write, for both.
//!
//! Run with `benches/control_plane.sh` (installs etcd-server if missing), or
//! `cargo bench --bench control_plane` with `etcd` on the PATH (etcd is skipped if absent).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::ControlProcess;

const RUN: Duration = Duration::from_secs(6);
const PAYLOAD: usize = 200;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One system under test: how to send the i-th write of client c.
trait Target: Send + Sync + 'static {
    fn request(&self, http: &reqwest::Client, client: usize, i: u64) -> reqwest::RequestBuilder;
}

/// Distinguishes the keys of one load run from another's, so that creates never collide.
static RUN_ID: AtomicU64 = AtomicU64::new(0);

fn run_id() -> u64 {
    RUN_ID.load(Ordering::Relaxed)
}

struct ShoalTarget {
    url: String,
    token: String,
}

impl Target for ShoalTarget {
    fn request(&self, http: &reqwest::Client, client: usize, i: u64) -> reqwest::RequestBuilder {
        let body = serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Namespace",
            "metadata": {"name": format!("b{}-{client}-{i}", run_id()), "annotations": {"payload": "x".repeat(PAYLOAD - 60)}}
        });
        http.post(format!("{}/api/v1/namespaces", self.url)).bearer_auth(&self.token).json(&body)
    }
}

struct EtcdTarget {
    url: String,
}

impl Target for EtcdTarget {
    fn request(&self, http: &reqwest::Client, client: usize, i: u64) -> reqwest::RequestBuilder {
        let body = serde_json::json!({
            "key": b64(format!("/bench/{}/{client}/{i}", run_id()).as_bytes()),
            "value": b64(&[b'x'; PAYLOAD]),
        });
        http.post(format!("{}/v3/kv/put", self.url)).json(&body)
    }
}

struct Stats {
    ops: u64,
    errors: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(target: Arc<dyn Target>, http: reqwest::Client, clients: usize, run: Duration) -> Stats {
    RUN_ID.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (target, http, stop, errors) = (target.clone(), http.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                match target.request(&http, c, i).send().await {
                    // The answer is read whole, as a client would (an HTTP/2 client that drops
                    // unread bodies resets their streams, and h2 closes a connection after 1024
                    // such resets: "too_many_internal_resets").
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error of this run: {}", error_chain(&e));
                            }
                        }
                    },
                    other => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            let what = match other {
                                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                                Err(e) => error_chain(&e),
                            };
                            eprintln!("first error of this run: {what}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    Stats { ops: all.len() as u64, errors: errors.load(Ordering::Relaxed), secs, p50: pct(0.50), p99: pct(0.99) }
}

/// An error with its sources, which say what actually went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

// ---- Shoal ----

struct ShoalCluster {
    members: Vec<ControlProcess>,
    pki: String,
}

impl ShoalCluster {
    fn start(dir: &Path) -> ShoalCluster {
        let pki = dir.join("m1/pki").to_str().unwrap().to_owned();
        let mut members = vec![ControlProcess::start(&dir.join("m1"), &["--id", "1"])];
        for id in ["2", "3"] {
            let join = members[0].raft_addr.clone();
            members.push(ControlProcess::start(
                &dir.join(format!("m{id}")),
                &["--id", id, "--join", &join, "--pki-dir", &pki],
            ));
        }
        ShoalCluster { members, pki }
    }

    /// The leader that every member agrees on; with `caught_up`, once every member has also
    /// applied the same revision (a healthy cluster, not one whose restarted member is still
    /// catching up).
    async fn leader(&self, caught_up: bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut views = Vec::new();
            for m in &self.members {
                views.push(
                    m.client()
                        .cluster_status()
                        .await
                        .ok()
                        .filter(|s| s.members.len() == 3)
                        .and_then(|s| s.leader.map(|l| (l, if caught_up { s.revision } else { 0 }))),
                );
            }
            if let Some(Some((l, _))) = views.first()
                && views.iter().all(|v| *v == views[0])
            {
                return *l as usize - 1;
            }
            assert!(Instant::now() < deadline, "no agreed shoal leader: {views:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---- etcd ----

struct EtcdCluster {
    children: Vec<Option<Child>>,
    client_urls: Vec<String>,
    args: Vec<Vec<String>>,
}

impl EtcdCluster {
    fn available() -> bool {
        Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success())
    }

    fn start(dir: &Path) -> EtcdCluster {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial = (0..3).map(|i| format!("e{i}=http://127.0.0.1:{}", peers[i])).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { children: Vec::new(), client_urls: Vec::new(), args: Vec::new() };
        for i in 0..3 {
            let client_url = format!("http://127.0.0.1:{}", clients[i]);
            let peer_url = format!("http://127.0.0.1:{}", peers[i]);
            let args = vec![
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.join(format!("e{i}")).to_str().unwrap().to_owned(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                peer_url,
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "bench".into(),
                "--log-level".into(),
                "error".into(),
            ];
            cluster.args.push(args);
            cluster.client_urls.push(client_url);
            cluster.children.push(None);
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let child = Command::new("etcd")
            .args(&self.args[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The leader, once every running member knows it and, with `caught_up`, has applied the
    /// same raft index (as for Shoal).
    async fn leader(&self, http: &reqwest::Client, caught_up: bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut views = Vec::new();
            for (i, url) in self.client_urls.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                let status =
                    http.post(format!("{url}/v3/maintenance/status")).json(&serde_json::json!({})).send().await;
                let view = match status {
                    Ok(r) => r.json::<serde_json::Value>().await.ok().map(|v| {
                        let is_leader = v["leader"].is_string() && v["leader"] == v["header"]["member_id"];
                        let applied = if caught_up { v["raftAppliedIndex"].clone() } else { serde_json::Value::Null };
                        (i, is_leader, v["leader"].clone(), applied)
                    }),
                    Err(_) => None,
                };
                views.push(view);
            }
            let agreed = views.iter().all(|v| {
                v.as_ref().is_some_and(|(_, _, leader, applied)| {
                    leader.is_string() && Some((leader, applied)) == views[0].as_ref().map(|(_, _, l, a)| (l, a))
                })
            });
            if agreed && let Some((i, ..)) = views.iter().flatten().find(|(_, is_leader, ..)| *is_leader) {
                return *i;
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Time from now until a write through one of `targets` succeeds.
async fn time_to_next_write(targets: &[Arc<dyn Target>], http: &reqwest::Client, tag: usize) -> Duration {
    let start = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let target = &targets[i as usize % targets.len()];
        if let Ok(r) = target.request(http, 10_000 + tag, i).timeout(Duration::from_millis(300)).send().await
            && r.status().is_success()
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no write succeeded within 30 s of the kill");
    }
}

fn print_row(system: &str, clients: usize, s: &Stats) {
    println!("| {system} | {clients} | {:.0} | {} | {} | {} |", s.ops as f64 / s.secs, ms(s.p50), ms(s.p99), s.errors);
}

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let shoal = ShoalCluster::start(&dir.path().join("shoal"));
    let leader = shoal.leader(true).await;
    let config = shoal.members[leader].client_config();
    // HTTP/1.1, a connection per client, as with etcd's gateway: with HTTP/2 every client would
    // share one connection (and one TLS stream to encrypt on each side).
    let shoal_http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(config.ca.as_bytes()).unwrap()])
        .http1_only()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let shoal_target: Arc<dyn Target> =
        Arc::new(ShoalTarget { url: shoal.members[leader].api_url.clone(), token: config.token.clone() });
    let plain_http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();

    let etcd = EtcdCluster::available().then(|| EtcdCluster::start(&dir.path().join("etcd")));
    let etcd_target: Option<Arc<dyn Target>> = match &etcd {
        Some(e) => {
            let l = e.leader(&plain_http, true).await;
            Some(Arc::new(EtcdTarget { url: e.client_urls[l].clone() }))
        }
        None => {
            eprintln!("etcd not found on PATH: measuring Shoal alone (benches/control_plane.sh installs it)");
            None
        }
    };

    println!("| system | clients | creates/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for clients in [1, 64] {
        // Warm up connections and caches, then measure; the two systems alternate.
        load(shoal_target.clone(), shoal_http.clone(), clients, Duration::from_millis(500)).await;
        let s = load(shoal_target.clone(), shoal_http.clone(), clients, RUN).await;
        print_row("shoal", clients, &s);
        if let Some(t) = &etcd_target {
            load(t.clone(), plain_http.clone(), clients, Duration::from_millis(500)).await;
            let e = load(t.clone(), plain_http.clone(), clients, RUN).await;
            print_row("etcd 3.4", clients, &e);
            ratios.push((clients, (s.ops as f64 / s.secs) / (e.ops as f64 / e.secs)));
        }
    }
    for (clients, r) in ratios {
        println!("\nshoal/etcd throughput ratio at {clients} client(s): {r:.2}");
    }

    // Failover: kill the leader, time the next successful write through the survivors; three
    // rounds from a caught-up cluster, then three with the leader killed as soon as the member
    // restarted in the round before agrees on it (it may still lack the last entries).
    println!("\n| system | failover (SIGKILL leader → next successful write) | right after a restart |\n|---|---|---|");
    let mut shoal = shoal;
    let mut shoal_times = Vec::new();
    for round in 0..6 {
        let leader = shoal.leader(round < 3).await;
        let survivors: Vec<Arc<dyn Target>> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| {
                Arc::new(ShoalTarget { url: shoal.members[i].api_url.clone(), token: config.token.clone() })
                    as Arc<dyn Target>
            })
            .collect();
        let (data_dir, raft_addr) = (shoal.members[leader].data_dir.clone(), shoal.members[leader].raft_addr.clone());
        shoal.members[leader].kill();
        shoal_times.push(time_to_next_write(&survivors, &shoal_http, round).await);
        let id = (leader + 1).to_string();
        let mut args = vec!["--id", id.as_str(), "--raft-listen", raft_addr.as_str()];
        if leader != 0 {
            args.extend(["--pki-dir", shoal.pki.as_str()]);
        }
        shoal.members[leader] = ControlProcess::start(&data_dir, &args);
    }
    print_failover("shoal", &shoal_times);
    if let Some(mut etcd) = etcd {
        let mut times = Vec::new();
        for round in 0..6 {
            let leader = etcd.leader(&plain_http, round < 3).await;
            let survivors: Vec<Arc<dyn Target>> = (0..3)
                .filter(|i| *i != leader)
                .map(|i| Arc::new(EtcdTarget { url: etcd.client_urls[i].clone() }) as Arc<dyn Target>)
                .collect();
            etcd.kill(leader);
            times.push(time_to_next_write(&survivors, &plain_http, round).await);
            etcd.spawn(leader);
        }
        print_failover("etcd 3.4", &times);
    }
}

/// A failover row: the three caught-up rounds, then the three right after a restart.
fn print_failover(system: &str, times: &[Duration]) {
    let join = |ds: &[Duration]| ds.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!("| {system} | {} ms | {} ms |", join(&times[..3]), join(&times[3..]));
}
