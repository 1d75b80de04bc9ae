//! Hollow nodes (after Kubernetes' kubemark): many simulated nodes in one process, without
//! wasmtime, for scale tests and benchmarks of the control plane.
//!
//! Each hollow node is what the control plane sees of a real one: its own node token (issued
//! with the admin token the process starts with), its own connection, its Node registered and
//! kept alive by [`heartbeat`], the instances bound to it listed and watched by [`follow`], and
//! their status pushed by [`report`]. Only the runtime is replaced: an instance is reported
//! Running and ready as soon as it is seen, and nothing runs. Services, the ingress and the
//! agent API are not simulated.
//!
//! One connection per node (HTTP/2 carries its watch, heartbeats and reports together) means
//! one file descriptor per node: N nodes need a soft open-file limit above N. Raising it here
//! would take `setrlimit`, i.e. `unsafe` or another crate, so [`HollowNodes::start`] only warns
//! when the limit is too low (`ulimit -n` raises it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_api::resources::instance::{Instance, InstanceKind, InstanceStatus, Phase};
use shoal_api::resources::node::Capacity;
use shoal_api::token::{Identity, TokenRequest};
use shoal_api::{Client, ClientConfig, ClientError, EventType, Name, Reason};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{heartbeat, report};
use crate::follow;

/// The label every hollow node carries (value `true`), so that workloads can select or avoid
/// them.
pub const HOLLOW_LABEL: &str = "shoal.dev/hollow";

/// Start-up is spread over at most this long, so that the registrations of many nodes do not
/// reach the control plane at once.
const STAGGER: Duration = Duration::from_secs(2);

/// The gap between two nodes' start-ups while fewer than `STAGGER` fill it: a handful of nodes
/// need not wait two seconds.
const STAGGER_STEP: Duration = Duration::from_millis(5);

/// Where hollow nodes claim their ingress is: the discard port, where nothing answers, since a
/// hollow node serves nothing.
const FAKE_ADDRESS: &str = "127.0.0.1:9";

/// File descriptors the process needs besides one per node (the admin connection, stdio, the
/// runtime's own).
const SPARE_FILES: u64 = 64;

/// How often a start-up call is tried while the control plane is unreachable or busy.
const ATTEMPTS: u32 = 5;

/// How to start hollow nodes.
#[derive(Clone)]
pub struct HollowConfig {
    /// The API server, its CA, and an admin token (which issues every node its own token).
    pub cluster: ClientConfig,
    /// How many nodes.
    pub count: usize,
    /// Node `i` (from 0) is called `<prefix>-<i>`.
    pub prefix: String,
    /// Labels of every node, besides [`HOLLOW_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// What the scheduler may bind to each node.
    pub capacity: Capacity,
    /// How often each node heartbeats.
    pub heartbeat: Duration,
}

