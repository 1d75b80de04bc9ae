//! The Services this node routes for, kept current by a watch: each one's selector (to find a
//! ready instance here), its endpoints on other nodes (to forward to when there is none here),
//! who may call it, and the extra ingress host names it answers to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use shoal_api::EventType;
use shoal_api::resources::service::{Service, ServiceKind, ServiceSelector};

use super::peers::Peer;
use crate::follow::Follower;

/// How long a peer whose connection failed is skipped.
const PEER_PENALTY: Duration = Duration::from_secs(2);

/// One Service, as this node routes it.
#[derive(Debug)]
pub struct ServiceRoute {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Which instances back it.
    pub selector: ServiceSelector,
    /// The other nodes that serve it.
    pub peers: Vec<Peer>,
    /// Namespaces besides its own whose guests may call it.
    pub allow_from: Vec<String>,
    /// Whether the ingress routes its cluster-internal name from outside.
    pub public: bool,
    /// The extra ingress hosts it claims.
    hosts: Vec<String>,
    /// When it was made (RFC 3339): of two Services claiming one host, the older has it.
    created: String,
    next: AtomicUsize,
}

impl ServiceRoute {
    fn new(service: &Service, own_node: &str) -> Option<ServiceRoute> {
        let namespace = service.metadata.namespace.as_ref()?.to_string();
        let endpoints = service.status.as_ref().map(|s| s.endpoints.as_slice()).unwrap_or_default();
        Some(ServiceRoute {
            namespace,
            name: service.metadata.name.to_string(),
            selector: service.spec.selector.clone(),
            peers: endpoints
                .iter()
                .filter(|e| e.node.as_str() != own_node)
                .filter_map(|e| Some(Peer { node: e.node.to_string(), address: e.peer.clone()? }))
                .collect(),
            allow_from: service.spec.allow_from_namespaces.iter().map(|n| n.to_string()).collect(),
            public: service.spec.public,
            hosts: service.spec.ingress_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            created: service.metadata.creation_timestamp.clone().unwrap_or_default(),
            next: AtomicUsize::new(0),
        })
    }

    /// Whether a guest in `namespace` may call this Service.
    pub fn admits(&self, namespace: &str) -> bool {
        namespace == self.namespace || self.allow_from.iter().any(|n| n == namespace)
    }

    /// Whether `caller` may reach this Service: a guest as [`ServiceRoute::admits`] says, a
    /// client from outside only if the Service is exposed (it claims ingress hosts, or is public).
    pub fn admits_caller(&self, caller: &super::peers::Caller) -> bool {
        match caller {
            super::peers::Caller::Namespace(ns) => self.admits(ns),
            super::peers::Caller::Outside => self.public || !self.hosts.is_empty(),
        }
    }

    /// The peers to try, in order: round robin across calls, peers that failed lately last.
    pub fn peers_in_order(&self, health: &PeerHealth) -> Vec<&Peer> {
        if self.peers.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<&Peer> =
            (0..self.peers.len()).map(|i| &self.peers[(start + i) % self.peers.len()]).collect();
        order.sort_by_key(|peer| health.failed_lately(&peer.address));
        order
    }
}

/// Peers whose connections failed, and when.
#[derive(Default)]
pub struct PeerHealth {
    failed: RwLock<HashMap<String, Instant>>,
}

impl PeerHealth {
    /// Remembers that a connection to `peer` failed.
    pub fn failed(&self, peer: &str) {
        self.failed.write().expect("peer health lock").insert(peer.to_owned(), Instant::now());
    }

    /// Forgets a failure: `peer` answered.
    pub fn answered(&self, peer: &str) {
        if self.failed.read().expect("peer health lock").contains_key(peer) {
            self.failed.write().expect("peer health lock").remove(peer);
        }
    }

    fn failed_lately(&self, peer: &str) -> bool {
        self.failed.read().expect("peer health lock").get(peer).is_some_and(|at| at.elapsed() < PEER_PENALTY)
    }
}

