//! shoal-control: the control plane. One process per control node; 1, 3 or 5 of them form a
//! raft cluster.
//!
//! # Layout
//! - [`store`]: openraft over redb; the only place state lives.
//! - [`blobs`]: module bytes, beside raft: durable on a quorum before their record is written.
//! - [`backup`]: a cluster's objects and modules in one file, and restoring one.
//! - [`api`]: the REST API server (axum) over HTTPS.
//! - [`raft_service`]: the raft listener, where control nodes talk to each other.
//! - [`pki`]: the cluster CA, certificates and tokens.
//! - [`controllers`]: the scheduler and the reconcile loops, active on the raft leader.
//! - [`liveness`]: node heartbeats, held in the leader's memory.
//! - [`load`]: autoscaled workloads' load, reported with the heartbeats, held beside them.
//! - [`metrics`]: what `GET /metrics` shows.
//! - [`stamp`]: uid and times, decided before a write is proposed.
//! - [`dns`]: the cluster DNS server, answering from the local replica.
//!
//! [`ControlPlane::start`] wires them together.

// openraft's storage traits return its `StorageError` (over 200 bytes) by value; boxing it in
// our helpers would only add an allocation on the error path of every call that feeds them.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod backup;
pub mod blobs;
pub mod controllers;
pub mod dns;
pub mod liveness;
pub mod load;
pub mod metrics;
pub mod pki;
pub mod raft_service;
pub mod sealing;
pub mod stamp;
pub mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use shoal_api::ClientConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::pki::Pki;
use crate::store::peer::PeerClient;
use crate::store::{MemberId, Store, StoreOptions};

/// How to start a control node.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Raft member id, unique in the cluster.
    pub id: MemberId,
    /// Where the store and (by default) the PKI live.
    pub data_dir: PathBuf,
    /// Where the cluster CA and tokens live; default `<data_dir>/pki`. Every control node of
    /// one cluster uses the same contents.
    pub pki_dir: Option<PathBuf>,
    /// Address of the API server.
    pub api_listen: SocketAddr,
    /// Address of the raft listener.
    pub raft_listen: SocketAddr,
    /// Host name or address other members and clients reach this node by, when the listen
    /// address is a wildcard.
    pub advertise_host: Option<String>,
    /// Founding members, id → raft address (`host:port`); empty for a one-member cluster.
    pub peers: BTreeMap<MemberId, String>,
    /// Raft address of a member of an existing cluster to join.
    pub join: Option<String>,
    /// Neither found nor join a cluster: wait to be added (`shoal member add|replace`), or
    /// start on a data directory that holds a store already (a restored backup).
    pub standby: bool,
    /// How many revisions of history watches can resume from.
    pub history_revisions: u64,
    /// How many log entries since the last snapshot make the next one.
    pub snapshot_every: u64,
    /// Bytes kept free on the data directory's file system: below it, writes are refused
    /// (see `store::disk`).
    pub disk_reserve: u64,
    /// Raft's heartbeat interval (see `store::StoreOptions::raft_heartbeat`).
    pub raft_heartbeat: std::time::Duration,
    /// Tunables of the scheduler and controllers.
    pub controllers: controllers::ControllerOptions,
    /// The cluster DNS server, if this node serves one.
    pub dns: Option<dns::DnsConfig>,
    /// The settings admission checks writes against (ingress and cluster domains).
    pub admission: api::admission::Admission,
    /// How many watches one tenant or node may hold open at once.
    pub max_watches_per_principal: usize,
    /// How many connections to the API one tenant or node may hold open at once.
    pub max_connections_per_principal: usize,
    /// How long a watch may go without a line before it is sent a bookmark.
    pub watch_bookmark_interval: std::time::Duration,
    /// Connections the API listener holds at once, and how long one may sit idle.
    pub api_limits: shoal_api::serve::ConnectionLimits,
    /// How long a node certificate is valid (nodes renew at a third of it).
    pub node_cert_validity: std::time::Duration,
}

impl ControlConfig {
    /// A one-member cluster in `data_dir`, listening on loopback ports chosen by the system.
    pub fn local(data_dir: PathBuf) -> Self {
        ControlConfig {
            id: 1,
            data_dir,
            pki_dir: None,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            raft_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            peers: BTreeMap::new(),
            join: None,
            standby: false,
            history_revisions: 100_000,
            snapshot_every: 5000,
            disk_reserve: 128 << 20,
            raft_heartbeat: std::time::Duration::from_millis(50),
            controllers: controllers::ControllerOptions::default(),
            dns: None,
            admission: api::admission::Admission::default(),
            max_watches_per_principal: 64,
            max_connections_per_principal: 256,
            watch_bookmark_interval: std::time::Duration::from_secs(10),
            api_limits: shoal_api::serve::ConnectionLimits { max_connections: 20_000, ..Default::default() },
            node_cert_validity: pki::NODE_CERT_VALIDITY,
        }
    }
}

