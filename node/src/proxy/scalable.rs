//! Scale from zero at the node (what Knative's activator does, without another hop): the
//! autoscaled workloads, kept current by a watch; and for a request to one of them while none
//! of its instances is ready anywhere, a hold. The held request counts as load
//! ([`super::load`]), the node asks the control plane for an instance at once
//! ([`Activator`], not waiting for its next heartbeat), and the request goes on as soon as an
//! instance is ready here or the Service has one on another node.
//!
//! Bounded: at most [`MAX_HELD_PER_WORKLOAD`] requests wait per workload and
//! [`MAX_HELD_PER_NAMESPACE`] per namespace (more get a 503 with `Retry-After`), each at most
//! the node's request timeout, and none once its workload is gone, no longer autoscaled, or
//! ready elsewhere; at most one ask per workload per [`RESEND`], and [`MAX_ASKS_IN_FLIGHT`] at
//! once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shoal_api::EventType;
use shoal_api::resources::instance::WORKLOAD_LABEL;
use shoal_api::resources::service::ServiceSelector;
use shoal_api::resources::workload::{Workload, WorkloadKind};
use tokio::sync::Semaphore;

use super::Proxy;
use crate::follow::Follower;

type Key = (String, String);

/// The most requests held at once for one workload.
pub const MAX_HELD_PER_WORKLOAD: usize = 1000;

/// The most requests held at once for the workloads of one namespace.
pub const MAX_HELD_PER_NAMESPACE: usize = 2000;

/// How often a held request's workload is asked for again while it waits.
pub const RESEND: Duration = Duration::from_secs(1);

/// The most asks for instances in flight from this node at once.
pub const MAX_ASKS_IN_FLIGHT: usize = 64;

/// What the node knows of one autoscaled workload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScaleInfo {
    /// The labels its instances get (what Service selectors match).
    labels: BTreeMap<String, String>,
    /// Whether its status last said an instance is ready somewhere (then nothing is held).
    ready_somewhere: bool,
}

impl ScaleInfo {
    fn of(workload: &Workload) -> Option<ScaleInfo> {
        workload.spec.autoscale.as_ref()?;
        let mut labels = workload.metadata.labels.clone();
        labels.insert(WORKLOAD_LABEL.into(), workload.metadata.name.to_string());
        let status = workload.status.as_ref();
        Some(ScaleInfo {
            labels,
            ready_somewhere: status.is_some_and(|s| s.ready_replicas > 0 && s.desired_replicas != Some(0)),
        })
    }
}

/// Autoscaled workloads, by `(namespace, name)`.
#[derive(Default)]
pub struct Scalable {
    by_key: RwLock<HashMap<Key, ScaleInfo>>,
    /// Told whenever a workload changes (held requests look again).
    changed: tokio::sync::Notify,
}

impl Scalable {
    /// Whether `namespace/name` is autoscaled.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.by_key.read().expect("scalable lock").contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether `namespace/name` is autoscaled and has no instance ready anywhere.
    pub fn at_zero(&self, namespace: &str, name: &str) -> bool {
        let by_key = self.by_key.read().expect("scalable lock");
        by_key.get(&(namespace.to_owned(), name.to_owned())).is_some_and(|i| !i.ready_somewhere)
    }

    /// The autoscaled workloads with no instance ready anywhere that `selector` selects in
    /// `namespace`, in name order.
    pub fn selected_at_zero(&self, namespace: &str, selector: &ServiceSelector) -> Vec<Key> {
        let by_key = self.by_key.read().expect("scalable lock");
        let selects = |name: &str, info: &ScaleInfo| {
            !info.ready_somewhere
                && selector.workload.as_ref().is_none_or(|w| w.as_str() == name)
                && selector.labels.iter().all(|(k, v)| info.labels.get(k) == Some(v))
        };
        let mut found: Vec<Key> = match &selector.workload {
            // One lookup, not a scan, when the Service names its workload.
            Some(workload) => {
                let key = (namespace.to_owned(), workload.to_string());
                by_key.get(&key).filter(|info| selects(&key.1, info)).map(|_| key).into_iter().collect()
            }
            None => by_key
                .iter()
                .filter(|((ns, name), info)| ns == namespace && selects(name, info))
                .map(|(key, _)| key.clone())
                .collect(),
        };
        found.sort();
        found
    }

    /// Resolves when a workload changes after this is enabled (or first polled).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// Feeds [`Scalable`] from the watch of Workloads (keeping only autoscaled ones).
pub struct ScalableFollower {
    /// Where they go.
    pub scalable: Arc<Scalable>,
}

fn key_of(workload: &Workload) -> Key {
    let ns = workload.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
    (ns.to_owned(), workload.metadata.name.to_string())
}

impl Follower<WorkloadKind> for ScalableFollower {
    fn replace(&mut self, workloads: Vec<Workload>) {
        let by_key = workloads.iter().filter_map(|w| Some((key_of(w), ScaleInfo::of(w)?))).collect();
        *self.scalable.by_key.write().expect("scalable lock") = by_key;
        self.scalable.changed.notify_waiters();
    }

