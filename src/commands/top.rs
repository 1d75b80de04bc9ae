//! `shoal top nodes|workloads|instances`: requests per second, CPU and memory, taken from two
//! scrapes of every node's per-instance metrics (`GET /api/v1/nodes/{name}/metrics/resource`,
//! the admin's token) an interval apart, like `kubectl top` over the kubelet's resource metrics.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_api::Client;
use shoal_api::resources::node::Node;

use crate::connect::ConnectionArgs;
use crate::output::{align, rounded_bytes};

/// What `shoal top` shows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// Each node: its instances and what they use.
    #[value(alias = "node", alias = "no")]
    Nodes,
    /// Each workload, over every node.
    #[value(alias = "workload", alias = "wl")]
    Workloads,
    /// Each instance.
    #[value(alias = "instance", alias = "inst")]
    Instances,
}

/// Flags of `shoal top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// nodes, workloads or instances.
    #[arg(value_enum)]
    what: What,
    /// Namespace to show (workloads and instances) [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Show every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Time between the two scrapes that rates are taken over (e.g. `1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print no header row.
    #[arg(long)]
    no_headers: bool,
}

/// What one instance used, as one scrape saw it.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    cpu_seconds: f64,
    memory: f64,
    requests: f64,
}

/// An instance: (node, namespace, workload, name).
type InstanceKey = (String, String, String, String);

/// Every instance's reading on every node that answered, and why the others did not.
async fn scrape(client: &Client, nodes: &[String]) -> (BTreeMap<InstanceKey, Reading>, BTreeMap<String, String>) {
    let texts = futures::future::join_all(nodes.iter().map(|n| client.node_metrics(n, true))).await;
    let (mut readings, mut failures) = (BTreeMap::new(), BTreeMap::new());
    for (node, text) in nodes.iter().zip(texts) {
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                failures.insert(node.clone(), e.to_string());
                continue;
            }
        };
        let parsed = match prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) {
            Ok(parsed) => parsed,
            Err(e) => {
                failures.insert(node.clone(), format!("its metrics did not parse: {e}"));
                continue;
            }
        };
        for sample in parsed.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let label = |name| sample.labels.get(name).unwrap_or_default().to_owned();
            let key = (node.clone(), label("namespace"), label("workload"), label("instance"));
            let reading: &mut Reading = readings.entry(key).or_default();
            match sample.metric.as_str() {
                "shoal_node_instance_cpu_seconds_total" => reading.cpu_seconds = value,
                "shoal_node_instance_memory_bytes" => reading.memory = value,
                "shoal_node_instance_requests_total" => reading.requests = value,
                _ => {}
            }
        }
    }
    (readings, failures)
}

/// What one instance used over the interval: requests/s, cores, and memory at its end.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    instances: usize,
    requests: f64,
    cores: f64,
    memory: f64,
}

impl Rate {
    fn add(&mut self, other: Rate) {
        self.instances += other.instances;
        self.requests += other.requests;
        self.cores += other.cores;
        self.memory += other.memory;
    }

    fn cells(&self) -> [String; 3] {
        [
            format!("{:.1}", self.requests),
            format!("{}m", (self.cores * 1000.0).round() as u64),
            rounded_bytes(self.memory.max(0.0) as u64),
        ]
    }
}

/// The rates of the instances in `last`, from `first` (a counter that fell was reset: its
/// new value is all it counted since; an instance `first` lacks counts its memory only).
fn rates(
    first: &BTreeMap<InstanceKey, Reading>,
    last: BTreeMap<InstanceKey, Reading>,
    seconds: f64,
) -> Vec<(InstanceKey, Rate)> {
    let increase = |before: f64, after: f64| if after >= before { after - before } else { after };
    last.into_iter()
        .map(|(key, now)| {
            // One seen in the last scrape only has no rate yet: its counters are a lifetime's.
            let then = first.get(&key).copied().unwrap_or(now);
            let rate = Rate {
                instances: 1,
                requests: increase(then.requests, now.requests) / seconds,
                cores: increase(then.cpu_seconds, now.cpu_seconds) / seconds,
                memory: now.memory,
            };
            (key, rate)
        })
        .collect()
}