/// Hollow nodes, registered and running.
pub struct HollowNodes {
    names: Vec<Name>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl HollowNodes {
    /// Issues every node its token and registers it (spread over up to two seconds), then
    /// starts its heartbeat and its instance follower. Fails if any node cannot register.
    pub async fn start(config: HollowConfig) -> anyhow::Result<HollowNodes> {
        warn_if_too_few_files(config.count);
        let admin = Client::new(&config.cluster)?;
        match admin.whoami().await.with_context(|| format!("contacting {}", config.cluster.server))? {
            Identity::Admin => {}
            other => bail!("--hollow needs the admin token, which issues each node its token; this is {other:?}"),
        }
        let config = Arc::new(config);
        let nodes = register_all(&config, &admin).await?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        for node in nodes {
            tasks.spawn(beat(node.clone(), config.clone(), shutdown.clone()));
            tasks.spawn(follow_instances(node, shutdown.clone()));
        }
        Ok(HollowNodes { names, shutdown, tasks })
    }

    /// How many nodes run.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no node runs (`--hollow 0`).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The nodes' names.
    pub fn names(&self) -> &[Name] {
        &self.names
    }

    /// Stops every node's heartbeat and follower; the Nodes stay registered, and the control
    /// plane sees them go NotReady, as it would real nodes that stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One hollow node, registered, with a client of its own.
#[derive(Clone)]
struct HollowNode {
    name: Name,
    client: Client,
    /// Its instances' reports, sent as the real agent sends them.
    reports: report::Reports,
}

/// Warns when the soft open-file limit leaves less than one connection per node.
fn warn_if_too_few_files(count: usize) {
    let needed = count as u64 + SPARE_FILES;
    if let Some(limit) = open_file_limit().filter(|&limit| limit < needed) {
        tracing::warn!(
            "the open-file limit is {limit}, and {count} hollow nodes need about {needed}; raise it (ulimit -n)"
        );
    }
}

/// The soft limit on open files (Linux's /proc/self/limits), if it is known and not unlimited.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Registers `config.count` nodes, node `i` after `i` steps of the stagger.
async fn register_all(config: &Arc<HollowConfig>, admin: &Client) -> anyhow::Result<Vec<HollowNode>> {
    let step = stagger_step(config.count);
    let mut joining = JoinSet::new();
    for index in 0..config.count {
        let (config, admin) = (config.clone(), admin.clone());
        let delay = step.saturating_mul(u32::try_from(index).unwrap_or(u32::MAX));
        joining.spawn(async move {
            tokio::time::sleep(delay).await;
            register(&config, &admin, index).await
        });
    }
    let mut nodes = Vec::with_capacity(config.count);
    // Dropping `joining` on the first error aborts the registrations still under way.
    while let Some(joined) = joining.join_next().await {
        nodes.push(joined.context("registering a hollow node panicked")??);
    }
    Ok(nodes)
}

/// The gap between two nodes' start-ups: `STAGGER_STEP`, or less when that would take longer
/// than `STAGGER` in all.
fn stagger_step(count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    STAGGER_STEP.min(STAGGER / count)
}

/// Issues node `index` its token and registers its Node.
async fn register(config: &HollowConfig, admin: &Client, index: usize) -> anyhow::Result<HollowNode> {
    let name = Name::new(format!("{}-{index}", config.prefix)).context("--hollow-prefix")?;
    let token = retrying(|| node_token(admin, &name)).await.with_context(|| format!("issuing a token for {name}"))?;
    // A client of its own, not `admin.with_token`, which would share the admin's connection:
    // each node holds its own connection to the API server, as a real node does.
    let client = Client::new(&ClientConfig { token, ..config.cluster.clone() })?;
    let mut labels = config.labels.clone();
    labels.insert(HOLLOW_LABEL.to_owned(), "true".to_owned());
    retrying(|| heartbeat::register(&client, &name, FAKE_ADDRESS, "", &labels))
        .await
        .with_context(|| format!("registering node {name}"))?;
    let reports = report::Reports::start(client.clone(), name.to_string());
    Ok(HollowNode { name, client, reports })
}

/// A node token for `name`; one left over from an earlier run, whose secret is lost, is revoked
/// and issued anew.
async fn node_token(admin: &Client, name: &Name) -> Result<String, ClientError> {
    let request = TokenRequest { name: name.clone(), namespaces: Vec::new(), node: true };
    match admin.create_token(&request).await {
        Ok(issued) => Ok(issued.token),
        Err(e) if e.reason() == Some(Reason::Conflict) => {
            admin.delete_token(name.as_str()).await?;
            Ok(admin.create_token(&request).await?.token)
        }
        Err(e) => Err(e),
    }
}

/// Whether trying again may help: the control plane was unreachable, or had no leader.
fn transient(error: &ClientError) -> bool {
    matches!(error, ClientError::Transport { .. }) || error.reason() == Some(Reason::Unavailable)
}

/// `call`, tried again after a growing pause while it fails transiently: a thousand nodes
/// registering can find the control plane busy, which should not end the whole run.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 1..ATTEMPTS {
        match call().await {
            Err(e) if transient(&e) => {
                tracing::info!("{e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            done => return done,
        }
    }
    call().await
}

/// Heartbeats like a real node, from a random point within the first interval on, so that the
/// beats of many nodes spread over the interval instead of arriving together.
async fn beat(node: HollowNode, config: Arc<HollowConfig>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(random_phase(config.heartbeat)) => {}
    }
    heartbeat::run(node.client, node.name, config.capacity.clone(), config.heartbeat, None, shutdown).await;
}

/// A random duration within `interval`. std's hasher keys are random per process (and differ
/// for every `RandomState`), which is randomness enough here without another crate.
fn random_phase(interval: Duration) -> Duration {
    use std::hash::BuildHasher;
    let bits = std::hash::RandomState::new().hash_one(0u8);
    // The top 53 bits as a fraction in [0, 1): what an f64 holds exactly.
    interval.mul_f64((bits >> 11) as f64 / (1u64 << 53) as f64)
}

/// Follows the instances bound to `node` until `shutdown`, reporting them Running.
async fn follow_instances(node: HollowNode, shutdown: CancellationToken) {
    let mut reporter = Reporter { node: node.clone(), reported: HashMap::new(), shutdown: shutdown.clone() };
    follow::follow::<InstanceKind, _>(&node.client, &mut reporter, &shutdown).await;
}

/// What a hollow node has reported, by `namespace/name`: the instance (by uid) it reported
/// Running and ready, and what stops that report if it is still being retried.
struct Reporter {
    node: HollowNode,
    reported: HashMap<String, Reported>,
    shutdown: CancellationToken,
}

struct Reported {
    uid: Option<String>,
    cancel: CancellationToken,
}

fn key(instance: &Instance) -> String {
    format!("{}/{}", instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()), instance.metadata.name)
}