    fn change(&mut self, kind: EventType, workload: Workload) {
        let key = key_of(&workload);
        let info = (kind != EventType::Deleted).then(|| ScaleInfo::of(&workload)).flatten();
        let mut by_key = self.scalable.by_key.write().expect("scalable lock");
        let touched = match info {
            Some(info) => {
                let changed = by_key.get(&key) != Some(&info);
                by_key.insert(key, info);
                changed
            }
            None => by_key.remove(&key).is_some(),
        };
        drop(by_key);
        if touched {
            self.scalable.changed.notify_waiters();
        }
    }
}

/// Follows the Workloads until `shutdown`.
pub async fn run(client: shoal_api::Client, scalable: Arc<Scalable>, shutdown: tokio_util::sync::CancellationToken) {
    let mut follower = ScalableFollower { scalable };
    crate::follow::follow::<WorkloadKind, _>(&client, &mut follower, &shutdown).await;
}

/// Asks the control plane for instances of workloads this node holds requests for.
pub struct Activator {
    client: shoal_api::Client,
    /// When each workload was last asked for.
    asked: Mutex<HashMap<Key, Instant>>,
    in_flight: Arc<Semaphore>,
}

impl Activator {
    /// Asks through `client` (the node's token).
    pub fn new(client: shoal_api::Client) -> Self {
        Activator { client, asked: Mutex::default(), in_flight: Arc::new(Semaphore::new(MAX_ASKS_IN_FLIGHT)) }
    }

    /// Asks for an instance of the workload at `key`, unless it was asked for within
    /// [`RESEND`]; the ask runs on its own (the held request waits for an instance, not for it).
    pub fn ask(&self, key: &Key) {
        let now = Instant::now();
        {
            let mut asked = self.asked.lock().expect("activator lock");
            if asked.get(key).is_some_and(|at| now.saturating_duration_since(*at) < RESEND) {
                return;
            }
            if asked.len() >= 10_000 {
                asked.retain(|_, at| now.saturating_duration_since(*at) < RESEND);
            }
            asked.insert(key.clone(), now);
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            // Asked again by the next held request, or by this one within RESEND.
            self.asked.lock().expect("activator lock").remove(key);
            return;
        };
        let (client, key) = (self.client.clone(), key.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = client.activate(&key.0, &key.1).await {
                tracing::info!("asking for an instance of {}/{}: {e}", key.0, key.1);
            }
        });
    }
}

/// Why a held request did not go on.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// Too many requests already wait for this workload.
    #[error("{0} requests already wait for an instance of workload {1}")]
    Full(usize, String),
    /// Too many requests already wait for this namespace's workloads.
    #[error("{0} requests already wait for instances of namespace {1}'s workloads")]
    NamespaceFull(usize, String),
    /// No instance became ready in time.
    #[error("no instance of workload {1} became ready within {0:?}")]
    Timeout(Duration, String),
    /// The workload is no longer at zero without an instance here (deleted, no longer
    /// autoscaled, or ready on another node only).
    #[error("workload {0} has no ready instance on this node")]
    Elsewhere(String),
}

impl HoldError {
    /// The status a caller sees.
    pub fn status(&self) -> u16 {
        503
    }

    /// What a caller gets: a 503 that says why, with `Retry-After`.
    pub fn response(&self) -> hyper::Response<crate::runtime::http::Body> {
        let mut response = crate::runtime::http::text_response(self.status(), format!("{self}\n"));
        response.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
        response
    }
}

/// A place among a workload's held requests.
struct Place<'a> {
    held: &'a Mutex<Counts>,
    key: Key,
}

/// Held requests per workload and per namespace.
#[derive(Default)]
struct Counts {
    workloads: HashMap<Key, usize>,
    namespaces: HashMap<String, usize>,
}

fn count_down<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("held lock");
        count_down(&mut held.workloads, &self.key);
        count_down(&mut held.namespaces, &self.key.0);
    }
}

/// Requests held per workload.
#[derive(Default)]
pub struct Held {
    counts: Mutex<Counts>,
}

impl Held {
    fn take(&self, key: &Key) -> Result<Place<'_>, HoldError> {
        let mut counts = self.counts.lock().expect("held lock");
        let in_namespace = counts.namespaces.get(&key.0).copied().unwrap_or(0);
        if in_namespace >= MAX_HELD_PER_NAMESPACE {
            return Err(HoldError::NamespaceFull(in_namespace, key.0.clone()));
        }
        let count = counts.workloads.entry(key.clone()).or_default();
        if *count >= MAX_HELD_PER_WORKLOAD {
            return Err(HoldError::Full(*count, format!("{}/{}", key.0, key.1)));
        }
        *count += 1;
        *counts.namespaces.entry(key.0.clone()).or_default() += 1;
        Ok(Place { held: &self.counts, key: key.clone() })
    }
}

/// Where a held request stands.
pub enum Look<T> {
    /// It can go on, there.
    Ready(T),
    /// Not yet.
    Waiting,
    /// It is no longer held for: its workloads are not at zero without an instance here.
    Gone,
}

