//! The node's routing table: for every HTTP workload with instances on this node, which of them
//! are ready to serve. The ingress reads it on every request; instance tasks write it as they
//! become ready or go away.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use shoal_api::resources::service::ServiceSelector;

use crate::runtime::host::Sandbox;
use crate::runtime::http::HttpApp;

/// One ready instance of an HTTP workload.
pub struct Endpoint {
    /// The instance's name.
    pub instance: String,
    /// Its pre-instantiated component.
    pub app: HttpApp,
    /// What each request's fresh instance may see.
    pub sandbox: Sandbox,
}

#[derive(Default)]
struct Route {
    /// Labels of the workload's instances (what Service label selectors match).
    labels: BTreeMap<String, String>,
    /// Instances of the workload on this node, ready or not.
    members: usize,
    ready: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

/// What the routing table says about a workload.
pub enum Lookup {
    /// No instance of it is on this node.
    Unknown,
    /// It has instances here, none ready.
    NotReady,
    /// A ready instance (round robin).
    Ready(Arc<Endpoint>),
}

impl Route {
    fn pick(&self) -> Lookup {
        if self.ready.is_empty() {
            return Lookup::NotReady;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.ready.len();
        Lookup::Ready(self.ready[i].clone())
    }
}

/// Workloads by `(namespace, workload)`.
#[derive(Default)]
pub struct Routes {
    table: RwLock<HashMap<(String, String), Route>>,
}

type Key = (String, String);

impl Routes {
    /// An instance of the workload, with these labels, is now on this node (not yet ready).
    pub fn join(&self, key: &Key, labels: &BTreeMap<String, String>) {
        let mut table = self.table.write().expect("routes lock");
        let route = table.entry(key.clone()).or_default();
        route.members += 1;
        route.labels.clone_from(labels);
    }

    /// An instance of the workload left this node.
    pub fn leave(&self, key: &Key, instance: &str) {
        let mut table = self.table.write().expect("routes lock");
        if let Some(route) = table.get_mut(key) {
            route.ready.retain(|e| e.instance != instance);
            route.members = route.members.saturating_sub(1);
            if route.members == 0 {
                table.remove(key);
            }
        }
    }

    /// The instance is ready to serve.
    pub fn ready(&self, key: &Key, endpoint: Arc<Endpoint>) {
        let mut table = self.table.write().expect("routes lock");
        let route = table.entry(key.clone()).or_default();
        route.ready.retain(|e| e.instance != endpoint.instance);
        route.ready.push(endpoint);
    }

    /// The instance stopped being ready (its probe fails); it stays a member.
    pub fn unready(&self, key: &Key, instance: &str) {
        if let Some(route) = self.table.write().expect("routes lock").get_mut(key) {
            route.ready.retain(|e| e.instance != instance);
        }
    }

    /// Where a request for the workload goes.
    pub fn lookup(&self, namespace: &str, workload: &str) -> Lookup {
        let table = self.table.read().expect("routes lock");
        match table.get(&(namespace.to_owned(), workload.to_owned())) {
            None => Lookup::Unknown,
            Some(route) => route.pick(),
        }
    }

    /// Where a request for a Service goes on this node: a ready instance of a workload in
    /// `namespace` that `selector` selects (by name and labels).
    pub fn lookup_selected(&self, namespace: &str, selector: &ServiceSelector) -> Lookup {
        let table = self.table.read().expect("routes lock");
        let selects = |route: &Route| selector.labels.iter().all(|(k, v)| route.labels.get(k) == Some(v));
        if let Some(workload) = &selector.workload {
            return match table.get(&(namespace.to_owned(), workload.to_string())) {
                Some(route) if selects(route) => route.pick(),
                _ => Lookup::Unknown,
            };
        }
        let mut found = Lookup::Unknown;
        for ((ns, _), route) in table.iter() {
            if ns == namespace && selects(route) {
                match route.pick() {
                    ready @ Lookup::Ready(_) => return ready,
                    other => found = other,
                }
            }
        }
        found
    }

    /// How many workloads have a ready instance here.
    pub fn serving(&self) -> usize {
        self.table.read().expect("routes lock").values().filter(|r| !r.ready.is_empty()).count()
    }
}
