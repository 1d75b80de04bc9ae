//! The node agent (Shoal's kubelet): registers the node, heartbeats, watches the instances
//! bound to it and converges on them, serves their HTTP through the ingress, and reports back.
//!
//! # Layout
//! - [`heartbeat`]: the Node object and its liveness.
//! - [`fence`]: the fencing lease singleton instances run under.
//! - [`supervisor`]: list + watch of this node's instances; starts and stops instance tasks.
//! - [`instance`]: one instance's life (module, start, restart with back-off, status).
//! - [`modules`]: modules fetched by digest, verified, cached on disk, compiled once.
//! - [`report`]: instance status and Events, back to the control plane.
//! - [`api`]: the agent's HTTPS API for the control plane (instance logs), and for Service
//!   traffic other nodes forward.
//! - [`credentials`]: the node's certificate, renewed as it ages.
//! - [`hosted`]: what the node keeps of each instance (output, usage).
//! - [`metrics`]: what the node's `/metrics` shows.
//!
//! The ingress, Services and guests' calls to them are the [`crate::proxy`]'s, which the agent
//! starts and feeds (its instance tasks say which instances are ready).

pub mod api;
pub mod credentials;
pub mod events;
pub mod fence;
pub mod heartbeat;
pub mod hosted;
pub mod instance;
pub mod metrics;
pub mod modules;
pub mod probes;
pub mod report;
pub mod supervisor;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use shoal_api::agent::CredentialsRequest;
use shoal_api::resources::node::Capacity;
use shoal_api::{Client, Name};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::credentials::Credentials;
use self::modules::ModuleCache;
use crate::proxy::Proxy;
use crate::proxy::routes::Routes;
use crate::proxy::services::{PeerHealth, Services};
use crate::runtime::fair::FairGate;
use crate::runtime::{Runtime, RuntimeConfig};

