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
use shoal_api::resources::workload::Autoscale;
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
    /// When each node's load was last taken: a node beating faster than
    /// [`MIN_REPORT_GAP`] has its load ignored (its beat still counts).
    last_report: HashMap<String, Instant>,
}

/// The least time between two load reports of a node that are both taken.
pub const MIN_REPORT_GAP: Duration = Duration::from_millis(100);

/// One node's last report of one workload.
#[derive(Debug, Clone, Copy)]
struct Report {
    /// Requests in flight, on average since its beat before.
    concurrency: f64,
    /// When it arrived.
    at: Instant,
    /// With none in flight at the node: since when.
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Tracked {
    /// Its autoscale spec, as the controller last saw it (none until it has looked).
    spec: Option<Autoscale>,
    /// The replicas the load asked for when the controller last looked (within min and max).
    recommended: u32,
    /// When a node last asked for an instance.
    activated_at: Option<Instant>,
    /// The last report of each node.
    reports: HashMap<String, Report>,
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
    /// With nothing in flight on any node now: since when (the latest of the nodes' last
    /// request ends). None while a node's ask for an instance is newer than that: the request
    /// it holds is not in a report yet.
    pub idle_since: Option<Instant>,
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
        if inner.last_report.get(node).is_some_and(|at| now.saturating_duration_since(*at) < MIN_REPORT_GAP) {
            return;
        }
        if inner.last_report.len() >= 100_000 {
            let ttl = self.ttl;
            inner.last_report.retain(|_, at| now.saturating_duration_since(*at) < ttl);
        }
        inner.last_report.insert(node.to_owned(), now);
        for entry in load {
            let key = format!("workloads/{}/{}", entry.namespace, entry.workload);
            let Some(tracked) = inner.tracked.get_mut(&key) else { continue };
            let concurrency = entry.concurrency.clamp(0.0, MAX_REPORTED_CONCURRENCY);
            let concurrency = if concurrency.is_nan() { 0.0 } else { concurrency };
            // An idle time longer than the TTL says no more than the TTL does.
            let idle = entry.idle_ms.map(|ms| Duration::from_millis(ms).min(self.ttl));
            let idle_since = idle.map(|idle| now.checked_sub(idle).unwrap_or(now));
            tracked.reports.insert(node.to_owned(), Report { concurrency, at: now, idle_since });
            let total = sum(&tracked.reports, now, self.ttl);
            let asks_other = tracked
                .spec
                .as_ref()
                .is_some_and(|spec| spec.clamp(needed(total, spec.target_concurrency)) != tracked.recommended);
            if asks_other {
                self.poke(&mut inner, &key);
            }
        }
    }

    /// A node holds a request for the workload at `key` and asks for an instance at `now`.
    pub fn activate(&self, key: &str, now: Instant) {
        let mut inner = self.inner.lock().expect("load lock");
        let tracked = inner.tracked.entry(key.to_owned()).or_default();
        tracked.activated = true;
        tracked.activated_at = Some(now);
        self.poke(&mut inner, key);
    }

