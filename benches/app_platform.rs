//! App-platform benchmarks against one real `shoal control` and one `shoal node` (release
//! build):
//!
//! - `cron`: a CronJob on a per-second schedule (`* * * * * *`, `concurrencyPolicy: Allow`)
//!   whose Job runs the worker command once; for each of `SHOAL_CRON_RUNS` (100) runs, the delay
//!   from its scheduled second (in its Job's name) until a watch of the instances sees its run
//!   Running: the scheduling, the Job, the instance, the bind, the start on the node and its
//!   report, end to end. Goal (issue 14): p99 at most 1 s.
//!
//! - `scale-from-zero`: `SHOAL_ZERO_WORKLOADS` (100) autoscaled HTTP workloads at `min: 0`
//!   with no instance, their module already on the node (a workload of the same module runs);
//!   each gets one request through the ingress, timed from send to answer: held at the node,
//!   the ask to the control plane, the instance made, bound, started and ready, the request
//!   served. Beside it, in the same run, a request to the running workload (the anchor).
//!   Goal (issue 14): p50 at most 50 ms, p99 at most 200 ms.
//! - `autoscale`: a workload at `targetConcurrency: 2`, `min: 1`, under a step of load to 10x
//!   the target (20 clients, each with a 200 ms request always in flight): the time until the
//!   10 instances that needs are ready; then, the load stopped, the time until it is back at
//!   `min`, beside its stable window. Default node heartbeat (1 s), which carries the reports.
//!   Goal (issue 14): up within 5 s; back to min within the stable window.
//!
//! `cargo bench --bench app_platform [cron] [scale-from-zero] [autoscale]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ControlProcess, NodeProcess};
use futures::StreamExt;
use shoal_api::resources::instance::{InstanceKind, Phase};
use shoal_api::resources::job::JOB_LABEL;
use shoal_api::resources::workload::{Workload, WorkloadKind};

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("cron") {
        cron().await;
    }
    if wants("scale-from-zero") {
        scale_from_zero().await;
    }
    if wants("autoscale") {
        autoscale().await;
    }
}

/// Applies `yaml` (a file in `dir`) with the CLI.
fn apply(control: &ControlProcess, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    common::ok_stdout(&control.cli(&["apply", "-f", path.to_str().unwrap()]));
}

fn workload_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  module: {}\n{spec}---\n",
        shoal_guest_artifacts::TROUBLE
    )
}

/// The workloads in `default`, by name.
async fn workloads(client: &shoal_api::Client) -> BTreeMap<String, Workload> {
    let list = client.list_of::<WorkloadKind>(Some("default")).await.unwrap();
    list.items.into_iter().map(|w| (w.metadata.name.to_string(), w)).collect()
}

/// How many instances of `workload` are ready, and how many there are.
async fn instances(client: &shoal_api::Client, workload: &str) -> (usize, usize) {
    let list = client.list_of::<InstanceKind>(Some("default")).await.unwrap();
    let of: Vec<_> =
        list.items.iter().filter(|i| i.spec.workload.as_ref().is_some_and(|w| w.as_str() == workload)).collect();
    (of.iter().filter(|i| i.is_ready()).count(), of.len())
}

async fn timed_get(client: &reqwest::Client, ingress: &str, host: &str, path: &str) -> Duration {
    let started = std::time::Instant::now();
    let response = client.get(format!("http://{ingress}{path}")).header("host", host).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{host}{path}: {body}");
    started.elapsed()
}

async fn scale_from_zero() {
    let count: usize = std::env::var("SHOAL_ZERO_WORKLOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    // The module on the node, compiled: a workload of it runs.
    apply(&control, dir.path(), "warm", &workload_yaml("warm", "  replicas: 1\n"));
    let mut yaml = String::new();
    for i in 0..count {
        let spec =
            "  replicas: 0\n  autoscale:\n    min: 0\n    max: 1\n    targetConcurrency: 1\n    stableWindow: 10m\n";
        yaml.push_str(&workload_yaml(&format!("zero-{i}"), spec));
    }
    apply(&control, dir.path(), "zero", &yaml);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = workloads(&client).await;
        let at_zero = all.values().filter(|w| w.status.as_ref().and_then(|s| s.desired_replicas) == Some(0)).count();
        if at_zero == count && instances(&client, "warm").await.0 == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{at_zero} of {count} workloads at zero");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let instances_at_zero = || async {
        let list = client.list_of::<InstanceKind>(Some("default")).await.unwrap();
        list.items.iter().filter(|i| i.metadata.name.as_str().starts_with("zero-")).count()
    };
    assert_eq!(instances_at_zero().await, 0, "no instance before the first requests");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    timed_get(&http, &node.ingress, "warm.default.localhost", "/").await;
    let (mut cold, mut warm) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        cold.push(timed_get(&http, &node.ingress, &format!("zero-{i}.default.localhost"), "/").await);
        warm.push(timed_get(&http, &node.ingress, "warm.default.localhost", "/").await);
    }
    assert_eq!(instances_at_zero().await, count, "each request made its workload an instance");
    cold.sort();
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99) = (common::percentile(&cold, 0.50), common::percentile(&cold, 0.99));
    let (w50, w99) = (common::percentile(&warm, 0.50), common::percentile(&warm, 0.99));
    println!(
        "scale-from-zero: {count} workloads at zero, first request answered in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; a running instance (same run) p50 {:.2} ms, p99 {:.2} ms; ratio at p50 {:.0}x",
        ms(p50),
        ms(p99),
        ms(*cold.last().unwrap()),
        ms(w50),
        ms(w99),
        p50.as_secs_f64() / w50.as_secs_f64().max(1e-9),
    );
}