/// How to start a node agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// A client of the API server, with this node's token.
    pub client: Client,
    /// The node's name (its token must be issued for it).
    pub name: Name,
    /// Labels for node selectors.
    pub labels: BTreeMap<String, String>,
    /// Where modules and compiled code are cached.
    pub data_dir: PathBuf,
    /// What the scheduler may bind to this node.
    pub capacity: Capacity,
    /// Where the ingress listens.
    pub ingress_listen: SocketAddr,
    /// Where the agent API listens (default: the ingress address, any free port).
    pub agent_listen: Option<SocketAddr>,
    /// Host name or address others reach this node's ingress by, when it listens on a wildcard.
    pub advertise_host: Option<String>,
    /// Domains the ingress routes `<workload>.<namespace>.<domain>` for.
    pub ingress_domains: Vec<String>,
    /// The cluster domain: `<svc>.<ns>.svc.<domain>` names a Service.
    pub cluster_domain: String,
    /// How often the node heartbeats.
    pub heartbeat: Duration,
    /// Per-request deadline of HTTP instances whose spec sets none.
    pub request_timeout: Duration,
    /// What the ingress lets its clients hold open.
    pub ingress_limits: crate::serve::ConnectionLimits,
    /// How often Events about its instances may be written.
    pub event_pacing: events::EventPacing,
    /// Requests an HTTP instance serves at once when its spec says nothing, and how many more
    /// may wait for it.
    pub instance_concurrency: u32,
    /// See `instance_concurrency`.
    pub instance_queue: usize,
    /// How many guests run on the node's threads at once (a fair share between namespaces
    /// when they are all taken; a guest waiting on I/O holds none).
    pub guest_slots: usize,
    /// How many of them one namespace may hold.
    pub namespace_guest_slots: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Guest slots when none are configured: the cores (the runtime's threads).
pub fn default_guest_slots() -> usize {
    cores()
}

/// One namespace's share when none is configured: one fewer than the cores (at least one), so
/// that a thread is always left for the other tenants.
pub fn default_namespace_guest_slots() -> usize {
    cores().saturating_sub(1).max(1)
}

/// What the agent's tasks share.
pub struct Shared {
    /// The API client (node token).
    pub client: Client,
    /// Its instances' status reports, on their way to the control plane.
    pub reports: report::Reports,
    /// This node's name.
    pub name: Name,
    /// The wasm runtime.
    pub runtime: Runtime,
    /// Modules by digest.
    pub modules: ModuleCache,
    /// The node's service proxy: ingress, Services, and the fences on their paths.
    pub proxy: Arc<Proxy>,
    /// Every instance it runs (its output and usage), by `namespace/name`.
    pub hosted: Mutex<HashMap<String, hosted::Hosted>>,
    /// Default per-request deadline.
    pub request_timeout: Duration,
    /// This node's certificate, renewed as it ages.
    pub credentials: Arc<Credentials>,
    /// Events about its instances, folded and paced.
    pub events: Arc<events::Events>,
    /// Requests an HTTP instance serves at once unless its spec says otherwise.
    pub instance_concurrency: u32,
    /// Requests that may wait for a busy HTTP instance.
    pub instance_queue: usize,
    /// Where instances' files from Secrets and Configs are written while they run.
    pub values_dir: PathBuf,
    /// The fencing lease singleton instances run under.
    pub fence: Arc<fence::Fence>,
}

/// A running node agent.
pub struct Agent {
    /// Where the ingress listens.
    pub ingress_addr: SocketAddr,
    /// Where the agent API listens.
    pub agent_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Binds the ingress, registers the node, and starts heartbeating and converging.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        let listener = TcpListener::bind(config.ingress_listen)
            .await
            .with_context(|| format!("binding the ingress listener {}", config.ingress_listen))?;
        let ingress_addr = listener.local_addr()?;
        let host = match (&config.advertise_host, ingress_addr.ip()) {
            (Some(h), _) => h.clone(),
            (None, ip) if ip.is_unspecified() => "127.0.0.1".into(),
            (None, ip) => ip.to_string(),
        };
        let address = format!("{host}:{}", ingress_addr.port());
        let agent_listen = config.agent_listen.unwrap_or(SocketAddr::new(ingress_addr.ip(), 0));
        let agent_listener = TcpListener::bind(agent_listen)
            .await
            .with_context(|| format!("binding the agent API listener {agent_listen}"))?;
        let agent_addr = agent_listener.local_addr()?;

        // Tenants' modules and their compiled code are its owner's only.
        shoal_api::config::private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let runtime_config = RuntimeConfig {
            cache_dir: Some(config.data_dir.join("compiled")),
            max_instances: config.capacity.instances.saturating_add(256),
            baseline: true,
            ..Default::default()
        };
        let runtime = Runtime::new(&runtime_config)?;
        let values_dir = config.data_dir.join("values");
        values::prepare_root(&values_dir).with_context(|| format!("clearing {}", values_dir.display()))?;
        let modules = ModuleCache::new(config.data_dir.join("modules"), runtime.clone(), config.client.clone())
            .context("creating the module cache")?;
        let joining = || format!("joining as node {} via {}", config.name, config.client.server());
        let request = CredentialsRequest { hosts: vec![host.trim_matches(['[', ']']).to_owned()] };
        let issued = config.client.node_credentials(config.name.as_str(), &request).await.with_context(joining)?;
        let revocations = Arc::new(crate::proxy::peers::Revocations::default());
        let credentials = Arc::new(Credentials::new(&issued, revocations.clone()).context("the node certificate")?);
        let agent_address = format!("{host}:{}", agent_addr.port());
        heartbeat::register(&config.client, &config.name, &address, &agent_address, &config.labels)
            .await
            .with_context(joining)?;

        let proxy = Arc::new(Proxy {
            node: config.name.to_string(),
            routes: Arc::new(Routes::default()),
            services: Arc::new(Services::default()),
            peer_health: PeerHealth::default(),
            peers: credentials.peers(),
            revocations,
            ingress_domains: config.ingress_domains.clone(),
            cluster_domain: config.cluster_domain.trim_end_matches('.').to_ascii_lowercase(),
            guest_slots: FairGate::new(config.guest_slots, config.namespace_guest_slots),
            loads: Default::default(),
            scalable: Default::default(),
            activator: crate::proxy::scalable::Activator::new(config.client.clone()),
            held: Default::default(),
            request_timeout: config.request_timeout,
        });
        let shared = Arc::new(Shared {
            client: config.client.clone(),
            reports: report::Reports::start(config.client.clone(), config.name.to_string()),
            name: config.name.clone(),
            runtime,
            modules,
            proxy: proxy.clone(),
            hosted: Mutex::new(HashMap::new()),
            request_timeout: config.request_timeout,
            credentials: credentials.clone(),
            events: events::Events::new(config.event_pacing),
            instance_concurrency: config.instance_concurrency,
            instance_queue: config.instance_queue,
            values_dir,
            fence: Arc::default(),
        });
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::proxy::ingress::serve(listener, proxy.clone(), config.ingress_limits, shutdown.clone()));
        tasks.spawn(crate::proxy::services::run(
            config.client.clone(),
            proxy.services.clone(),
            config.name.to_string(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::proxy::scalable::run(config.client.clone(), proxy.scalable.clone(), shutdown.clone()));
        tasks.spawn(heartbeat::run(
            config.client.clone(),
            config.name.clone(),
            config.capacity.clone(),
            config.heartbeat,
            Some((proxy.clone(), shared.fence.clone())),
            shutdown.clone(),
        ));
        tasks.spawn(supervisor::run(shared.clone(), shutdown.clone()));
        tasks.spawn(shared.events.clone().run(config.client.clone(), shutdown.clone()));
        tasks.spawn(credentials::renew(
            config.client.clone(),
            config.name.to_string(),
            request.hosts[0].clone(),
            credentials.clone(),
            Duration::from_secs(issued.renew_after_secs.max(1)),
            shutdown.clone(),
        ));
        let tls = credentials.server_config();
        tasks.spawn(shoal_api::serve::serve_tls(
            agent_listener,
            tls,
            api::router(shared.clone()),
            shoal_api::serve::ConnectionLimits::default(),
            shutdown.clone(),
        ));
        Ok(Agent { ingress_addr, agent_addr, shared, shutdown, tasks })
    }

    /// What the agent's tasks share (for `shoal dev` and tests in this process).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every instance and the listeners.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