impl TopArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        let nodes: Vec<Node> = client
            .list_of::<shoal_api::resources::node::NodeKind>(None)
            .await
            .context("listing nodes (shoal top reads every node's metrics: the admin's token)")?
            .items;
        let names: Vec<String> = nodes.iter().map(|n| n.metadata.name.to_string()).collect();
        let started = Instant::now();
        let (first, _) = scrape(&client, &names).await;
        tokio::time::sleep(self.interval.saturating_sub(started.elapsed())).await;
        let (last, failures) = scrape(&client, &names).await;
        if let Some((node, failure)) = failures.first_key_value()
            && failures.len() == names.len()
        {
            bail!("node {node}: {failure} (shoal top reads every node's metrics: it needs the admin's token)");
        }
        for (node, failure) in &failures {
            eprintln!("warning: node {node}: {failure}");
        }
        let seconds = started.elapsed().as_secs_f64();
        let namespace = connection.namespace(&self.namespace);
        let shown = |ns: &str| self.all_namespaces || ns == namespace;
        let rates = rates(&first, last, seconds);
        let mut rows = Vec::new();
        match self.what {
            What::Nodes => {
                rows.push(cells(&["NAME", "INSTANCES", "REQUESTS/S", "CPU", "CPU%", "MEMORY", "MEMORY%"]));
                let mut per_node: BTreeMap<&str, Rate> = BTreeMap::new();
                for ((node, ..), rate) in &rates {
                    per_node.entry(node).or_default().add(*rate);
                }
                for node in &nodes {
                    let name = node.metadata.name.as_str();
                    if failures.contains_key(name) {
                        let mut row = vec![name.to_owned()];
                        row.resize(rows[0].len(), "<unknown>".into());
                        rows.push(row);
                        continue;
                    }
                    let rate = per_node.get(name).copied().unwrap_or_default();
                    let capacity = node.status.as_ref().map(|s| s.allocatable.clone()).unwrap_or_default();
                    let share = |used: f64, of: u64| match of {
                        0 => "-".to_owned(),
                        of => format!("{:.0}%", 100.0 * used / of as f64),
                    };
                    let [requests, cpu, memory] = rate.cells();
                    rows.push(vec![
                        name.to_owned(),
                        rate.instances.to_string(),
                        requests,
                        cpu,
                        share(rate.cores * 1000.0, capacity.cpu.0),
                        memory,
                        share(rate.memory, capacity.memory.0),
                    ]);
                }
            }
            What::Workloads => {
                rows.push(cells(&["NAMESPACE", "NAME", "INSTANCES", "REQUESTS/S", "CPU", "MEMORY"]));
                let mut per_workload: BTreeMap<(&str, &str), Rate> = BTreeMap::new();
                for ((_, ns, workload, _), rate) in &rates {
                    if shown(ns) {
                        per_workload.entry((ns, workload)).or_default().add(*rate);
                    }
                }
                for ((ns, workload), rate) in per_workload {
                    let mut row = vec![ns.to_owned(), workload.to_owned(), rate.instances.to_string()];
                    row.extend(rate.cells());
                    rows.push(row);
                }
            }
            What::Instances => {
                rows.push(cells(&["NAMESPACE", "NAME", "WORKLOAD", "NODE", "REQUESTS/S", "CPU", "MEMORY"]));
                let mut sorted: Vec<_> = rates.iter().filter(|((_, ns, ..), _)| shown(ns)).collect();
                sorted.sort_by(|a, b| (&a.0.1, &a.0.3).cmp(&(&b.0.1, &b.0.3)));
                for ((node, ns, workload, name), rate) in sorted {
                    let mut row = vec![ns.clone(), name.clone(), workload.clone(), node.clone()];
                    row.extend(rate.cells());
                    rows.push(row);
                }
            }
        }
        if rows.len() == 1 {
            eprintln!("nothing runs here to show");
            return Ok(ExitCode::SUCCESS);
        }
        if self.no_headers {
            rows.remove(0);
        }
        print!("{}", align(rows));
        Ok(ExitCode::SUCCESS)
    }
}

fn cells(header: &[&str]) -> Vec<String> {
    header.iter().map(|h| (*h).to_owned()).collect()
}
