//! Node liveness held in the raft leader's memory, Nomad-style: a heartbeat costs a map update,
//! not a raft write and a controller pass. The node lifecycle controller reads it; the store is
//! written only when a node's readiness changes (NotReady after the grace period, Ready again
//! when it beats).
//!
//! Times are this control node's monotonic clock at the moment it *received* a beat, so clock
//! skew between machines does not matter. Nothing here survives a change of leader, and need
//! not: a new leader grants every node a fresh grace period ([`Liveness::grant_all`]), so a
//! node is never declared dead for beats that went to the old leader.
//!
//! # Fencing leases
//! The answer to a beat may carry a lease (see [`shoal_api::agent::Lease`]): the node may run
//! singleton instances until [`Liveness::lease_duration`] after it sent the beat. A lease is
//! granted only by a leader that confirmed its leadership with a quorum within the last
//! [`Liveness::confirm_window`], in the term its controllers act in, so a leader cut off from
//! the others stops granting within that window. The guarantee, with `grace` the node grace
//! period and `L = grace / 4`, `W = grace / 8`:
//! - a lease granted by a deposed leader ends before `W + L` after the new leader was
//!   elected (it confirmed before the election); the new leader makes no singleton's
//!   replacement until `grace` after it took over ([`Liveness::singleton_hold`] covers the
//!   same leader);
//! - a lease granted after the leader's cache saw a singleton instance go does not cover it
//!   (the node renews only if every singleton it runs is listed), and one granted before ends
//!   before `L` after that; the workload controller waits `grace / 2` after it saw the
//!   instance gone.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::agent::Lease;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// When each node last beat, as seen by this member while it leads.
pub struct Liveness {
    beats: Mutex<Beats>,
    /// Wakes the controllers when [`Beats::revived`] gained a node.
    revived_notify: Notify,
}

/// What is known of one node's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The last beat, or the last grant of a grace period.
    pub at: Instant,
    /// Whether `at` was a beat: only a beat shows the node is there. A grant (a new leader, a
    /// node first seen) only puts off declaring it dead; it never makes a NotReady node Ready.
    pub beat: bool,
}

#[derive(Default)]
struct Beats {
    /// The last beat (or grant) of each node.
    last: HashMap<String, Seen>,
    /// Nodes whose lease had lapsed, or that had only been granted one, when they beat: the
    /// lifecycle controller looks at them at once, to mark them Ready. A set, so bounded by the
    /// nodes.
    revived: BTreeSet<String>,
    /// How long a beat keeps a node alive; a beat after that revives it.
    grace: Duration,
    /// The term the controllers of this member lead in (and published the singletons for).
    term: Option<u64>,
    /// The start of the last read-index round a quorum answered, and its term.
    confirmed: Option<(u64, Instant)>,
    /// The uids of the singleton instances bound to each node, as the controllers' cache has them.
    singletons: HashMap<String, Vec<String>>,
}

impl Liveness {
    /// Liveness whose beats last `grace`.
    pub fn new(grace: std::time::Duration) -> Self {
        Liveness { beats: Mutex::new(Beats { grace, ..Default::default() }), revived_notify: Notify::new() }
    }

    /// Records a beat of `node` at `now`.
    pub fn beat(&self, node: &str, now: Instant) {
        let mut beats = self.beats.lock().expect("liveness lock");
        let grace = beats.grace;
        let seen = Seen { at: now, beat: true };
        let revived = match beats.last.insert(node.to_owned(), seen) {
            Some(before) => !before.beat || now.saturating_duration_since(before.at) >= grace,
            None => true,
        };
        if revived && beats.revived.insert(node.to_owned()) {
            drop(beats);
            self.revived_notify.notify_one();
        }
    }

    /// The last beat or grant of `node`, if any since this member leads.
    pub fn seen(&self, node: &str) -> Option<Seen> {
        self.beats.lock().expect("liveness lock").last.get(node).copied()
    }

    /// Gives `node` a fresh grace period from `now` (a node first seen), unless it beat since.
    pub fn grant(&self, node: &str, now: Instant) -> Seen {
        *self.beats.lock().expect("liveness lock").last.entry(node.to_owned()).or_insert(Seen { at: now, beat: false })
    }

