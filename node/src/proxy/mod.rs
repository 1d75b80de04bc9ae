//! The service proxy (Shoal's kube-proxy), and with it every fence between tenants on the
//! node's request paths, so that a reader finds them in one place:
//! - [`ingress`]: the node's HTTP listener, routing by `Host` (a Service's claimed hosts, its
//!   `<svc>.<ns>.<domain>` name, a public Service's cluster name);
//! - [`calls`]: guests' own calls to `<svc>.<ns>.svc.<cluster domain>`, admitted by the
//!   Service's `allowFromNamespaces`;
//! - [`forwarded`]: Service traffic another node sends here, checked again on arrival;
//! - [`peers`]: this node's client of other nodes, who the caller is, and the headers a
//!   caller may not set;
//! - [`services`], [`routes`]: the Services this node routes and the ready instances here;
//! - [`routes::Gate`]: per-instance concurrency (the node's threads are shared between
//!   namespaces by [`crate::runtime::fair`], which every guest runs under);
//! - [`load`], [`scalable`]: requests in flight per workload, for the autoscaler, and requests
//!   held for an autoscaled workload with no instance while one starts.
//!
//! A request for a Service goes to a ready instance on this node when there is one (in
//! process: no socket), else to another node that has one, balanced round robin. A peer whose
//! connection fails is set aside for a moment, and an idempotent request is retried on the next
//! one, so losing a node loses no GETs.

pub mod calls;
pub mod forwarded;
pub mod ingress;
pub mod load;
pub mod peer_tls;
pub mod peers;
pub mod routes;
pub mod scalable;
pub mod services;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;

use self::peers::{Caller, PeerClients, Revocations};
use self::routes::{Lookup, Routes};
use self::services::{PeerHealth, ServiceRoute, Services};
use crate::runtime::http::{Body, RequestError};

/// What the proxy routes by and through: one per node, shared by the ingress, the agent API's
/// forwarded traffic and every guest's calls.
pub struct Proxy {
    /// This node's name (its own endpoints are never peers; messages name it).
    pub node: String,
    /// Ready HTTP instances here, by workload; written by the agent's instance tasks.
    pub routes: Arc<Routes>,
    /// Every Service, as this node routes it.
    pub services: Arc<Services>,
    /// Which peers failed lately.
    pub peer_health: PeerHealth,
    /// This node's client of other nodes (with its current certificate, renewed by the agent).
    pub peers: Arc<PeerClients>,
    /// Nodes whose certificates are refused (the agent keeps it current from its heartbeats).
    pub revocations: Arc<Revocations>,
    /// Domains the ingress routes `<name>.<namespace>.<domain>` for.
    pub ingress_domains: Vec<String>,
    /// The cluster domain, lower case, without a trailing dot.
    pub cluster_domain: String,
    /// The node's threads as guests take turns on them (see [`crate::runtime::fair`]).
    pub guest_slots: Arc<crate::runtime::fair::FairGate>,
    /// Requests in flight per workload here.
    pub loads: load::Loads,
    /// The autoscaled workloads (kept current by a watch).
    pub scalable: Arc<scalable::Scalable>,
    /// Asks for instances of autoscaled workloads at zero.
    pub activator: scalable::Activator,
    /// Requests held for them.
    pub held: scalable::Held,
    /// How long a request is held when its workload sets no deadline.
    pub request_timeout: std::time::Duration,
}

impl Proxy {
    /// The load of the autoscaled workloads here, for the heartbeat.
    pub fn load_report(&self) -> shoal_api::agent::Heartbeat {
        let load = self.loads.report(|ns, name| self.scalable.contains(ns, name), std::time::Instant::now());
        shoal_api::agent::Heartbeat { load }
    }
}

/// Largest request body forwarded to another node (it is buffered, so that an idempotent
/// request can be sent again).
pub const MAX_FORWARDED_BODY: usize = 16 * 1024 * 1024;