/// A running control node.
pub struct ControlPlane {
    /// Where the API server listens.
    pub api_addr: SocketAddr,
    /// Where the raft listener listens.
    pub raft_addr: SocketAddr,
    /// Where the DNS server listens (UDP and TCP), when it runs.
    pub dns_addr: Option<SocketAddr>,
    store: Arc<Store>,
    pki: Arc<Pki>,
    advertise_host: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

fn advertised(addr: SocketAddr, host: &Option<String>) -> String {
    match (host, addr.ip()) {
        (Some(h), _) => h.clone(),
        (None, ip) if ip.is_unspecified() => "127.0.0.1".into(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        (None, ip) => ip.to_string(),
    }
}

impl ControlPlane {
    /// Starts a control node: loads or makes the PKI, opens the store, starts raft and both
    /// listeners, and joins or founds the cluster.
    pub async fn start(config: ControlConfig) -> anyhow::Result<ControlPlane> {
        shoal_api::client::install_crypto_provider();
        shoal_api::config::private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let pki_dir = config.pki_dir.clone().unwrap_or_else(|| config.data_dir.join("pki"));
        let pki = Arc::new(Pki::load_or_create(&pki_dir).context("loading the cluster PKI")?);

        let api_listener = TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("binding API listener {}", config.api_listen))?;
        let raft_listener = TcpListener::bind(config.raft_listen)
            .await
            .with_context(|| format!("binding raft listener {}", config.raft_listen))?;
        let (api_addr, raft_addr) = (api_listener.local_addr()?, raft_listener.local_addr()?);
        let advertise_host = advertised(api_addr, &config.advertise_host);
        let own_raft = format!("{}:{}", advertised(raft_addr, &config.advertise_host), raft_addr.port());

        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        names.extend([
            advertise_host.trim_matches(['[', ']']).to_owned(),
            advertised(raft_addr, &config.advertise_host).trim_matches(['[', ']']).to_owned(),
        ]);
        names.sort();
        names.dedup();
        let tls = pki.server_config(&names)?;

        let peers = PeerClient::new(&pki.ca_pem, &pki.cluster_token)?;
        let options = StoreOptions {
            id: config.id,
            history_revisions: config.history_revisions,
            snapshot_every: config.snapshot_every,
            disk_reserve: config.disk_reserve,
            raft_heartbeat: config.raft_heartbeat,
        };
        let store = Store::open(&config.data_dir.join("shoal.redb"), &options, peers.clone())
            .await
            .context("opening the store")?;
        let module_dir = config.data_dir.join("modules");
        let files =
            blobs::files::BlobDir::open(&module_dir).with_context(|| format!("opening {}", module_dir.display()))?;
        let blobs = blobs::Blobs::new(files, store.clone(), peers);

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let liveness = Arc::new(liveness::Liveness::new(config.controllers.node_grace));
        let load = Arc::new(load::Load::new(config.controllers.node_grace));
        let metrics = Arc::new(metrics::Metrics::new(store.commit_latency()));
        let leader_memory = raft_service::LeaderMemory { liveness: liveness.clone(), load: load.clone() };
        let raft_router = raft_service::router(store.clone(), blobs.clone(), leader_memory.clone(), &pki.cluster_token);
        tasks.spawn(shoal_api::serve::serve_tls(
            raft_listener,
            tls.clone(),
            raft_router,
            shoal_api::serve::ConnectionLimits::default(),
            shutdown.clone(),
        ));
        let hub = api::watch::WatchHub::start(
            store.reader().clone(),
            config.max_watches_per_principal,
            config.watch_bookmark_interval,
            shutdown.clone(),
        );
        let parts = api::ApiParts {
            store: store.clone(),
            pki: pki.clone(),
            memory: leader_memory,
            metrics: metrics.clone(),
            hub,
            blobs: blobs.clone(),
            admission: Arc::new(config.admission.clone()),
        };
        let api_router = api::router(
            parts,
            api::ApiLimits {
                node_cert_validity: config.node_cert_validity,
                max_connections_per_principal: config.max_connections_per_principal,
            },
        )?;
        tasks.spawn(shoal_api::serve::serve_tls(api_listener, tls, api_router, config.api_limits, shutdown.clone()));

        tasks.spawn(blobs.run(config.controllers.module_grace, shutdown.clone()));
        tasks.spawn(store.clone().report_disk(shutdown.clone()));
        tasks.spawn(liveness::confirm_leadership(store.clone(), liveness.clone(), shutdown.clone()));
        tasks.spawn(controllers::run(
            store.clone(),
            liveness,
            load,
            metrics.clone(),
            config.controllers.clone(),
            shutdown.clone(),
        ));
        let dns_addr = match &config.dns {
            Some(dns) => Some(dns::start(dns, store.reader().clone(), metrics, &mut tasks, shutdown.clone()).await?),
            None => None,
        };
        match &config.join {
            _ if config.standby => {}
            Some(via) => {
                let (store, via) = (store.clone(), via.clone());
                tasks.spawn(async move {
                    if let Err(e) = store.join(&via, &own_raft).await {
                        tracing::error!("joining the cluster via {via} failed: {e}");
                    }
                });
            }
            None => {
                let mut members = config.peers.clone();
                if members.is_empty() {
                    members.insert(config.id, own_raft);
                }
                store.bootstrap(members).await?;
            }
        }
        Ok(ControlPlane { api_addr, raft_addr, dns_addr, store, pki, advertise_host, shutdown, tasks })
    }

    /// The API server's URL.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.advertise_host, self.api_addr.port())
    }

    /// A client configuration for the cluster administrator.
    pub fn admin_client_config(&self) -> ClientConfig {
        ClientConfig { server: self.api_url(), ca: self.pki.ca_pem.clone(), token: self.pki.admin_token.clone() }
    }

    /// Fires once this member is removed from the control plane: its process should stop.
    pub fn removed(&self) -> CancellationToken {
        self.store.removed()
    }

    /// The store (for in-process users such as `shoal dev`).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stops serving and stops raft.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.store.shutdown().await;
    }
}
