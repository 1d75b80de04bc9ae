//! Node liveness held in the raft leader's memory, Nomad-style: a heartbeat costs a map update,
//! not a raft write and a controller pass. The node lifecycle controller reads it; the store is
//! written only when a node's readiness changes (NotReady after the grace period, Ready again
//! when it beats).
//!
//! Times are this control node's monotonic clock at the moment it *received* a beat, so clock
//! skew between machines does not matter. Nothing here survives a change of leader, and need
//! not: a new leader grants every node a fresh grace period ([`Liveness::grant_all`]), so a
//! node is never declared dead for beats that went to the old leader.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

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
    grace: std::time::Duration,
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
