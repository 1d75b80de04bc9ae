//! `shoal control`: one control node. Alone it is a one-member raft cluster; with `--peers` or
//! `--join` it is one member of several.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shoal_control::{ControlConfig, ControlPlane};

use crate::connect::ConnectionArgs;

/// Flags of `shoal control`.
#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// Raft member id, unique in the cluster.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Where the store and the cluster PKI are kept [default: ~/.local/share/shoal/control]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory with the cluster CA and tokens, shared by all control nodes of a cluster
    /// [default: DATA_DIR/pki; made on first start]
    #[arg(long, value_name = "DIR")]
    pki_dir: Option<PathBuf>,
    /// Address of the API server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7443")]
    api_listen: SocketAddr,
    /// Address of the raft listener, where control nodes talk to each other.
    #[arg(long, default_value = "127.0.0.1:7444")]
    raft_listen: SocketAddr,
    #[command(flatten)]
    dns: DnsArgs,
    /// Host name or address that clients and other members reach this node by.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Founding members of a multi-member cluster: `1=HOST:PORT,2=HOST:PORT,...` (raft
    /// addresses, this node's own included).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    peers: Option<String>,
    /// Join the cluster that has a member with this raft address.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "peers")]
    join: Option<String>,
    /// Neither found nor join a cluster: wait until `shoal member add` or `shoal member
    /// replace` adds this member (start it with the cluster's PKI, `--pki-dir`).
    #[arg(long, conflicts_with_all = ["peers", "join"])]
    standby: bool,
    /// How many revisions of change history watches can resume from.
    #[arg(long, default_value_t = 100_000)]
    history_revisions: u64,
    /// How many raft log entries since the last snapshot make the next one.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    snapshot_every: u64,
    /// Space kept free on the data directory's file system, e.g. 128Mi: while this member, or
    /// any voting member, has less, writes are refused (507) rather than risk a full disk under
    /// raft's log; they are taken again as soon as space is freed. Keep it above a snapshot's
    /// size.
    #[arg(long, default_value = "128Mi")]
    disk_reserve: shoal_api::quantity::Memory,
    /// Raft's heartbeat interval, e.g. 50ms; an election starts after 3 to 6 missed ones. It
    /// must exceed the round trip between members (raft gives up on a send after one interval):
    /// raise it for members far apart, at the cost of a slower failover. The same on every member.
    #[arg(long, default_value = "50ms", value_parser = crate::period::parse)]
    raft_heartbeat: std::time::Duration,
    /// How long a node may go without a heartbeat before it is marked NotReady and its
    /// instances move elsewhere, e.g. 10s (ten of the nodes' default 1 s heartbeats: a loaded
    /// node or control plane that is late by a few beats is not declared dead).
    #[arg(long, default_value = "10s", value_parser = crate::period::parse)]
    node_grace: std::time::Duration,
    /// How often the controllers look at every object, changed or not, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = crate::period::parse)]
    controller_resync: std::time::Duration,
    /// How long a module that no Workload or Instance uses is kept before its record goes
    /// (freeing its namespace's module storage) and then its bytes, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = crate::period::parse)]
    module_grace: std::time::Duration,
    /// How long an Event is kept after it last happened, e.g. 1h.
    #[arg(long, default_value = "1h", value_parser = crate::period::parse)]
    event_ttl: std::time::Duration,
    /// How long a Job waits after its first failed run before the next, e.g. 10s (doubling
    /// per failure, to at most 6m).
    #[arg(long, default_value = "10s", value_parser = crate::period::parse)]
    job_backoff: std::time::Duration,
    /// Extra ingress domain of the cluster's nodes (besides `localhost`): a namespace owns the
    /// ingress hosts `*.<namespace>.DOMAIN` without a grant.
    #[arg(long, value_name = "DOMAIN")]
    ingress_domain: Vec<String>,
    /// A registry (`HOST[:PORT]`) `oci://` modules may be pulled from, over HTTPS; none by
    /// default, so that no tenant can make the control plane fetch an address of its choosing.
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_registry: Vec<String>,
    /// As --allow-registry, over plain HTTP (a registry on loopback).
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_insecure_registry: Vec<String>,
    /// How many watches one tenant or node token may hold open at once (a node holds two).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_watches_per_principal: u32,
    /// How many connections to the API server one tenant or node token may hold open at once
    /// (a node holds one; the CLI one per command).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_principal: u32,
    /// How long a watch may go without a line before it is sent a bookmark line, e.g. 10s
    /// (clients take a watch silent for 30 s for dead).
    #[arg(long, default_value = "10s", value_parser = crate::period::parse)]
    watch_bookmark_interval: std::time::Duration,
    /// Connections the API server holds open at once (every node holds one; past the limit
    /// new ones wait in the kernel's backlog).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    api_max_connections: u32,
    /// How long an API connection may carry nothing before it is closed, e.g. 60s (watches
    /// send bookmarks and HTTP/2 connections are pinged well within it).
    #[arg(long, default_value = "60s", value_parser = crate::period::parse)]
    api_idle_timeout: std::time::Duration,
    /// How long a node certificate is valid, e.g. 12h; nodes renew theirs at a third of it.
    #[arg(long, default_value = "12h", value_parser = crate::period::parse)]
    node_cert_validity: std::time::Duration,
    /// Do not write the client config file.
    #[arg(long)]
    no_client_config: bool,
}

/// How long a removed member keeps serving before it stops, so that in-flight answers (the
/// one to the removal among them) reach their clients.
const REMOVED_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

