//! `shoal rollout status workload/NAME`: follows a workload's rollout with a progress bar until
//! every replica runs the current spec and is available (exit 0), or until it fails: a new
//! instance keeps crashing or cannot be placed, or the deadline passes (exit 1, saying why).
//!
//! `rollout history` lists the specs the workload ran (its status keeps the last ten),
//! `rollout undo` puts an earlier one back (its replicas, autoscaling and rollout bounds stay
//! as they are now), and `rollout restart` replaces every instance with nothing else changed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_api::resources::instance::{Phase, TEMPLATE_LABEL, WORKLOAD_LABEL};
use shoal_api::resources::workload::{Workload, WorkloadSpec};
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
    /// List the specs the workload ran, or show one.
    History {
        /// `workload/NAME` (or just NAME).
        target: String,
        /// The namespace [default: the context's, else `default`].
        #[arg(short, long)]
        namespace: Option<String>,
        /// Show this revision's spec.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Put back an earlier spec (by default the one before the current).
    Undo {
        /// `workload/NAME` (or just NAME).
        target: String,
        /// The namespace [default: the context's, else `default`].
        #[arg(short, long)]
        namespace: Option<String>,
        /// The revision to go back to.
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// Replace every instance, as a rollout does, with nothing else changed.
    Restart {
        /// `workload/NAME` (or just NAME).
        target: String,
        /// The namespace [default: the context's, else `default`].
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

/// How often a change is tried again when the workload changed meanwhile.
const CONFLICT_RETRIES: usize = 5;

/// The workload's name in `target` (`workload/NAME` or `NAME`).
fn workload_name(target: &str) -> &str {
    target.strip_prefix("workload/").or_else(|| target.strip_prefix("workloads/")).unwrap_or(target)
}

async fn get_workload(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Workload> {
    match client.get(Kind::Workload, Some(namespace), name).await? {
        AnyObject::Workload(workload) => Ok(workload),
        _ => bail!("{name}: not a workload"),
    }
}

/// Changes the workload's spec with `change` (which may refuse), retried on conflicts.
async fn change_spec(
    client: &Client,
    namespace: &str,
    name: &str,
    change: impl Fn(&mut Workload) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for attempt in 1.. {
        let mut workload = get_workload(client, namespace, name).await?;
        change(&mut workload)?;
        // A spec write keeps the stored status (its revisions may be large): not sent back.
        workload.status = None;
        match client.put(&AnyObject::Workload(workload)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason() == Some(shoal_api::Reason::Conflict) && attempt < CONFLICT_RETRIES => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// What changed in `spec` from `before`, in a few words.
fn summary(spec: &WorkloadSpec, before: Option<&WorkloadSpec>) -> String {
    let Some(before) = before else { return "created".into() };
    let mut said = Vec::new();
    if spec.module != before.module {
        said.push(format!("module {}", spec.module.chars().take(19).collect::<String>()));
    }
    if spec.restarted_at != before.restarted_at {
        said.push(format!("restarted at {}", spec.restarted_at.as_deref().unwrap_or("-")));
    }
    let unchanged = |s: &WorkloadSpec| WorkloadSpec { module: String::new(), restarted_at: None, ..s.clone() };
    if unchanged(spec) != unchanged(before) {
        said.push("spec changed".into());
    }
    if said.is_empty() { "values from Secrets or Configs".into() } else { said.join(", ") }
}

async fn history(client: &Client, namespace: &str, name: &str, revision: Option<u64>) -> anyhow::Result<ExitCode> {
    let workload = get_workload(client, namespace, name).await?;
    let revisions = workload.status.map(|s| s.revisions).unwrap_or_default();
    if let Some(number) = revision {
        let Some(found) = revisions.iter().find(|r| r.revision == number) else {
            bail!("workload {namespace}/{name} has no revision {number} (rollout history lists them)");
        };
        print!("{}", serde_yaml::to_string(&found.spec).expect("specs serialize"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["REVISION", "CREATED", "CHANGE"].map(str::to_owned).to_vec()];
    for (i, r) in revisions.iter().enumerate() {
        let before = i.checked_sub(1).map(|b| &revisions[b].spec);
        let age = crate::output::age(r.created_at.as_deref());
        rows.push(vec![r.revision.to_string(), age, summary(&r.spec, before)]);
    }
    print!("{}", crate::output::align(rows));
    Ok(ExitCode::SUCCESS)
}

async fn undo(client: &Client, namespace: &str, name: &str, to: Option<u64>) -> anyhow::Result<ExitCode> {
    let revisions = get_workload(client, namespace, name).await?.status.map(|s| s.revisions).unwrap_or_default();
    let target = match to {
        Some(number) => revisions.iter().find(|r| r.revision == number),
        None => revisions.iter().rev().nth(1),
    };
    let Some(target) = target.cloned() else {
        match to {
            Some(number) => bail!("workload {namespace}/{name} has no revision {number} (rollout history lists them)"),
            None => bail!("workload {namespace}/{name} has no earlier revision to go back to"),
        }
    };
    change_spec(client, namespace, name, |workload| {
        let now = &workload.spec;
        // What it runs comes back; how many and how they roll stay as they are.
        workload.spec = WorkloadSpec {
            replicas: now.replicas,
            autoscale: now.autoscale.clone(),
            rollout: now.rollout.clone(),
            ..target.spec.clone()
        };
        Ok(())
    })
    .await?;
    println!("workload/{name} rolled back to revision {}", target.revision);
    Ok(ExitCode::SUCCESS)
}

async fn restart(client: &Client, namespace: &str, name: &str) -> anyhow::Result<ExitCode> {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    change_spec(client, namespace, name, |workload| {
        workload.spec.restarted_at = Some(at.clone());
        Ok(())
    })
    .await?;
    println!("workload/{name} restarted");
    Ok(ExitCode::SUCCESS)
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
        let client = connection.client()?;
        let (target, namespace, timeout) = match &self.action {
            RolloutAction::Status { target, namespace, timeout } => (target, namespace, timeout),
            RolloutAction::History { target, namespace, revision } => {
                let namespace = connection.namespace(namespace);
                return history(&client, &namespace, workload_name(target), *revision).await;
            }
            RolloutAction::Undo { target, namespace, to_revision } => {
                let namespace = connection.namespace(namespace);
                return undo(&client, &namespace, workload_name(target), *to_revision).await;
            }
            RolloutAction::Restart { target, namespace } => {
                return restart(&client, &connection.namespace(namespace), workload_name(target)).await;
            }
        };
        let namespace = &connection.namespace(namespace);
        let name = workload_name(target);
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