    /// Gives each of `nodes` a fresh grace period from `now` and forgets every other node (on
    /// becoming leader: nobody is stale yet, and nobody has beaten yet).
    pub fn grant_all<'a>(&self, nodes: impl IntoIterator<Item = &'a str>, now: Instant) {
        let mut beats = self.beats.lock().expect("liveness lock");
        beats.last = nodes.into_iter().map(|n| (n.to_owned(), Seen { at: now, beat: false })).collect();
        beats.revived.clear();
    }

    /// Forgets `node` (deleted).
    pub fn forget(&self, node: &str) {
        let mut beats = self.beats.lock().expect("liveness lock");
        beats.last.remove(node);
        beats.revived.remove(node);
    }

    /// Takes the nodes that came back since the last call.
    pub fn take_revived(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.beats.lock().expect("liveness lock").revived)
    }

    /// Resolves when a node came back (see [`Liveness::take_revived`]).
    pub async fn revived(&self) {
        self.revived_notify.notified().await
    }

    /// How long a fencing lease lasts from the node's sending of the beat.
    pub fn lease_duration(&self) -> Duration {
        lease_of(self.beats.lock().expect("liveness lock").grace)
    }

    /// How recent a confirmation of leadership must be for a lease to be granted.
    pub fn confirm_window(&self) -> Duration {
        confirm_window_of(self.beats.lock().expect("liveness lock").grace)
    }

    /// How long a singleton workload waits, after its instance was seen gone (and after a new
    /// leader took over, `grace`), before it gets a new one: longer than any lease that could
    /// still cover the old instance.
    pub fn singleton_hold(&self) -> Duration {
        self.beats.lock().expect("liveness lock").grace / 2
    }

    /// The controllers act as leader in `term` (or not at all), with the singletons published.
    pub fn leading(&self, term: Option<u64>) {
        let mut beats = self.beats.lock().expect("liveness lock");
        beats.term = term;
        beats.confirmed = None;
    }

    /// A read-index round started at `started` in `term` was answered by a quorum.
    pub fn confirm(&self, term: u64, started: Instant) {
        let mut beats = self.beats.lock().expect("liveness lock");
        if beats.confirmed.is_none_or(|(t, at)| t != term || at < started) {
            beats.confirmed = Some((term, started));
        }
    }

    /// Replaces the singleton instances known per node.
    pub fn set_singletons(&self, singletons: HashMap<String, Vec<String>>) {
        self.beats.lock().expect("liveness lock").singletons = singletons;
    }

    /// The lease for a beat of `node` answered at `now` while the store says this member
    /// leads in `term`: none unless the controllers act in that term and a quorum confirmed
    /// it within [`Liveness::confirm_window`].
    pub fn lease(&self, node: &str, term: Option<u64>, now: Instant) -> Option<Lease> {
        let beats = self.beats.lock().expect("liveness lock");
        let term = term.filter(|t| beats.term == Some(*t))?;
        let (confirmed_term, at) = beats.confirmed?;
        if confirmed_term != term || now.saturating_duration_since(at) > confirm_window_of(beats.grace) {
            return None;
        }
        let millis = lease_of(beats.grace).as_millis() as u64;
        Some(Lease { millis, singletons: beats.singletons.get(node).cloned().unwrap_or_default() })
    }
}

/// A fencing lease's length for nodes given `grace` (`L` in the module's argument).
fn lease_of(grace: Duration) -> Duration {
    grace / 4
}

/// How recent a leadership confirmation must be to grant a lease (`W`).
fn confirm_window_of(grace: Duration) -> Duration {
    grace / 8
}

/// While this member leads, confirms its leadership with a quorum often enough that leases
/// can be granted ([`Liveness::confirm`]); a leader cut off from the quorum stops confirming.
pub async fn confirm_leadership(store: Arc<Store>, liveness: Arc<Liveness>, shutdown: CancellationToken) {
    let every = (liveness.confirm_window() / 3).max(Duration::from_millis(20));
    loop {
        if let Some(term) = store.leader_term() {
            let started = Instant::now();
            let round = tokio::time::timeout(liveness.confirm_window(), store.read_index());
            if matches!(round.await, Ok(Ok(_))) && store.leader_term() == Some(term) {
                liveness.confirm(term, started);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_first_beat_and_a_beat_after_the_grace_revive_a_node_others_do_not() {
        let liveness = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        liveness.beat("n1", t0);
        assert_eq!(liveness.take_revived(), BTreeSet::from(["n1".to_owned()]));
        liveness.beat("n1", t0 + Duration::from_secs(2));
        assert!(liveness.take_revived().is_empty(), "a beat within the grace revives nothing");
        assert_eq!(liveness.seen("n1"), Some(Seen { at: t0 + Duration::from_secs(2), beat: true }));
        liveness.beat("n1", t0 + Duration::from_secs(6));
        assert_eq!(liveness.take_revived(), BTreeSet::from(["n1".to_owned()]));
    }

    #[test]
    fn a_lease_needs_the_controllers_term_and_a_fresh_confirmation_in_it() {
        let liveness = Liveness::new(Duration::from_secs(8));
        let t0 = Instant::now();
        liveness.set_singletons(HashMap::from([("n1".to_owned(), vec!["uid-1".to_owned()])]));
        liveness.confirm(3, t0);
        assert_eq!(liveness.lease("n1", Some(3), t0), None, "the controllers do not act in term 3 yet");
        liveness.leading(Some(3));
        assert_eq!(liveness.lease("n1", Some(3), t0), None, "a confirmation from before is forgotten");
        liveness.confirm(3, t0);
        let lease = liveness.lease("n1", Some(3), t0 + Duration::from_millis(500)).expect("a lease");
        assert_eq!(lease, Lease { millis: 2000, singletons: vec!["uid-1".into()] });
        assert_eq!(liveness.lease("n2", Some(3), t0).map(|l| l.singletons), Some(vec![]));
        assert_eq!(liveness.lease("n1", Some(4), t0), None, "another term");
        assert_eq!(liveness.lease("n1", None, t0), None, "not leading");
        assert_eq!(liveness.lease("n1", Some(3), t0 + Duration::from_millis(1001)), None, "a stale confirmation");
        liveness.confirm(3, t0 + Duration::from_secs(1));
        assert!(liveness.lease("n1", Some(3), t0 + Duration::from_millis(1500)).is_some(), "confirmed again");
        assert!(liveness.singleton_hold() > liveness.lease_duration() + liveness.confirm_window());
    }

    #[test]
    fn a_grant_starts_every_node_afresh_and_forgets_the_rest() {
        let liveness = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        liveness.beat("gone", t0);
        let later = t0 + Duration::from_secs(10);
        liveness.grant_all(["n1", "n2"], later);
        assert_eq!(liveness.seen("n1"), Some(Seen { at: later, beat: false }));
        assert_eq!(liveness.seen("gone"), None);
        assert!(liveness.take_revived().is_empty());
        // The first beat after a grant is news: it may make a NotReady node Ready.
        liveness.beat("n1", later + Duration::from_millis(10));
        assert_eq!(liveness.take_revived(), BTreeSet::from(["n1".to_owned()]));
    }
}