/// Every Service, by `(namespace, name)` and by ingress host.
#[derive(Default)]
pub struct Services {
    by_name: RwLock<HashMap<(String, String), Arc<ServiceRoute>>>,
    by_host: RwLock<HashMap<String, (String, String)>>,
    /// Told whenever a Service changes (held requests look again for its endpoints).
    changed: tokio::sync::Notify,
}

impl Services {
    /// The Service `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceRoute>> {
        self.by_name.read().expect("services lock").get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Resolves when a Service changes after this is enabled (or first polled).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The Service that lists `host` among its ingress hosts.
    pub fn by_host(&self, host: &str) -> Option<Arc<ServiceRoute>> {
        let key = self.by_host.read().expect("services lock").get(host).cloned()?;
        self.get(&key.0, &key.1)
    }

    fn put(&self, service: &Service, own_node: &str) {
        let Some(route) = ServiceRoute::new(service, own_node) else { return };
        let key = (route.namespace.clone(), route.name.clone());
        let mut by_name = self.by_name.write().expect("services lock");
        by_name.insert(key, Arc::new(route));
        *self.by_host.write().expect("services lock") = claims(&by_name);
        drop(by_name);
        self.changed.notify_waiters();
    }

    fn remove(&self, service: &Service) {
        let key = (
            service.metadata.namespace.as_ref().map_or("", |n| n.as_str()).to_owned(),
            service.metadata.name.to_string(),
        );
        let mut by_name = self.by_name.write().expect("services lock");
        by_name.remove(&key);
        *self.by_host.write().expect("services lock") = claims(&by_name);
    }
}

/// Which Service each ingress host goes to: admission refuses a host another Service claims,
/// but two claims made at once through different control members could both pass; then the
/// older Service keeps the host (and a later one never takes it over).
fn claims(by_name: &HashMap<(String, String), Arc<ServiceRoute>>) -> HashMap<String, (String, String)> {
    let mut routes: Vec<(&(String, String), &Arc<ServiceRoute>)> =
        by_name.iter().filter(|(_, r)| !r.hosts.is_empty()).collect();
    routes.sort_by(|a, b| (&a.1.created, a.0).cmp(&(&b.1.created, b.0)));
    let mut hosts = HashMap::new();
    for (key, route) in routes {
        for host in &route.hosts {
            hosts.entry(host.clone()).or_insert_with(|| key.clone());
        }
    }
    hosts
}

/// Feeds [`Services`] from the watch.
pub struct ServiceFollower {
    /// Where the routes go.
    pub services: Arc<Services>,
    /// This node's name (its own endpoint is never a peer).
    pub own_node: String,
}

impl Follower<ServiceKind> for ServiceFollower {
    fn replace(&mut self, services: Vec<Service>) {
        // Built aside and swapped in, so that routing never sees an empty table meanwhile.
        let by_name: HashMap<(String, String), Arc<ServiceRoute>> = services
            .iter()
            .filter_map(|s| ServiceRoute::new(s, &self.own_node))
            .map(|r| ((r.namespace.clone(), r.name.clone()), Arc::new(r)))
            .collect();
        let by_host = claims(&by_name);
        *self.services.by_name.write().expect("services lock") = by_name;
        *self.services.by_host.write().expect("services lock") = by_host;
        self.services.changed.notify_waiters();
    }

    fn change(&mut self, kind: EventType, service: Service) {
        match kind {
            EventType::Deleted => self.services.remove(&service),
            EventType::Added | EventType::Modified => self.services.put(&service, &self.own_node),
        }
    }
}

/// Follows the Services until `shutdown`.
pub async fn run(
    client: shoal_api::Client,
    services: Arc<Services>,
    own_node: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut follower = ServiceFollower { services, own_node };
    crate::follow::follow::<ServiceKind, _>(&client, &mut follower, &shutdown).await;
}
