//! The node's routing table: for every HTTP workload with instances on this node, which of them
//! are ready to serve. The ingress reads it on every request; instance tasks write it as they
//! become ready or go away.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use shoal_api::resources::service::ServiceSelector;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runtime::host::Sandbox;
use crate::runtime::http::{Body, HttpApp, RequestError};

/// One ready instance of an HTTP workload.
pub struct Endpoint {
    /// The instance's name.
    pub instance: String,
    /// Its pre-instantiated component.
    pub app: HttpApp,
    /// What each request's fresh instance may see.
    pub sandbox: Sandbox,
    /// How many of its requests run at once, and how many may wait (kept across the
    /// instance's code upgrades).
    pub gate: Arc<Gate>,
    /// Its workload's requests in flight on this node (for the autoscaler).
    pub meter: Arc<super::load::Meter>,
    /// The requests this instance answered (for its metrics).
    pub answered: Arc<AtomicU64>,
}

impl Endpoint {
    /// Serves `request` once the gate lets it in (a busy instance with a full queue refuses
    /// it); the guest then runs in its namespace's turns on the node's threads (its sandbox's
    /// [`crate::runtime::fair::Turns`]), and holds its place in the gate until it has ended,
    /// body included.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> Result<hyper::Response<Body>, RequestError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let busy = self.meter.busy();
        let answered = match self.gate.enter().await {
            Ok(permit) => self.app.handle_holding(request, &self.sandbox, (permit, busy)).await,
            Err(refused) => Err(refused),
        };
        self.meter.answered(match &answered {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.status(),
        });
        self.answered.fetch_add(1, Ordering::Relaxed);
        answered
    }
}

/// One instance's limit on requests in flight (like Knative's containerConcurrency), with a
/// bounded queue before it: a flood of one tenant's requests waits here, parked, instead of
/// taking the node's threads from its neighbours.
pub struct Gate {
    permits: Arc<Semaphore>,
    in_flight: u32,
    waiting: AtomicUsize,
    queue: usize,
}

impl Gate {
    /// At most `in_flight` requests at once, `queue` more waiting.
    pub fn new(in_flight: u32, queue: usize) -> Gate {
        let in_flight = in_flight.max(1);
        Gate { permits: Arc::new(Semaphore::new(in_flight as usize)), in_flight, waiting: AtomicUsize::new(0), queue }
    }

    async fn enter(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(RequestError::Busy { in_flight: self.in_flight, queued: self.queue });
        }
        // Counted out again however the wait ends (a caller that goes away drops it).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        Ok(self.permits.clone().acquire_owned().await.expect("the gate's semaphore is never closed"))
    }
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
    /// Told whenever an instance becomes ready (held requests look again).
    changed: tokio::sync::Notify,
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
        drop(table);
        self.changed.notify_waiters();
    }

    /// Resolves when an instance becomes ready after this is enabled (or first polled).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_lets_so_many_in_queues_so_many_and_refuses_the_rest() {
        let gate = Gate::new(2, 1);
        let (a, b) = (gate.enter().await.unwrap(), gate.enter().await.unwrap());
        let waiting = gate.enter();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "the third waits");
        assert!(
            matches!(gate.enter().await, Err(RequestError::Busy { in_flight: 2, queued: 1 })),
            "the fourth is refused"
        );
        drop(a);
        let c = waiting.await.unwrap();
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        drop((b, c));
        // A waiter that gives up leaves no count behind.
        let (x, y) = (gate.enter().await.unwrap(), gate.enter().await.unwrap());
        drop(tokio::time::timeout(std::time::Duration::from_millis(10), gate.enter()).await);
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        drop((x, y));
    }
}