    /// The workload at `key` is autoscaled as `spec` says: keeps its reports from now on, and
    /// returns what they say at `now` (taking a pending activation).
    pub fn observe(&self, key: &str, spec: &Autoscale, now: Instant) -> Observed {
        let mut inner = self.inner.lock().expect("load lock");
        let tracked = inner.tracked.entry(key.to_owned()).or_default();
        tracked.reports.retain(|_, r| now.saturating_duration_since(r.at) < self.ttl);
        let concurrency = sum(&tracked.reports, now, self.ttl);
        tracked.recommended = spec.clamp(needed(concurrency, spec.target_concurrency));
        tracked.spec = Some(spec.clone());
        // Idle only if every node that reported is.
        let idle_since = tracked.reports.values().try_fold(None, |latest: Option<Instant>, r| {
            r.idle_since.map(|since| Some(latest.map_or(since, |l| l.max(since))))
        });
        let activated_at = tracked.activated_at;
        let idle_since = idle_since.flatten().filter(|since| activated_at.is_none_or(|at| at <= *since));
        Observed { concurrency, activated: std::mem::take(&mut tracked.activated), idle_since }
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

fn sum(reports: &HashMap<String, Report>, now: Instant, ttl: Duration) -> f64 {
    reports.values().filter(|r| now.saturating_duration_since(r.at) < ttl).map(|r| r.concurrency).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: u32) -> Autoscale {
        Autoscale {
            min: 0,
            max: 100,
            target_concurrency: target,
            stable_window: shoal_api::duration::Duration::from_secs(60),
        }
    }

    fn entry(workload: &str, concurrency: f64) -> WorkloadLoad {
        WorkloadLoad { namespace: "default".into(), workload: workload.into(), concurrency, idle_ms: None }
    }

    fn idle(workload: &str, ms: u64) -> WorkloadLoad {
        WorkloadLoad { idle_ms: Some(ms), ..entry(workload, 0.0) }
    }

    #[test]
    fn a_workload_is_idle_since_the_last_request_ended_on_any_node_once_all_are_idle() {
        let load = Load::new(Duration::from_secs(10));
        let key = "workloads/default/web";
        let t0 = Instant::now() + Duration::from_secs(5);
        let ms = Duration::from_millis;
        load.observe(key, &spec(4), t0);
        load.report("n1", &[idle("web", 1500)], t0);
        load.report("n2", &[entry("web", 2.0)], t0);
        assert_eq!(load.observe(key, &spec(4), t0).idle_since, None, "n2 is busy");
        load.report("n2", &[idle("web", 200)], t0 + ms(100));
        let seen = load.observe(key, &spec(4), t0 + ms(100));
        assert_eq!(seen.idle_since, Some(t0 - ms(100)), "the later of the two");
        // A node's ask for an instance after that is news the reports do not have yet.
        load.activate(key, t0 + ms(150));
        let seen = load.observe(key, &spec(4), t0 + ms(150));
        assert!(seen.activated && seen.idle_since.is_none(), "{seen:?}");
        load.report("n1", &[idle("web", 10)], t0 + ms(300));
        load.report("n2", &[idle("web", 10)], t0 + ms(300));
        assert_eq!(load.observe(key, &spec(4), t0 + ms(300)).idle_since, Some(t0 + ms(290)));
        // An idle time past the TTL counts as the TTL.
        load.report("n1", &[idle("web", u64::MAX)], t0 + ms(400));
        assert_eq!(load.observe(key, &spec(4), t0 + ms(400)).idle_since, Some(t0 + ms(290)));
    }

    #[test]
    fn a_node_beating_too_fast_has_its_load_ignored() {
        let load = Load::new(Duration::from_secs(10));
        let t0 = Instant::now();
        load.observe("workloads/default/web", &spec(1), t0);
        load.report("n1", &[entry("web", 1.0)], t0);
        load.report("n1", &[entry("web", 50.0)], t0 + MIN_REPORT_GAP / 2);
        assert_eq!(load.observe("workloads/default/web", &spec(1), t0).concurrency, 1.0);
        load.report("n1", &[entry("web", 50.0)], t0 + MIN_REPORT_GAP);
        assert_eq!(load.observe("workloads/default/web", &spec(1), t0).concurrency, 50.0);
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
        assert_eq!(load.observe("workloads/default/web", &spec(4), t0).concurrency, 0.0);
        let t0 = t0 + MIN_REPORT_GAP;
        load.report("n1", &[entry("web", 8.0)], t0);
        load.report("n2", &[entry("web", 4.0), entry("other", 100.0)], t0);
        assert_eq!(load.take_poked(), BTreeSet::from(["workloads/default/web".to_owned()]));
        let seen = load.observe("workloads/default/web", &spec(4), t0);
        assert_eq!(seen, Observed { concurrency: 12.0, activated: false, idle_since: None });
        // The same load again asks for nothing new.
        load.report("n1", &[entry("web", 8.0)], t0 + Duration::from_secs(1));
        assert!(load.take_poked().is_empty());
        // A hostile figure is bounded; a NaN counts as nothing.
        load.report("n3", &[entry("web", f64::INFINITY)], t0);
        load.report("n3", &[entry("web", f64::NAN)], t0 + MIN_REPORT_GAP);
        assert_eq!(load.observe("workloads/default/web", &spec(4), t0 + Duration::from_secs(1)).concurrency, 12.0);
        // n2's report is too old at t0 + 10 s; n1's from t0 + 1 s still counts.
        let later = load.observe("workloads/default/web", &spec(4), t0 + Duration::from_secs(10));
        assert_eq!(later.concurrency, 8.0);
    }

    #[test]
    fn an_activation_pokes_once_and_is_taken_by_the_next_look() {
        let load = Load::new(Duration::from_secs(10));
        let now = Instant::now();
        load.activate("workloads/default/web", now);
        load.activate("workloads/default/web", now);
        assert_eq!(load.take_poked().len(), 1);
        assert!(load.observe("workloads/default/web", &spec(1), now).activated);
        assert!(!load.observe("workloads/default/web", &spec(1), now).activated);
        load.forget("workloads/default/web");
        load.report("n1", &[entry("web", 3.0)], now);
        assert!(load.take_poked().is_empty(), "a forgotten workload keeps no reports");
    }
}