/// The status the real agent reaches for an HTTP instance without a readiness probe: Running,
/// ready, started now; restarts and the last exit kept.
fn running(instance: &Instance) -> InstanceStatus {
    let stored = instance.status.clone().unwrap_or_default();
    InstanceStatus { phase: Phase::Running, ready: true, started_at: Some(report::now()), ..stored }
}

impl Reporter {
    fn bound_here(&self, instance: &Instance) -> bool {
        instance.spec.node.as_ref().is_some_and(|n| n == &self.node.name)
    }

    /// Reports `instance` Running and ready, once per uid: the watch echoing that report, or
    /// any later change, writes nothing. One stored as Running and ready already (by an earlier
    /// run) is not written again either.
    fn saw(&mut self, instance: Instance) {
        let key = key(&instance);
        if self.reported.get(&key).is_some_and(|r| r.uid == instance.metadata.uid) {
            return;
        }
        self.forget(&key);
        let cancel = self.shutdown.child_token();
        if !instance.is_ready() {
            // `push_status` sends each status it has not seen yet: this one, retried until the
            // control plane takes it, and then it ends, the sender being gone.
            let (_, mut status) = watch::channel(running(&instance));
            status.mark_changed();
            tokio::spawn(report::push_status(self.node.reports.clone(), instance.clone(), status, cancel.clone()));
        }
        self.reported.insert(key, Reported { uid: instance.metadata.uid, cancel });
    }

    /// Forgets a deleted instance, ending its report if that is still being retried.
    fn forget(&mut self, key: &str) {
        if let Some(reported) = self.reported.remove(key) {
            reported.cancel.cancel();
        }
    }
}

impl follow::Follower<InstanceKind> for Reporter {
    fn replace(&mut self, instances: Vec<Instance>) {
        let here: HashMap<String, Instance> =
            instances.into_iter().filter(|i| self.bound_here(i)).map(|i| (key(&i), i)).collect();
        let gone: Vec<String> = self.reported.keys().filter(|k| !here.contains_key(*k)).cloned().collect();
        for key in gone {
            self.forget(&key);
        }
        for instance in here.into_values() {
            self.saw(instance);
        }
    }

    fn change(&mut self, kind: EventType, instance: Instance) {
        match kind {
            EventType::Added | EventType::Modified if self.bound_here(&instance) => self.saw(instance),
            EventType::Added | EventType::Modified | EventType::Deleted => self.forget(&key(&instance)),
        }
    }

    fn lost(&mut self, error: &ClientError) {
        tracing::warn!("{}: watching instances: {error}; listing again when it is back", self.node.name);
    }
}
