//! `shoal node --join URL --token T`: a worker node. Registers with the control plane, runs the
//! instances bound to it, and serves their HTTP on the ingress.
//!
//! `shoal node --hollow N --join URL --token ADMIN`: N hollow nodes in this process instead, for
//! scale tests ([`shoal_node::hollow`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_api::quantity::{Cpu, Memory};
use shoal_api::resources::node::Capacity;
use shoal_api::token::Identity;
use shoal_api::{Client, ClientConfig, Name};
use shoal_node::agent::{Agent, AgentConfig};
use shoal_node::hollow::{HollowConfig, HollowNodes};

use crate::connect::ConnectionArgs;

/// Flags of `shoal node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// URL of an API server of the cluster, e.g. https://10.0.0.1:7443.
    #[arg(long, value_name = "URL")]
    join: String,
    /// A node token (`shoal token create NAME --node`); not the admin token (but with
    /// --hollow, the admin token: it issues every hollow node its own node token).
    #[arg(long, env = "SHOAL_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// The cluster CA certificate (PEM) [default: the CA in the client config file].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The node's name [default: the name its token was issued for].
    #[arg(long, conflicts_with = "hollow")]
    name: Option<Name>,
    /// Labels for node selectors: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...")]
    labels: Option<String>,
    /// Memory the scheduler may bind to this node [default: the machine's].
    #[arg(long)]
    capacity_memory: Option<Memory>,
    /// CPU the scheduler may bind to this node, in millicores [default: 1000m per core].
    #[arg(long)]
    capacity_cpu: Option<Cpu>,
    /// How many instances the scheduler may bind to this node.
    #[arg(long, default_value_t = 1000)]
    max_instances: u32,
    /// Where the ingress listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress_listen: SocketAddr,
    /// Host name or address other nodes reach this node's ingress by.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Extra ingress domain: `<workload>.<namespace>.DOMAIN` is routed (besides `localhost`).
    #[arg(long, value_name = "DOMAIN")]
    ingress_domain: Vec<String>,
    /// The cluster domain: `<svc>.<ns>.svc.DOMAIN` names a Service, for the ingress and for
    /// guests' own calls.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where modules and compiled code are cached [default: ~/.local/share/shoal/node-NAME].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How often to heartbeat, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = crate::period::parse)]
    heartbeat: Duration,
    /// Per-request deadline of HTTP workloads whose spec sets none, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Most connections the ingress holds open at once (past it, new ones wait).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    ingress_max_connections: u32,
    /// An ingress connection idle this long (nothing read or written, headers included) is
    /// closed, e.g. 60s; keep it above --request-timeout.
    #[arg(long, default_value = "60s", value_parser = crate::period::parse)]
    ingress_idle_timeout: Duration,
    /// One Event write per instance and reason at most this often (repeats meanwhile go into
    /// its count), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::period::parse)]
    event_interval: Duration,
    /// Requests an HTTP instance serves at once when its Workload sets no `concurrency`; more
    /// wait (see --instance-queue), so one tenant's flood does not take every thread.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    instance_concurrency: u32,
    /// Requests that may wait for a busy HTTP instance; past it callers get 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 100)]
    instance_queue: usize,
    /// Guests that run on this node's threads at once (one waiting on I/O holds none); when all
    /// are taken the next free one goes to the namespaces with waiting guests in turn.
    /// Default: the cores.
    #[arg(long)]
    guest_slots: Option<usize>,
    /// How many of those one namespace may hold at once, so that a flood of one tenant leaves
    /// threads to the others. Default: one fewer than the cores (at least 1).
    #[arg(long)]
    namespace_guest_slots: Option<usize>,
    /// Run N hollow nodes instead: simulated nodes without a runtime that register, heartbeat
    /// and report the instances bound to them Running, for scale tests. Labels, capacity and
    /// --heartbeat apply to each; the ingress, agent and data directory flags are unused.
    #[arg(long, value_name = "N")]
    hollow: Option<usize>,
    /// Hollow node i (from 0) is called PREFIX-i.
    #[arg(long, value_name = "PREFIX", default_value = "hollow")]
    hollow_prefix: String,
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(spec: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else { bail!("--labels: {part:?} is not KEY=VALUE") };
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

/// The machine's memory (from /proc/meminfo), or 4Gi if it cannot be read.
pub fn machine_memory() -> Memory {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    Memory(kib.map_or(4 << 30, |k| k * 1024))
}

/// 1000m per core of this machine.
pub fn machine_cpu() -> Cpu {
    Cpu(std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000)
}

impl NodeArgs {
    /// The cluster CA: `--ca`, else the client config file's.
    fn ca(&self, connection: &ConnectionArgs) -> anyhow::Result<String> {
        Ok(match &self.ca {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading --ca {}", path.display()))?,
            None => {
                let path = connection.config_path()?;
                ClientConfig::load(&path)
                    .with_context(|| format!("no --ca given, and no client config with a CA at {}", path.display()))?
                    .ca
            }
        })
    }

    fn labels(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(self.labels.as_deref().map(parse_labels).transpose()?.unwrap_or_default())
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            memory: self.capacity_memory.unwrap_or_else(machine_memory),
            cpu: self.capacity_cpu.unwrap_or_else(machine_cpu),
            instances: self.max_instances,
        }
    }

    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let ca = self.ca(connection)?;
        if let Some(count) = self.hollow {
            return self.run_hollow(count, ca).await;
        }
        let client = Client::new(&ClientConfig { server: self.join.clone(), ca, token: self.token.clone() })?;
        let name = match (client.whoami().await.with_context(|| format!("contacting {}", self.join))?, &self.name) {
            (Identity::Node { name }, None) => Name::new(name)?,
            (Identity::Node { name }, Some(given)) if given.as_str() != name => {
                bail!("--name {given} but the token was issued for node {name}")
            }
            (Identity::Node { .. }, Some(given)) => given.clone(),
            (other, _) => {
                bail!("--token is not a node token ({other:?}); issue one with `shoal token create NAME --node`")
            }
        };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("HOME").context("--data-dir not given and $HOME not set")?)
                .join(format!(".local/share/shoal/node-{name}")),
        };
        let config = AgentConfig {
            client,
            name: name.clone(),
            labels: self.labels()?,
            data_dir,
            capacity: self.capacity(),
            ingress_listen: self.ingress_listen,
            agent_listen: None,
            advertise_host: self.advertise.clone(),
            ingress_domains: std::iter::once("localhost".to_owned())
                .chain(self.ingress_domain.iter().cloned())
                .collect(),
            cluster_domain: self.cluster_domain.clone(),
            heartbeat: self.heartbeat,
            request_timeout: self.request_timeout,
            ingress_limits: shoal_node::serve::ConnectionLimits {
                max_connections: self.ingress_max_connections as usize,
                idle_timeout: self.ingress_idle_timeout,
            },
            event_pacing: shoal_node::agent::events::EventPacing { per_key: self.event_interval, ..Default::default() },
            instance_concurrency: self.instance_concurrency,
            instance_queue: self.instance_queue,
            guest_slots: self.guest_slots.unwrap_or_else(shoal_node::agent::default_guest_slots).max(1),
            namespace_guest_slots: self
                .namespace_guest_slots
                .unwrap_or_else(shoal_node::agent::default_namespace_guest_slots)
                .max(1),
        };
        let agent = Agent::start(config).await?;
        println!("node {name} joined {}", self.join);
        println!("ingress listening on http://{}", agent.ingress_addr);
        super::control::wait_for_signal().await?;
        eprintln!("shutting down");
        agent.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }

    /// Runs `count` hollow nodes until SIGINT or SIGTERM, which may also come while they start.
    async fn run_hollow(&self, count: usize, ca: String) -> anyhow::Result<ExitCode> {
        let config = HollowConfig {
            cluster: ClientConfig { server: self.join.clone(), ca, token: self.token.clone() },
            count,
            prefix: self.hollow_prefix.clone(),
            labels: self.labels()?,
            capacity: self.capacity(),
            heartbeat: self.heartbeat,
        };
        let nodes = tokio::select! {
            nodes = HollowNodes::start(config) => nodes?,
            signal = super::control::wait_for_signal() => {
                signal?;
                eprintln!("shutting down");
                return Ok(ExitCode::SUCCESS);
            }
        };
        // Tests and benchmarks wait for this line.
        println!("hollow nodes running: {}", nodes.len());
        super::control::wait_for_signal().await?;
        eprintln!("shutting down");
        nodes.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }
}
