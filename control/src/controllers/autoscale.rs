//! The autoscaler's decision for one workload (Knative's concurrency autoscaling, in its
//! stable mode): the replicas its load needs ([`crate::load`]) go up at once, and come down
//! only to the most the load has needed over the stable window, so a dip does not take
//! replicas away and a burst after it finds them still there. A node holding a request for a
//! workload with no instance counts as one needed instance at that moment.
//!
//! What was decided lives in the Workload's status (`desiredReplicas`); a new leader starts
//! its window from it, so a change of leader never scales a workload down early.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use shoal_api::resources::workload::{Autoscale, Workload};

use crate::load::{Load, needed};

/// What the load needed over time: the times it changed, and to what.
#[derive(Debug, Clone, Default)]
pub struct Window {
    changes: VecDeque<(Instant, u32)>,
}

impl Window {
    /// A window that starts at `now` having needed `replicas`.
    pub fn seeded(now: Instant, replicas: u32) -> Self {
        Window { changes: VecDeque::from([(now, replicas)]) }
    }

    /// The load needs `replicas` from `now` on.
    pub fn record(&mut self, now: Instant, replicas: u32) {
        if self.changes.back().is_none_or(|(_, last)| *last != replicas) {
            self.changes.push_back((now, replicas));
        }
    }

    /// Drops what ended before `window` ago: a change is needed while the next one is not yet
    /// `window` old.
    fn prune(&mut self, now: Instant, window: Duration) {
        while self.changes.len() > 1 && now.saturating_duration_since(self.changes[1].0) >= window {
            self.changes.pop_front();
        }
    }

    /// The most the load needed over the last `window`.
    pub fn most(&mut self, now: Instant, window: Duration) -> u32 {
        self.prune(now, window);
        self.changes.iter().map(|(_, r)| *r).max().unwrap_or(0)
    }

    /// When [`Window::most`] next falls, if it is above what the load needs now.
    pub fn falls_at(&self, window: Duration) -> Option<Instant> {
        let (_, now_needed) = *self.changes.back()?;
        let top = self.changes.iter().map(|(_, r)| *r).max()?;
        if top <= now_needed {
            return None;
        }
        // The last change away from the top is the one whose age ends it.
        let last_top = self.changes.iter().rposition(|(_, r)| *r == top)?;
        self.changes.get(last_top + 1).map(|(at, _)| *at + window)
    }
}

/// The autoscaler's windows, one per autoscaled workload.
#[derive(Default)]
pub struct Autoscaler {
    windows: HashMap<String, Window>,
}

/// The replicas decided for a workload, and when to look again to scale it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// How many instances it should have now.
    pub replicas: u32,
    /// When its replicas may fall next (only while they are above what its load needs).
    pub recheck: Option<Duration>,
}

impl Autoscaler {
    /// Decides the replicas of `workload` (at `key`, autoscaled by `autoscale`) at `now`.
    pub fn decide(
        &mut self,
        load: &Load,
        key: &str,
        workload: &Workload,
        autoscale: &Autoscale,
        now: Instant,
    ) -> Decision {
        let observed = load.observe(key, autoscale.target_concurrency, now);
        let mut wanted = needed(observed.concurrency, autoscale.target_concurrency);
        if observed.activated {
            wanted = wanted.max(1);
        }
        let wanted = autoscale.clamp(wanted);
        let window = autoscale.stable_window.0;
        let window_of = self.windows.entry(key.to_owned()).or_insert_with(|| {
            let decided = workload.status.as_ref().and_then(|s| s.desired_replicas);
            Window::seeded(now, autoscale.clamp(decided.unwrap_or(workload.spec.replicas)))
        });
        window_of.record(now, wanted);
        let replicas = autoscale.clamp(window_of.most(now, window));
        let recheck = window_of.falls_at(window).map(|at| at.saturating_duration_since(now));
        Decision { replicas, recheck }
    }

    /// Forgets the workload at `key`; returns whether it was autoscaled here.
    pub fn forget(&mut self, key: &str) -> bool {
        self.windows.remove(key).is_some()
    }

