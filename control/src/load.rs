//! The load of autoscaled workloads, held in the raft leader's memory beside node liveness:
//! each node says with its heartbeat how many requests were in flight for each autoscaled
//! workload it serves, and a node holding a request for a workload with no instance asks for
//! one at once ([`Load::activate`]). Neither is a raft write; the workload controller turns
//! them into replicas, and writes the Workload only when its replicas change.
//!
//! Only workloads the controllers track (autoscaled ones they have looked at) keep reports,
//! so a node naming other workloads costs nothing. A report older than the TTL (the node grace
//! period) no longer counts. Nothing here survives a change of leader: a new leader starts
//! from the replicas each Workload's status records, and the nodes' next beats.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_api::agent::{MAX_REPORTED_CONCURRENCY, WorkloadLoad};
use tokio::sync::Notify;

/// What the leader knows of autoscaled workloads' load.
pub struct Load {
    inner: Mutex<Inner>,
    /// Wakes the controllers when [`Inner::poked`] gained a workload.
    poked_notify: Notify,
    /// How long a report counts.
    ttl: Duration,
}

#[derive(Default)]
struct Inner {
    /// By workload key (`workloads/<ns>/<name>`).
    tracked: HashMap<String, Tracked>,
    /// Workloads to reconcile at once: their load asks for other replicas, or a node asked
    /// for an instance. A set, so bounded by the tracked workloads.
    poked: BTreeSet<String>,
}

#[derive(Default)]
struct Tracked {
    /// Requests in flight per instance it aims for (0 until the controller has said).
    target: u32,
    /// The replicas the load asked for when the controller last looked.
    recommended: u32,
    /// The last report of each node.
    reports: HashMap<String, (f64, Instant)>,
    /// A node asked for an instance since the controller last looked.
    activated: bool,
}

/// What the controller sees of one workload's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Requests in flight across the nodes (the sum of their fresh reports).
    pub concurrency: f64,
    /// Whether a node asked for an instance since the last look.
    pub activated: bool,
}

/// The replicas `concurrency` requests in flight need at `target` per instance: rounded up,
/// and at least one while any request is in flight.
pub fn needed(concurrency: f64, target: u32) -> u32 {
    if concurrency <= 0.0 || target == 0 {
        return 0;
    }
    // A hair below a whole multiple counts as it (averages are not exact).
    let replicas = (concurrency / f64::from(target) - 1e-6).ceil();
    (replicas.max(1.0)).min(f64::from(u32::MAX)) as u32
}

impl Load {
    /// Load whose reports count for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Load { inner: Mutex::default(), poked_notify: Notify::new(), ttl }
    }

    fn poke(&self, inner: &mut Inner, key: &str) {
        if inner.poked.insert(key.to_owned()) {
            self.poked_notify.notify_one();
        }
    }

    /// Records `node`'s report at `now`; a workload whose load now asks for other replicas
    /// than when the controller last looked is poked.
    pub fn report(&self, node: &str, load: &[WorkloadLoad], now: Instant) {
        let mut inner = self.inner.lock().expect("load lock");
        for entry in load {
            let key = format!("workloads/{}/{}", entry.namespace, entry.workload);
            let Some(tracked) = inner.tracked.get_mut(&key) else { continue };
            let concurrency = entry.concurrency.clamp(0.0, MAX_REPORTED_CONCURRENCY);
            let concurrency = if concurrency.is_nan() { 0.0 } else { concurrency };
            tracked.reports.insert(node.to_owned(), (concurrency, now));
            let ttl = self.ttl;
            let total = sum(&tracked.reports, now, ttl);
            if tracked.target > 0 && needed(total, tracked.target) != tracked.recommended {
                self.poke(&mut inner, &key);
            }
        }
    }

    /// A node holds a request for the workload at `key` and asks for an instance.
    pub fn activate(&self, key: &str) {
        let mut inner = self.inner.lock().expect("load lock");
        inner.tracked.entry(key.to_owned()).or_default().activated = true;
        self.poke(&mut inner, key);
    }

    /// The workload at `key` is autoscaled at `target`: keeps its reports from now on, and
    /// returns what they say at `now` (taking a pending activation).
    pub fn observe(&self, key: &str, target: u32, now: Instant) -> Observed {
        let mut inner = self.inner.lock().expect("load lock");
        let tracked = inner.tracked.entry(key.to_owned()).or_default();
        tracked.target = target;
        tracked.reports.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
        let concurrency = sum(&tracked.reports, now, self.ttl);
        tracked.recommended = needed(concurrency, target);
        Observed { concurrency, activated: std::mem::take(&mut tracked.activated) }
    }

    /// Forgets the workload at `key` (deleted, or no longer autoscaled).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().expect("load lock");
        inner.tracked.remove(key);
        inner.poked.remove(key);
    }

    /// Forgets everything (a change of leader).
    pub fn clear(&self) {
        *self.inner.lock().expect("load lock") = Inner::default();
    }

    /// Takes the workloads poked since the last call.
    pub fn take_poked(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.inner.lock().expect("load lock").poked)
    }

    /// Resolves when a workload was poked (see [`Load::take_poked`]).
    pub async fn poked(&self) {
        self.poked_notify.notified().await
    }
}