/// Holds a request for the workloads `keys` (at zero; the first is charged with it) until
/// `look` finds where it can go, asking for instances meanwhile; at most the node's request
/// timeout.
pub async fn hold<T>(proxy: &Proxy, keys: &[Key], mut look: impl FnMut() -> Look<T>) -> Result<T, HoldError> {
    let first = keys.first().expect("a request is held for at least one workload");
    let name = || format!("{}/{}", first.0, first.1);
    let _place = proxy.held.take(first)?;
    let _busy = proxy.loads.meter(first).busy();
    let timeout = proxy.request_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let routes_changed = proxy.routes.changed();
        let services_changed = proxy.services.changed();
        let workloads_changed = proxy.scalable.changed();
        tokio::pin!(routes_changed, services_changed, workloads_changed);
        routes_changed.as_mut().enable();
        services_changed.as_mut().enable();
        workloads_changed.as_mut().enable();
        match look() {
            Look::Ready(found) => return Ok(found),
            Look::Gone => return Err(HoldError::Elsewhere(name())),
            Look::Waiting => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(HoldError::Timeout(timeout, name()));
        }
        for key in keys {
            proxy.activator.ask(key);
        }
        tokio::select! {
            _ = routes_changed => {}
            _ = services_changed => {}
            _ = workloads_changed => {}
            _ = tokio::time::sleep_until(deadline.min(now + RESEND)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::Name;
    use shoal_api::resources::workload::WorkloadStatus;

    use super::*;

    fn workload(name: &str, autoscaled: bool, ready: u32, desired: u32) -> Workload {
        let mut w: Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "shop"}},
            "spec": {"module": "sha256:00"}
        }))
        .unwrap();
        if autoscaled {
            w.spec.autoscale = serde_json::from_value(serde_json::json!({"max": 3, "targetConcurrency": 1})).unwrap();
        }
        w.status =
            Some(WorkloadStatus { ready_replicas: ready, desired_replicas: Some(desired), ..Default::default() });
        w
    }

    #[test]
    fn only_autoscaled_workloads_with_nothing_ready_anywhere_are_held_for() {
        let scalable = Arc::new(Scalable::default());
        let mut follower = ScalableFollower { scalable: scalable.clone() };
        follower.replace(vec![
            workload("zero", true, 0, 0),
            workload("fixed", false, 0, 0),
            workload("up", true, 1, 1),
        ]);
        assert!(scalable.at_zero("default", "zero"));
        assert!(!scalable.at_zero("default", "fixed"), "not autoscaled: not held");
        assert!(!scalable.at_zero("default", "up"), "ready somewhere: not held");
        assert!(scalable.contains("default", "up"));
        // Going down to zero: held as soon as the autoscaler decided it, before the status
        // counts the last instance gone.
        follower.change(EventType::Modified, workload("up", true, 1, 0));
        assert!(scalable.at_zero("default", "up"));
        let by_label = ServiceSelector { workload: None, labels: [("app".to_owned(), "shop".to_owned())].into() };
        let names: Vec<String> =
            scalable.selected_at_zero("default", &by_label).into_iter().map(|(_, name)| name).collect();
        assert_eq!(names, ["up", "zero"]);
        let by_name = ServiceSelector { workload: Some(Name::new("zero").unwrap()), labels: Default::default() };
        assert_eq!(scalable.selected_at_zero("default", &by_name).len(), 1);
        assert!(scalable.selected_at_zero("other", &by_label).is_empty());
        follower.change(EventType::Deleted, workload("zero", true, 0, 0));
        assert!(!scalable.contains("default", "zero"));
    }

    #[test]
    fn a_workload_holds_so_many_requests_and_refuses_the_rest() {
        let held = Held::default();
        let key = ("default".to_owned(), "web".to_owned());
        let places: Vec<Place<'_>> = (0..MAX_HELD_PER_WORKLOAD).map(|_| held.take(&key).unwrap()).collect();
        assert!(matches!(held.take(&key), Err(HoldError::Full(MAX_HELD_PER_WORKLOAD, _))));
        assert!(held.take(&("default".to_owned(), "other".to_owned())).is_ok(), "another workload is not held up");
        drop(places);
        let counts = held.counts.lock().unwrap();
        assert!(counts.workloads.is_empty() && counts.namespaces.is_empty(), "every place was given back");
        drop(counts);
        assert!(held.take(&key).is_ok());
        // One namespace's workloads together hold no more than their share.
        let many: Vec<Place<'_>> = (0..MAX_HELD_PER_NAMESPACE)
            .map(|i| held.take(&("flood".to_owned(), format!("w{}", i % 4))).unwrap())
            .collect();
        assert!(matches!(held.take(&("flood".to_owned(), "w9".to_owned())), Err(HoldError::NamespaceFull(..))));
        assert!(held.take(&("calm".to_owned(), "w".to_owned())).is_ok(), "another namespace is not held up");
        drop(many);
    }
}