    /// Forgets every workload (a change of leader).
    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::agent::WorkloadLoad;
    use shoal_api::resources::workload::WorkloadStatus;

    use super::super::fixtures::workload;
    use super::*;

    const KEY: &str = "workloads/default/web";

    fn autoscaled(min: u32, max: u32, target: u32, window_secs: u64) -> Workload {
        let mut w = workload("web", 1);
        w.spec.autoscale = Some(Autoscale {
            min,
            max,
            target_concurrency: target,
            stable_window: shoal_api::duration::Duration::from_secs(window_secs),
        });
        w
    }

    fn report(load: &Load, concurrency: f64, at: Instant) {
        let entry = WorkloadLoad { namespace: "default".into(), workload: "web".into(), concurrency };
        load.report("n1", &[entry], at);
    }

    fn decide(scaler: &mut Autoscaler, load: &Load, w: &Workload, at: Instant) -> Decision {
        scaler.decide(load, KEY, w, w.spec.autoscale.as_ref().unwrap(), at)
    }

    #[test]
    fn a_window_holds_the_most_needed_until_it_has_aged_out() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let window = 10 * s;
        let mut w = Window::seeded(t0, 2);
        w.record(t0 + s, 10);
        w.record(t0 + 3 * s, 1);
        assert_eq!(w.most(t0 + 3 * s, window), 10);
        assert_eq!(w.falls_at(window), Some(t0 + 13 * s), "10 was needed until t0+3s");
        assert_eq!(w.most(t0 + 13 * s - Duration::from_millis(1), window), 10);
        assert_eq!(w.most(t0 + 13 * s, window), 1);
        assert_eq!(w.falls_at(window), None);
        // Up is at once.
        w.record(t0 + 14 * s, 4);
        assert_eq!(w.most(t0 + 14 * s, window), 4);
    }

    #[test]
    fn replicas_follow_load_up_at_once_and_down_after_the_stable_window() {
        let load = Load::new(Duration::from_secs(30));
        let mut scaler = Autoscaler::default();
        let w = autoscaled(0, 10, 4, 5);
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // Starts from its replicas (1), within min and max.
        assert_eq!(decide(&mut scaler, &load, &w, t0), Decision { replicas: 1, recheck: Some(5 * s) });
        // A step of load to 10x the target: 40 in flight at 4 each is 10 instances, at once.
        report(&load, 40.0, t0 + s);
        assert_eq!(load.take_poked().len(), 1, "a report asking for more pokes the workload");
        assert_eq!(decide(&mut scaler, &load, &w, t0 + s).replicas, 10);
        // Even more load is bounded by max.
        report(&load, 400.0, t0 + 2 * s);
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 2 * s).replicas, 10);
        // The load stops: replicas stay for the stable window, then go to min.
        report(&load, 0.0, t0 + 3 * s);
        let held = decide(&mut scaler, &load, &w, t0 + 3 * s);
        assert_eq!(held, Decision { replicas: 10, recheck: Some(5 * s) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 8 * s), Decision { replicas: 0, recheck: None });
        // A node holding a request at zero gets one instance at once, kept for the window.
        load.activate(KEY);
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 9 * s).replicas, 1);
        // Needed from t0+9s until the next look finds nothing in flight, at t0+10s.
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 10 * s), Decision { replicas: 1, recheck: Some(5 * s) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 15 * s).replicas, 0);
    }

    #[test]
    fn a_new_leader_starts_from_the_decided_replicas_and_min_holds() {
        let load = Load::new(Duration::from_secs(30));
        let mut scaler = Autoscaler::default();
        let mut w = autoscaled(2, 10, 4, 60);
        w.status = Some(WorkloadStatus { desired_replicas: Some(7), ..Default::default() });
        let t0 = Instant::now();
        // No reports yet (a new leader): the 7 decided before stay for the window.
        let first = decide(&mut scaler, &load, &w, t0);
        assert_eq!(first, Decision { replicas: 7, recheck: Some(Duration::from_secs(60)) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + Duration::from_secs(61)).replicas, 2, "min holds");
        assert!(scaler.forget(KEY));
        assert!(!scaler.forget(KEY));
    }
}