fn sum(reports: &HashMap<String, (f64, Instant)>, now: Instant, ttl: Duration) -> f64 {
    reports.values().filter(|(_, at)| now.saturating_duration_since(*at) < ttl).map(|(c, _)| c).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(workload: &str, concurrency: f64) -> WorkloadLoad {
        WorkloadLoad { namespace: "default".into(), workload: workload.into(), concurrency }
    }

    #[test]
    fn replicas_needed_round_up_and_keep_one_for_any_load() {
        assert_eq!(needed(0.0, 4), 0);
        assert_eq!(needed(0.01, 4), 1);
        assert_eq!(needed(4.0, 4), 1);
        assert_eq!(needed(4.000_000_1, 4), 1, "averages a hair over count as the multiple");
        assert_eq!(needed(4.5, 4), 2);
        assert_eq!(needed(40.0, 4), 10);
    }

    #[test]
    fn reports_add_up_across_nodes_poke_on_change_and_expire() {
        let load = Load::new(Duration::from_secs(10));
        let t0 = Instant::now();
        load.report("n1", &[entry("web", 8.0)], t0);
        assert!(load.take_poked().is_empty(), "an untracked workload's report is dropped");
        assert_eq!(load.observe("workloads/default/web", 4, t0).concurrency, 0.0);
        load.report("n1", &[entry("web", 8.0)], t0);
        load.report("n2", &[entry("web", 4.0), entry("other", 100.0)], t0);
        assert_eq!(load.take_poked(), BTreeSet::from(["workloads/default/web".to_owned()]));
        let seen = load.observe("workloads/default/web", 4, t0);
        assert_eq!(seen, Observed { concurrency: 12.0, activated: false });
        // The same load again asks for nothing new.
        load.report("n1", &[entry("web", 8.0)], t0 + Duration::from_secs(1));
        assert!(load.take_poked().is_empty());
        // A hostile figure is bounded; a NaN counts as nothing.
        load.report("n3", &[entry("web", f64::INFINITY)], t0);
        load.report("n3", &[entry("web", f64::NAN)], t0);
        assert_eq!(load.observe("workloads/default/web", 4, t0 + Duration::from_secs(1)).concurrency, 12.0);
        // n2's report is too old at t0 + 10 s; n1's from t0 + 1 s still counts.
        let later = load.observe("workloads/default/web", 4, t0 + Duration::from_secs(10));
        assert_eq!(later.concurrency, 8.0);
    }

    #[test]
    fn an_activation_pokes_once_and_is_taken_by_the_next_look() {
        let load = Load::new(Duration::from_secs(10));
        let now = Instant::now();
        load.activate("workloads/default/web");
        load.activate("workloads/default/web");
        assert_eq!(load.take_poked().len(), 1);
        assert!(load.observe("workloads/default/web", 1, now).activated);
        assert!(!load.observe("workloads/default/web", 1, now).activated);
        load.forget("workloads/default/web");
        load.report("n1", &[entry("web", 3.0)], now);
        assert!(load.take_poked().is_empty(), "a forgotten workload keeps no reports");
    }
}