/// Why a Service request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No instance of the Service is ready anywhere this node knows of.
    #[error("service {0} has no ready instance")]
    NoneReady(String),
    /// The local instance failed.
    #[error("{0}")]
    Local(#[from] RequestError),
    /// Every node tried failed.
    #[error("service {service}: no node answered ({last})")]
    Peers {
        /// Which Service.
        service: String,
        /// The last failure.
        last: String,
    },
    /// The request body could not be read or is too large to forward.
    #[error("request body: {0}")]
    Body(String),
    /// A request held for an autoscaled workload at zero did not go on.
    #[error("{0}")]
    Held(#[from] scalable::HoldError),
}

impl ProxyError {
    /// The status a caller should see.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::NoneReady(_) => 503,
            ProxyError::Local(e) => e.status(),
            ProxyError::Peers { .. } => 502,
            ProxyError::Body(_) => 413,
            ProxyError::Held(e) => e.status(),
        }
    }
}

/// Whether a request may be sent twice (RFC 9110 section 9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE, Method::PUT, Method::DELETE].contains(method)
}

/// Serves `request` for `service` from an instance on this node, if one is ready.
pub async fn serve_here<B>(
    proxy: &Proxy,
    service: &ServiceRoute,
    request: hyper::Request<B>,
) -> Result<Result<hyper::Response<Body>, RequestError>, hyper::Request<B>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    match proxy.routes.lookup_selected(&service.namespace, &service.selector) {
        Lookup::Ready(endpoint) => {
            let mut request = request;
            peers::strip_own(request.headers_mut());
            Ok(endpoint.handle(request).await)
        }
        Lookup::NotReady | Lookup::Unknown => Err(request),
    }
}

/// Serves `request` for `service`: here when an instance is ready, else on another node.
pub async fn serve<B>(
    proxy: &Proxy,
    service: &ServiceRoute,
    caller: &Caller,
    request: hyper::Request<B>,
) -> Result<hyper::Response<Body>, ProxyError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error> + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut request = match serve_here(proxy, service, request).await {
        Ok(answered) => return Ok(answered?),
        Err(request) => request,
    };
    let name = format!("{}/{}", service.namespace, service.name);
    let held;
    let mut service = service;
    if service.peers.is_empty() {
        // Nothing ready anywhere: an autoscaled workload it selects may be at zero.
        let at_zero = proxy.scalable.selected_at_zero(&service.namespace, &service.selector);
        if at_zero.is_empty() {
            return Err(ProxyError::NoneReady(name));
        }
        let (namespace, service_name) = (&service.namespace, &service.name);
        held = scalable::hold(proxy, &at_zero, || {
            let Some(fresh) = proxy.services.get(namespace, service_name) else { return scalable::Look::Gone };
            if matches!(proxy.routes.lookup_selected(namespace, &fresh.selector), Lookup::Ready(_))
                || !fresh.peers.is_empty()
            {
                return scalable::Look::Ready(fresh);
            }
            // Still held while one of its workloads is at zero.
            let waiting = at_zero.iter().any(|(ns, name)| proxy.scalable.at_zero(ns, name));
            if waiting { scalable::Look::Waiting } else { scalable::Look::Gone }
        })
        .await?;
        service = &*held;
        request = match serve_here(proxy, service, request).await {
            Ok(answered) => return Ok(answered?),
            Err(request) => request,
        };
    }
    let peers = service.peers_in_order(&proxy.peer_health);
    if peers.is_empty() {
        return Err(ProxyError::NoneReady(name));
    }
    let (head, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_FORWARDED_BODY)
        .collect()
        .await
        .map_err(|e| ProxyError::Body(e.to_string()))?
        .to_bytes();
    let retry = idempotent(&head.method);
    let mut last = String::new();
    for peer in peers {
        match proxy.peers.current().send(peer, (&service.namespace, &service.name), caller, &head, body.clone()).await {
            Ok(response) => {
                proxy.peer_health.answered(&peer.address);
                return Ok(response);
            }
            Err(e) => {
                tracing::info!("{name}: node {} at {} failed: {e}", peer.node, peer.address);
                proxy.peer_health.failed(&peer.address);
                last = format!("{} at {}: {e}", peer.node, peer.address);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(ProxyError::Peers { service: name, last })
}

/// The body type the agent API hands over, as the runtime takes it.
pub fn axum_body(body: axum::body::Body) -> impl hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> {
    body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(format!("request body: {e}"))))
}
