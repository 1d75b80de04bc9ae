//! `shoal cordon NODE`, `shoal uncordon NODE`, `shoal drain NODE`: take a node out of
//! scheduling, put it back, or empty it. A drain marks the node draining (and unschedulable),
//! and the workload controller then moves each workload's instances off it as a rollout moves
//! them: a replacement elsewhere first within `maxSurge`, never more than `maxUnavailable` not
//! serving. `drain` waits until none is left; instances of no workload (Jobs' runs, bare
//! instances) it deletes only with `--force`, as kubectl does.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use shoal_api::resources::instance::{Instance, InstanceKind, WORKLOAD_LABEL};
use shoal_api::{AnyObject, Client, Kind, Reason};

use crate::connect::ConnectionArgs;

/// How often the node is changed again when its agent wrote it meanwhile.
const CONFLICT_RETRIES: usize = 10;

/// How often a drain looks at what is left.
const POLL: Duration = Duration::from_millis(250);

/// Flags of `shoal cordon` and `shoal uncordon`.
#[derive(clap::Args, Debug)]
pub struct CordonArgs {
    /// The node.
    node: String,
}

/// Flags of `shoal drain`.
#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The node.
    node: String,
    /// Give up after this long (the node stays cordoned and draining).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also delete instances no workload replaces (Jobs' runs, bare instances).
    #[arg(long)]
    force: bool,
}

/// Sets the node's `unschedulable` and `draining`.
async fn mark(client: &Client, node: &str, unschedulable: bool, draining: bool) -> anyhow::Result<()> {
    for attempt in 1.. {
        let AnyObject::Node(mut object) = client.get(Kind::Node, None, node).await? else {
            bail!("{node}: not a node")
        };
        if (object.spec.unschedulable, object.spec.draining) == (unschedulable, draining) {
            return Ok(());
        }
        (object.spec.unschedulable, object.spec.draining) = (unschedulable, draining);
        match client.put(&AnyObject::Node(object)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason() == Some(Reason::Conflict) && attempt < CONFLICT_RETRIES => continue,
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// The live instances bound to `node`.
async fn on_node(client: &Client, node: &str) -> anyhow::Result<Vec<Instance>> {
    let all = client.list_of::<InstanceKind>(None).await?.items;
    Ok(all
        .into_iter()
        .filter(|i| i.spec.node.as_ref().is_some_and(|n| n.as_str() == node) && !i.phase().is_terminal())
        .collect())
}

fn shown(instance: &Instance) -> String {
    format!("{}/{}", instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()), instance.metadata.name)
}

impl CordonArgs {
    pub async fn cordon(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        mark(&connection.client()?, &self.node, true, false).await?;
        println!("node/{} cordoned", self.node);
        Ok(ExitCode::SUCCESS)
    }

    pub async fn uncordon(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        mark(&connection.client()?, &self.node, false, false).await?;
        println!("node/{} uncordoned", self.node);
        Ok(ExitCode::SUCCESS)
    }
}

impl DrainArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        let started = Instant::now();
        let unmanaged = |i: &Instance| !i.metadata.labels.contains_key(WORKLOAD_LABEL);
        let before = on_node(&client, &self.node).await?;
        let strays: Vec<String> = before.iter().filter(|i| unmanaged(i)).map(shown).collect();
        if !strays.is_empty() && !self.force {
            bail!(
                "node {} runs instances no workload would replace: {} (--force deletes them)",
                self.node,
                strays.join(", ")
            );
        }
        mark(&client, &self.node, true, true).await?;
        println!("node/{} cordoned, draining {} instances", self.node, before.len());
        for instance in before.iter().filter(|i| unmanaged(i)) {
            let ns = instance.metadata.namespace.as_ref().map(|n| n.as_str());
            match client.delete(Kind::Instance, ns, instance.metadata.name.as_str()).await {
                Ok(_) => println!("instance/{} deleted", shown(instance)),
                Err(e) if e.reason() == Some(Reason::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut left = before.len();
        loop {
            let now = on_node(&client, &self.node).await?;
            if now.len() != left {
                left = now.len();
                println!("{left} left on node/{}", self.node);
            }
            if now.is_empty() {
                break;
            }
            if started.elapsed() >= self.timeout {
                let names: Vec<String> = now.iter().map(shown).collect();
                bail!("node {} still runs {} after {:?}: {}", self.node, names.len(), self.timeout, names.join(", "));
            }
            tokio::time::sleep(POLL).await;
        }
        println!("node/{} drained", self.node);
        Ok(ExitCode::SUCCESS)
    }
}
