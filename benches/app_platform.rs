//! App-platform benchmarks against one real `shoal control` and one `shoal node` (release
//! build):
//!
//! - `cron`: a CronJob on a per-second schedule (`* * * * * *`, `concurrencyPolicy: Allow`)
//!   whose Job runs the worker command once; for each of `SHOAL_CRON_RUNS` (100) runs, the delay
//!   from its scheduled second (in its Job's name) until a watch of the instances sees its run
//!   Running: the scheduling, the Job, the instance, the bind, the start on the node and its
//!   report, end to end. Goal (issue 14): p99 at most 1 s.
//!
//! `cargo bench --bench app_platform [cron]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ControlProcess, NodeProcess};
use futures::StreamExt;
use shoal_api::resources::instance::{InstanceKind, Phase};
use shoal_api::resources::job::JOB_LABEL;

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("cron") {
        cron().await;
    }
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
