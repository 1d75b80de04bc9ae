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
#[derive(Debug, Clone)]
pub struct Window {
    changes: VecDeque<(Instant, u32)>,
    /// When it started: nothing is dated before it.
    since: Instant,
}

/// The most changes a window keeps; past it the two oldest are merged, keeping the higher
/// value for both spans (replicas may stay a little longer, never go early).
const MAX_CHANGES: usize = 64;

impl Window {
    /// A window that starts at `now` having needed `replicas`.
    pub fn seeded(now: Instant, replicas: u32) -> Self {
        Window { changes: VecDeque::from([(now, replicas)]), since: now }
    }

    /// The load needs `replicas` from `now` on.
    pub fn record(&mut self, now: Instant, replicas: u32) {
        if self.changes.back().is_none_or(|(_, last)| *last != replicas) {
            self.changes.push_back((now, replicas));
        }
        if self.changes.len() > MAX_CHANGES
            && let Some((_, second)) = self.changes.remove(1)
        {
            let first = &mut self.changes[0].1;
            *first = (*first).max(second);
        }
    }

    /// The load needed `busy` until `idle_since` and `idle` from then on (the nodes say when
    /// their last request ended): what was recorded after `idle_since` came from averages over
    /// spans that ended idle, so it is folded into `busy`, dated `idle_since`.
    pub fn record_idle(&mut self, idle_since: Instant, busy: u32, idle: u32) {
        let at = idle_since.max(self.since);
        let mut busy = busy;
        while self.changes.len() > 1 && self.changes.back().is_some_and(|(t, _)| *t > at) {
            busy = busy.max(self.changes.pop_back().expect("not empty").1);
        }
        match self.changes.back_mut() {
            // Only the first change is left, and it came after `at`: it too was needed only
            // until then.
            Some(last) if last.0 > at => *last = (at, last.1.max(busy)),
            _ if busy > idle => self.record(at, busy),
            _ => {}
        }
        self.record(at, idle);
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
    windows: HashMap<String, (Window, u32)>,
    /// Until when no workload goes below what it was seeded with: a new leader has heard
    /// from no node yet.
    settle_until: Option<Instant>,
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
    /// Decides the replicas of `workload` (at `key`, autoscaled by `autoscale`, with
    /// `current` instances not ended) at `now`.
    pub fn decide(
        &mut self,
        load: &Load,
        key: &str,
        workload: &Workload,
        autoscale: &Autoscale,
        current: u32,
        now: Instant,
    ) -> Decision {
        let observed = load.observe(key, autoscale, now);
        let busy = autoscale.clamp(needed(observed.concurrency, autoscale.target_concurrency));
        let window = autoscale.stable_window.0;
        let (window_of, seed) = self.windows.entry(key.to_owned()).or_insert_with(|| {
            // What was decided, or what there is if that write was lost; else the start.
            let decided = workload.status.as_ref().and_then(|s| s.desired_replicas);
            let seed = autoscale.clamp(decided.unwrap_or(workload.spec.replicas).max(current));
            (Window::seeded(now, seed), seed)
        });
        match observed.idle_since {
            Some(since) if !observed.activated => window_of.record_idle(since, busy, autoscale.min),
            // A node holds a request: one instance is needed now.
            _ if observed.activated => window_of.record(now, busy.max(autoscale.clamp(1))),
            _ => window_of.record(now, busy),
        }
        let mut replicas = autoscale.clamp(window_of.most(now, window));
        let mut recheck = window_of.falls_at(window).map(|at| at.saturating_duration_since(now));
        if let Some(until) = self.settle_until.filter(|until| now < *until && replicas < *seed) {
            replicas = *seed;
            let settled = until.saturating_duration_since(now);
            recheck = Some(recheck.map_or(settled, |r| r.max(settled)));
        }
        Decision { replicas, recheck }
    }

    /// Forgets the workload at `key`.
    pub fn forget(&mut self, key: &str) {
        self.windows.remove(key);
    }

    /// Forgets every workload (a change of leader at `now`); until `settle` has passed, none
    /// is scaled below where it starts.
    pub fn clear(&mut self, now: Instant, settle: Duration) {
        self.windows.clear();
        self.settle_until = Some(now + settle);
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::agent::WorkloadLoad;
    use shoal_api::resources::workload::WorkloadStatus;

    use super::super::fixtures::workload;
    use super::*;

    const KEY: &str = "workloads/default/web";
    const S: Duration = Duration::from_secs(1);

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

    /// n1's report at `at`: `concurrency` on average, idle for `idle` if given.
    fn report(load: &Load, concurrency: f64, idle: Option<Duration>, at: Instant) {
        let idle_ms = idle.map(|d| d.as_millis() as u64);
        let entry = WorkloadLoad { namespace: "default".into(), workload: "web".into(), concurrency, idle_ms };
        load.report("n1", &[entry], at);
    }

    fn decide(scaler: &mut Autoscaler, load: &Load, w: &Workload, at: Instant) -> Decision {
        scaler.decide(load, KEY, w, w.spec.autoscale.as_ref().unwrap(), 0, at)
    }

    #[test]
    fn a_window_holds_the_most_needed_until_it_has_aged_out() {
        let t0 = Instant::now();
        let window = 10 * S;
        let mut w = Window::seeded(t0, 2);
        w.record(t0 + S, 10);
        w.record(t0 + 3 * S, 1);
        assert_eq!(w.most(t0 + 3 * S, window), 10);
        assert_eq!(w.falls_at(window), Some(t0 + 13 * S), "10 was needed until t0+3s");
        assert_eq!(w.most(t0 + 13 * S - Duration::from_millis(1), window), 10);
        assert_eq!(w.most(t0 + 13 * S, window), 1);
        assert_eq!(w.falls_at(window), None);
        // Up is at once.
        w.record(t0 + 14 * S, 4);
        assert_eq!(w.most(t0 + 14 * S, window), 4);
    }

    #[test]
    fn the_window_counts_from_when_the_nodes_went_idle_not_from_when_they_said_so() {
        let t0 = Instant::now();
        let window = 10 * S;
        let mut w = Window::seeded(t0, 2);
        w.record(t0 + S, 10);
        // The report at t0+3s averaged a span in which the load stopped (at t0+2s): 5.
        w.record(t0 + 3 * S, 5);
        // The next says idle since t0+2s.
        w.record_idle(t0 + 2 * S, 0, 0);
        assert_eq!(w.falls_at(window), Some(t0 + 12 * S));
        assert_eq!(w.most(t0 + 12 * S - Duration::from_millis(1), window), 10);
        assert_eq!(w.most(t0 + 12 * S, window), 0);
        // Saying so again changes nothing; an idle time before the window began counts from
        // its beginning.
        w.record_idle(t0 + 2 * S, 0, 0);
        assert_eq!(w.most(t0 + 12 * S, window), 0);
        let mut fresh = Window::seeded(t0 + 5 * S, 3);
        fresh.record_idle(t0, 0, 0);
        assert_eq!(fresh.falls_at(window), Some(t0 + 15 * S), "a seed holds for its whole window");
    }

    #[test]
    fn a_flapping_load_keeps_a_bounded_window_that_never_falls_early() {
        let t0 = Instant::now();
        let mut w = Window::seeded(t0, 1);
        for i in 0..10_000u32 {
            w.record(t0 + Duration::from_millis(u64::from(i)), 1 + i % 2 * 9);
        }
        assert!(w.changes.len() <= MAX_CHANGES, "{}", w.changes.len());
        assert_eq!(w.most(t0 + 10 * S, 60 * S), 10);
    }

    #[test]
    fn replicas_follow_load_up_at_once_and_down_a_stable_window_after_it_stopped() {
        let load = Load::new(Duration::from_secs(30));
        let mut scaler = Autoscaler::default();
        let w = autoscaled(0, 10, 4, 5);
        let t0 = Instant::now();
        // Starts from its replicas (1), within min and max.
        assert_eq!(decide(&mut scaler, &load, &w, t0), Decision { replicas: 1, recheck: Some(5 * S) });
        // A step of load to 10x the target: 40 in flight at 4 each is 10 instances, at once.
        report(&load, 40.0, None, t0 + S);
        assert_eq!(load.take_poked().len(), 1, "a report asking for more pokes the workload");
        assert_eq!(decide(&mut scaler, &load, &w, t0 + S).replicas, 10);
        // Even more load is bounded by max, and asks for nothing new.
        report(&load, 400.0, None, t0 + 2 * S);
        assert!(load.take_poked().is_empty(), "max is max");
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 2 * S).replicas, 10);
        // The load stops at t0+2.5s: replicas stay for the stable window from then, then go.
        report(&load, 0.0, Some(S / 2), t0 + 3 * S);
        let held = decide(&mut scaler, &load, &w, t0 + 3 * S);
        assert_eq!(held, Decision { replicas: 10, recheck: Some(4 * S + S / 2) });
        let gone = decide(&mut scaler, &load, &w, t0 + 7 * S + S / 2);
        assert_eq!(gone, Decision { replicas: 0, recheck: None });
        // A node holding a request at zero gets one instance at once, though its last report
        // (older than the ask) says idle; kept until the nodes say the request is done.
        load.activate(KEY, t0 + 9 * S);
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 9 * S).replicas, 1);
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 9 * S + S / 2).replicas, 1, "no report yet");
        report(&load, 0.1, Some(S / 2), t0 + 10 * S);
        let after = decide(&mut scaler, &load, &w, t0 + 10 * S);
        assert_eq!(after, Decision { replicas: 1, recheck: Some(4 * S + S / 2) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 14 * S + S / 2).replicas, 0);
    }

    #[test]
    fn a_new_leader_starts_from_what_was_decided_or_what_runs_and_settles_before_scaling_down() {
        let load = Load::new(Duration::from_secs(30));
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        scaler.clear(t0, 10 * S);
        let mut w = autoscaled(2, 10, 4, 1);
        w.status = Some(WorkloadStatus { desired_replicas: Some(7), ..Default::default() });
        // No reports yet: the 7 decided before stay until the settling time has passed.
        let first = scaler.decide(&load, KEY, &w, w.spec.autoscale.as_ref().unwrap(), 0, t0);
        assert_eq!(first, Decision { replicas: 7, recheck: Some(S) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 5 * S), Decision { replicas: 7, recheck: Some(5 * S) });
        assert_eq!(decide(&mut scaler, &load, &w, t0 + 10 * S).replicas, 2, "then min holds");
        // A status write that was lost: what runs counts.
        scaler.forget(KEY);
        let ran = scaler.decide(&load, KEY, &w, w.spec.autoscale.as_ref().unwrap(), 9, t0 + 11 * S);
        assert_eq!(ran.replicas, 9);
    }
}
