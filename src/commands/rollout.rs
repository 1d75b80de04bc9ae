//! `shoal rollout status workload/NAME`: follows a workload's rollout with a progress bar until
//! every replica runs the current spec and is available (exit 0), or until it fails: a new
//! instance keeps crashing or cannot be placed, or the deadline passes (exit 1, saying why).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_api::resources::instance::{Phase, TEMPLATE_LABEL, WORKLOAD_LABEL};
use shoal_api::resources::workload::Workload;
use shoal_api::{AnyObject, Client, Kind};

use crate::connect::ConnectionArgs;

/// Flags of `shoal rollout`.
#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    action: RolloutAction,
}

#[derive(clap::Subcommand, Debug)]
enum RolloutAction {
    /// Follow a rollout until it completes or fails.
    Status {
        /// `workload/NAME` (or just NAME).
        target: String,
        /// The namespace [default: the context's, else `default`].
        #[arg(short, long)]
        namespace: Option<String>,
        /// Give up after this long, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Restarts after which a crashing new instance fails the rollout.
const CRASH_LIMIT: u32 = 3;

/// Where a rollout stands.
enum Progress {
    /// `available` of `replicas` run the current spec and are available.
    Going {
        available: u32,
        replicas: u32,
        old: usize,
    },
    Done {
        replicas: u32,
    },
    Failed(String),
}

async fn progress(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Progress> {
    let AnyObject::Workload(workload) = client.get(Kind::Workload, Some(namespace), name).await? else {
        bail!("not a workload")
    };
    let workload: Workload = workload;
    let replicas = workload.spec.replicas;
    let status = workload.status.clone().unwrap_or_default();
    if status.observed_generation < workload.metadata.generation.unwrap_or(1) {
        return Ok(Progress::Going { available: 0, replicas, old: 0 });
    }
    let selector = format!("{WORKLOAD_LABEL}={name}");
    let instances = client.list(Kind::Instance, Some(namespace), Some(&selector)).await?.items;
    let mut hashes: Vec<&str> = Vec::new();
    for instance in &instances {
        let AnyObject::Instance(i) = instance else { continue };
        let hash = i.metadata.labels.get(TEMPLATE_LABEL).map_or("", String::as_str);
        hashes.push(hash);
        let phase = i.phase();
        let restarts = i.status.as_ref().map_or(0, |s| s.restarts);
        let crashing = phase == Phase::CrashLoopBackOff && restarts >= CRASH_LIMIT;
        if crashing || phase == Phase::Failed {
            let exit = i.status.as_ref().and_then(|s| s.last_exit.as_ref());
            let why = exit.map_or("no exit recorded".to_owned(), |e| format!("{}: {}", e.reason, e.message));
            return Ok(Progress::Failed(format!(
                "instance {} is {phase:?} after {restarts} restarts ({why})",
                i.metadata.name
            )));
        }
    }
    let updated = status.updated_replicas;
    let old = instances.len().saturating_sub(updated as usize);
    if updated == replicas && status.available_replicas == replicas && old == 0 {
        return Ok(Progress::Done { replicas });
    }
    Ok(Progress::Going { available: status.available_replicas.min(replicas), replicas, old })
}

impl RolloutArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let RolloutAction::Status { target, namespace, timeout } = &self.action;
        let namespace = &connection.namespace(namespace);
        let name = target.strip_prefix("workload/").or_else(|| target.strip_prefix("workloads/")).unwrap_or(target);
        let client = connection.client()?;
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} available {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("workload/{name}"));
        let deadline = Instant::now() + *timeout;
        loop {
            match progress(&client, namespace, name).await? {
                Progress::Done { replicas } => {
                    bar.set_length(u64::from(replicas));
                    bar.set_position(u64::from(replicas));
                    bar.finish_with_message("");
                    println!("workload/{name} successfully rolled out ({replicas} replicas)");
                    return Ok(ExitCode::SUCCESS);
                }
                Progress::Failed(why) => {
                    bar.abandon_with_message("failed");
                    eprintln!("rollout of workload/{name} failed: {why}");
                    return Ok(ExitCode::FAILURE);
                }
                Progress::Going { available, replicas, old } => {
                    bar.set_length(u64::from(replicas.max(1)));
                    bar.set_position(u64::from(available));
                    bar.set_message(if old > 0 { format!("({old} old still running)") } else { String::new() });
                }
            }
            if Instant::now() >= deadline {
                bar.abandon_with_message("timed out");
                eprintln!(
                    "rollout of workload/{name} did not complete within {}",
                    humantime::format_duration(*timeout)
                );
                return Ok(ExitCode::FAILURE);
            }
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
