//! The cluster DNS server: authoritative for the cluster domain (`cluster.local` by default),
//! answering from this control node's own replica of the store.
//!
//! - `<svc>.<ns>.svc.<domain>` A/AAAA: the addresses of the nodes that serve the Service.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV: one record per node, pointing at
//!   `<node>.node.<domain>` and the node proxy's port; the node addresses ride along as
//!   additional records.
//! - NXDOMAIN for names that do not exist, NODATA for names without the asked type, REFUSED
//!   outside the domain. UDP with EDNS (answers larger than the client's buffer are truncated
//!   and the client retries over TCP) and TCP.
//!
//! # Layout
//! - [`zone`]: the records, built in one go from the Services and then only read.
//! - [`feed`]: rebuilds the zone when a Service changes.
//! - [`handler`]: answers queries from the current zone.

pub mod feed;
pub mod handler;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;
use hickory_server::proto::rr::Name;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::StoreReader;

/// How long a TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How to serve DNS.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address to listen on (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// TTL of every record, in seconds.
    pub ttl: u32,
}

impl DnsConfig {
    /// The defaults: `cluster.local`, 5 s TTL, on `listen`.
    pub fn on(listen: SocketAddr) -> Self {
        DnsConfig { listen, domain: "cluster.local".into(), ttl: 5 }
    }
}

/// Parses a cluster domain into a fully qualified name.
pub fn parse_domain(domain: &str) -> anyhow::Result<Name> {
    let mut name = Name::from_ascii(domain).with_context(|| format!("cluster domain {domain:?} is not a DNS name"))?;
    name.set_fqdn(true);
    if name.is_root() {
        anyhow::bail!("cluster domain must not be the root");
    }
    Ok(name)
}

/// Binds UDP and TCP on one port and serves the zone until `shutdown`; returns the address.
pub async fn start(
    config: &DnsConfig,
    reader: StoreReader,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let domain = parse_domain(&config.domain)?;
    let (udp, tcp) = bind_pair(config.listen).await?;
    let addr = udp.local_addr()?;

    let (zone, revision) = feed::read_zone(&reader, &domain, config.ttl)?;
    let (zone_tx, zone_rx) = watch::channel(Arc::new(zone));
    tasks.spawn(feed::run(reader, domain, config.ttl, revision, zone_tx, shutdown.clone()));

    let mut server = Server::new(handler::ZoneHandler::new(zone_rx, metrics));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 32);
    tasks.spawn(async move {
        shutdown.cancelled().await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!("dns: shutting down: {e}");
        }
    });
    Ok(addr)
}

/// A UDP socket and a TCP listener on the same port; with port 0, retries until the port the
/// system picked for UDP is free for TCP too.
async fn bind_pair(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen).await.with_context(|| format!("binding DNS (udp) {listen}"))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding DNS (tcp) {addr}")),
        }
    }
    Err(last.expect("tried at least once")).context("no port free for both DNS udp and tcp")
}