async fn autoscale() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let window = Duration::from_secs(10);
    let spec = "  replicas: 1\n  concurrency: 4\n  autoscale:\n    min: 1\n    max: 20\n    targetConcurrency: 2\n    stableWindow: 10s\n";
    apply(&control, dir.path(), "step", &workload_yaml("step", spec));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while instances(&client, "step").await.0 != 1 {
        assert!(std::time::Instant::now() < deadline, "the first instance did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (http, ingress, stop) = (http.clone(), node.ingress.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let url = format!("http://{ingress}/hold/0/200");
                match http.get(url).header("host", "step.default.localhost").send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => refused += 1,
                }
            }
            (ok, refused)
        }));
    }
    let mut up = None;
    while started.elapsed() < Duration::from_secs(30) {
        if instances(&client, "step").await.0 >= 10 {
            up = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let up = up.expect("10 instances were not ready within 30 s");
    let peak = instances(&client, "step").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for c in clients {
        let (o, r) = c.await.unwrap();
        ok += o;
        refused += r;
    }
    // The last requests ended as their clients saw them answered, a moment before this.
    let stopped = std::time::Instant::now();
    let (mut decided, mut down) = (None, None);
    while stopped.elapsed() < window * 3 && down.is_none() {
        let desired = workloads(&client).await["step"].status.as_ref().and_then(|s| s.desired_replicas);
        if decided.is_none() && desired == Some(1) {
            decided = Some(stopped.elapsed());
        }
        if instances(&client, "step").await.1 == 1 {
            down = Some(stopped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down = down.expect("not back at min within 3 stable windows");
    let decided = decided.unwrap_or(down);
    println!(
        "autoscale: a step to 10x targetConcurrency (20 in flight at 2): 10 instances ready {:.2} s after the step ({} ready, {} in all, a moment later; {ok} requests answered, {refused} refused meanwhile); back to min (1) decided {:.2} s and its instances gone {:.2} s after the load stopped, with a stable window of {:.0} s",
        up.as_secs_f64(),
        peak.0,
        peak.1,
        decided.as_secs_f64(),
        down.as_secs_f64(),
        window.as_secs_f64(),
    );
}

async fn cron() {
    let runs: usize = std::env::var("SHOAL_CRON_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let from = client.list_of::<InstanceKind>(Some("default")).await.unwrap().resource_version;
    let mut watch = Box::pin(client.watch_of::<InstanceKind>(Some("default"), from).await.unwrap());
    let yaml = format!(
        "apiVersion: shoal.dev/v1\nkind: CronJob\nmetadata:\n  name: tick\n  namespace: default\nspec:\n  \
         schedule: \"* * * * * *\"\n  successfulJobsHistoryLimit: 5\n  jobTemplate:\n    ttlAfterFinished: 10s\n    \
         template:\n      module: {}\n      env:\n      - name: COUNT\n        value: \"1\"\n      - name: INTERVAL_MS\n        value: \"1\"\n",
        shoal_guest_artifacts::WORKER
    );
    let path = dir.path().join("cron.yaml");
    std::fs::write(&path, yaml).unwrap();
    common::ok_stdout(&control.cli(&["apply", "-f", path.to_str().unwrap()]));

    // The delay of each run, by its Job's scheduled second.
    let mut delays: BTreeMap<u64, Duration> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(runs as u64 * 2 + 30);
    while delays.len() < runs {
        assert!(std::time::Instant::now() < deadline, "only {} runs seen", delays.len());
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await else { continue };
        let instance = event.unwrap().object;
        if instance.phase() != Phase::Running && instance.phase() != Phase::Succeeded {
            continue;
        }
        let seen = SystemTime::now();
        let Some(job) = instance.metadata.labels.get(JOB_LABEL) else { continue };
        let Some(second) = job.rsplit('-').next().and_then(|s| s.parse::<u64>().ok()) else { continue };
        let scheduled = UNIX_EPOCH + Duration::from_secs(second);
        delays.entry(second).or_insert_with(|| seen.duration_since(scheduled).unwrap_or_default());
    }
    // The first run can start before the watch is warm; the rest are what a schedule sees.
    let mut sorted: Vec<Duration> = delays.values().copied().skip(1).collect();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let seconds: Vec<u64> = delays.keys().copied().collect();
    let missed = seconds.windows(2).map(|w| w[1] - w[0] - 1).sum::<u64>();
    println!(
        "cron: {} runs on a per-second schedule; start delay after the scheduled time p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {missed} scheduled seconds between the first and last run made no run",
        sorted.len(),
        ms(common::percentile(&sorted, 0.50)),
        ms(common::percentile(&sorted, 0.99)),
        ms(*sorted.last().unwrap()),
    );
}