fn parse_peers(spec: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            bail!("--peers: {part:?} is not ID=HOST:PORT");
        };
        let id: u64 = id.trim().parse().with_context(|| format!("--peers: {id:?} is not a member id"))?;
        if addr.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
            bail!("--peers: {addr:?} is not HOST:PORT");
        }
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            bail!("--peers: member id {id} appears twice");
        }
    }
    Ok(peers)
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("--data-dir not given and $HOME not set")?;
    Ok(PathBuf::from(home).join(".local/share/shoal/control"))
}

impl ControlArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        if self.node_cert_validity < std::time::Duration::from_secs(3) {
            bail!("--node-cert-validity: at least 3s (nodes renew at a third of it, every second at most)");
        }
        if self.api_idle_timeout <= self.watch_bookmark_interval {
            bail!(
                "--api-idle-timeout ({:?}) must be longer than --watch-bookmark-interval ({:?}), or quiet watches are cut",
                self.api_idle_timeout,
                self.watch_bookmark_interval
            );
        }
        let peers = self.peers.as_deref().map(parse_peers).transpose()?.unwrap_or_default();
        if !peers.is_empty() && !peers.contains_key(&self.id) {
            bail!("--peers must include this node's own id {}", self.id);
        }
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        let config = ControlConfig {
            id: self.id,
            data_dir: data_dir.clone(),
            pki_dir: self.pki_dir.clone(),
            api_listen: self.api_listen,
            raft_listen: self.raft_listen,
            advertise_host: self.advertise.clone(),
            peers,
            join: self.join.clone(),
            standby: self.standby,
            history_revisions: self.history_revisions,
            snapshot_every: self.snapshot_every,
            disk_reserve: self.disk_reserve.0,
            raft_heartbeat: self.raft_heartbeat,
            controllers: shoal_control::controllers::ControllerOptions {
                node_grace: self.node_grace,
                resync: self.controller_resync,
                module_grace: self.module_grace,
                event_ttl: self.event_ttl,
                job_backoff: self.job_backoff,
            },
            dns: self.dns.config()?,
            admission: shoal_control::api::admission::Admission {
                registries: shoal_control::api::oci::Registries::new(
                    &self.allow_registry,
                    &self.allow_insecure_registry,
                )
                .map_err(|e| anyhow::anyhow!("--allow-registry: {e}"))?,
                ..self.dns.admission(&self.ingress_domain)
            },
            max_watches_per_principal: self.max_watches_per_principal as usize,
            max_connections_per_principal: self.max_connections_per_principal as usize,
            watch_bookmark_interval: self.watch_bookmark_interval,
            api_limits: shoal_api::serve::ConnectionLimits {
                max_connections: self.api_max_connections as usize,
                idle_timeout: self.api_idle_timeout,
            },
            node_cert_validity: self.node_cert_validity,
        };
        let control = ControlPlane::start(config).await?;
        let client_config = control.admin_client_config();
        client_config.save(&data_dir.join("client.yaml"))?;
        // The config is written before the listeners are announced, so that whoever waits for
        // the announcement can use the CLI at once.
        if !self.no_client_config {
            let path = connection.config_path()?;
            client_config.save(&path)?;
            println!("client config written to {}", path.display());
        }
        println!("api listening on {}", control.api_url());
        println!("dashboard on {}/ui/ (log in with a token)", control.api_url());
        println!("raft listening on {}", control.raft_addr);
        announce_dns(&control);
        let removed = control.removed();
        tokio::select! {
            signal = wait_for_signal() => signal?,
            _ = removed.cancelled() => {
                eprintln!("this member was removed from the control plane; stopping");
                // The answer to the request that removed it (it may have led) is still on its way.
                tokio::time::sleep(REMOVED_DRAIN).await;
            }
        }
        eprintln!("shutting down");
        control.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// Flags of the cluster DNS server, shared by `shoal control` and `shoal dev`.
#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// Address of the cluster DNS server, UDP and TCP (port 0: any free port; `off`: no DNS).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5353")]
    dns_listen: String,
    /// The domain the cluster DNS server is authoritative for.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of the cluster DNS records, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    dns_ttl: u32,
}

impl DnsArgs {
    /// The DNS server's configuration, or None for `--dns-listen off`.
    pub fn config(&self) -> anyhow::Result<Option<shoal_control::dns::DnsConfig>> {
        if self.dns_listen == "off" {
            return Ok(None);
        }
        let listen: SocketAddr =
            self.dns_listen.parse().with_context(|| format!("--dns-listen: {:?} is not ADDR:PORT", self.dns_listen))?;
        shoal_control::dns::parse_domain(&self.cluster_domain).context("--cluster-domain")?;
        Ok(Some(shoal_control::dns::DnsConfig { listen, domain: self.cluster_domain.clone(), ttl: self.dns_ttl }))
    }

    /// Admission's settings: `localhost` and `extra` as ingress domains, this cluster domain.
    pub fn admission(&self, extra: &[String]) -> shoal_control::api::admission::Admission {
        shoal_control::api::admission::Admission {
            ingress_domains: std::iter::once("localhost".to_owned()).chain(extra.iter().cloned()).collect(),
            cluster_domain: self.cluster_domain.trim_end_matches('.').to_ascii_lowercase(),
            ..Default::default()
        }
    }

    /// The cluster domain nodes route `<svc>.<ns>.svc.<domain>` for.
    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }
}

/// Prints where DNS listens, when it does.
pub fn announce_dns(control: &ControlPlane) {
    if let Some(addr) = control.dns_addr {
        println!("dns listening on {addr} (udp, tcp)");
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_garbage() {
        let p = parse_peers("1=127.0.0.1:7001, 2=host:7002").unwrap();
        assert_eq!(p[&2], "host:7002");
        assert!(parse_peers("1=127.0.0.1").is_err());
        assert!(parse_peers("x=h:1").is_err());
        assert!(parse_peers("1=h:1,1=h:2").is_err());
    }
}
