//! The node lifecycle controller: a node that has not beaten for the grace period is marked
//! NotReady (Ready=Unknown, `NodeStatusUnknown`), a NotReady node that beats again is marked
//! Ready, and the instances bound to a node that is not Ready are deleted, so that their
//! workloads make replacements and the scheduler puts those elsewhere.
//!
//! Beats are held in the leader's memory ([`Liveness`]), on its own monotonic clock: the store
//! is written only when readiness changes. A reconcile of a live node asks to look again when
//! its grace would run out.

use std::time::{Duration, Instant};

use shoal_api::AnyObject;
use shoal_api::resources::Condition;

use super::cache::{Cache, is_ready};
use super::writes::{Action, Write};
use crate::liveness::Liveness;
use crate::stamp::now_rfc3339;
use crate::store::UpdateScope;

/// A little past the deadline, so that the look after it sees the node stale.
const SLACK: Duration = Duration::from_millis(10);

fn ready_condition(status: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: Some(now_rfc3339()),
    }
}

/// Reconciles node `name` at `now`, with `grace` between beats.
pub fn reconcile(cache: &Cache, liveness: &Liveness, name: &str, grace: Duration, now: Instant) -> Action {
    let Some(node) = cache.node(name) else {
        // A deleted node: what was bound to it runs nowhere the cluster knows of.
        liveness.forget(name);
        let stranded = cache.instances_on(name).filter(|i| !i.phase().is_terminal());
        return Action::writes(stranded.map(Write::delete).collect());
    };
    // A node first seen since this member leads gets a full grace period.
    let seen = liveness.seen(name).unwrap_or_else(|| liveness.grant(name, now));
    let alive = now.saturating_duration_since(seen.at) < grace;
    let ready = is_ready(node);
    let mut writes = Vec::new();
    let condition = match (ready, alive) {
        (true, false) => {
            tracing::warn!("node {name}: no heartbeat for {grace:?}; marking it NotReady");
            Some(ready_condition("Unknown", "NodeStatusUnknown", format!("no heartbeat for {grace:?}")))
        }
        // Back, after it was marked NotReady: only a beat says so, not a grace period granted
        // (a node that never wrote a status has no capacity to offer yet: its agent writes the
        // status, Ready, itself).
        (false, true) if seen.beat && node.status.is_some() => {
            tracing::info!("node {name}: heartbeating again; marking it Ready");
            Some(ready_condition("True", "NodeHeartbeating", "the node agent is heartbeating".into()))
        }
        _ => None,
    };
    let ready_after = match &condition {
        Some(c) => c.status == "True",
        None => ready && alive,
    };
    if let Some(condition) = condition {
        let mut marked = node.clone();
        let status = marked.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.type_ != "Ready");
        status.conditions.push(condition);
        writes.push(Write::Update(AnyObject::Node(marked), UpdateScope::Status));
    }
    if !ready_after {
        let doomed = cache.instances_on(name).filter(|i| !i.phase().is_terminal());
        writes.extend(doomed.map(Write::delete));
    }
    let requeue_after = alive.then(|| (seen.at + grace).saturating_duration_since(now) + SLACK);
    Action { writes, requeue_after }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, deleted, node, serving, with_ready, workload};
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);

    fn marked(action: &Action) -> Option<String> {
        action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::Node(n), UpdateScope::Status) => {
                n.status.as_ref()?.ready().map(|c| c.status.clone())
            }
            _ => None,
        })
    }

    #[test]
    fn a_beating_node_is_looked_at_again_when_its_grace_would_end() {
        let mut f = Fixture::default();
        f.node(node("a", 1024, 1000, 10));
        let liveness = Liveness::new(GRACE);
        let t0 = Instant::now();
        liveness.beat("a", t0);
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0 + Duration::from_secs(1));
        assert!(action.writes.is_empty());
        assert_eq!(action.requeue_after, Some(Duration::from_secs(2) + SLACK));
    }

    #[test]
    fn a_node_first_seen_gets_a_whole_grace_period() {
        let mut f = Fixture::default();
        f.node(node("a", 1024, 1000, 10));
        let liveness = Liveness::new(GRACE);
        let t0 = Instant::now();
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0);
        assert!(action.writes.is_empty());
        assert_eq!(action.requeue_after, Some(GRACE + SLACK));
    }

    #[test]
    fn a_silent_node_is_marked_not_ready_and_its_instances_deleted() {
        let w = workload("web", 2);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10)).node(node("b", 1024, 1000, 10));
        f.instance(serving(&w, "web-a", "a")).instance(serving(&w, "web-b", "b"));
        let liveness = Liveness::new(GRACE);
        let t0 = Instant::now();
        liveness.beat("a", t0);
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0 + GRACE);
        assert_eq!(marked(&action).as_deref(), Some("Unknown"));
        assert_eq!(deleted(&action), ["instances/default/web-a"]);
        assert_eq!(action.requeue_after, None, "a dead node waits for a beat, not a timer");
    }

    /// Node `a`, marked NotReady, with instance `web-a` still bound to it.
    fn not_ready_node_with_an_instance() -> (Fixture, Liveness, Instant) {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(with_ready(node("a", 1024, 1000, 10), "Unknown"));
        f.instance(serving(&w, "web-a", "a"));
        (f, Liveness::new(GRACE), Instant::now())
    }

    #[test]
    fn a_not_ready_node_that_beats_again_is_marked_ready_and_keeps_its_instances() {
        let (f, liveness, t0) = not_ready_node_with_an_instance();
        liveness.beat("a", t0);
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0 + Duration::from_millis(100));
        assert_eq!(marked(&action).as_deref(), Some("True"));
        assert!(deleted(&action).is_empty());
    }

    #[test]
    fn a_grace_period_granted_by_a_new_leader_does_not_make_a_not_ready_node_ready() {
        let (f, liveness, t0) = not_ready_node_with_an_instance();
        liveness.grant_all(["a"], t0);
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0 + Duration::from_millis(100));
        assert_eq!(marked(&action), None);
        assert_eq!(deleted(&action), ["instances/default/web-a"], "nothing may stay on a NotReady node");
    }

    #[test]
    fn a_deleted_node_leaves_nothing_bound_to_it() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).instance(serving(&w, "web-a", "gone"));
        let liveness = Liveness::new(GRACE);
        let action = reconcile(&f.cache, &liveness, "gone", GRACE, Instant::now());
        assert_eq!(deleted(&action), ["instances/default/web-a"]);
    }

    #[test]
    fn a_not_ready_silent_node_loses_what_is_still_bound_to_it() {
        let (f, liveness, t0) = not_ready_node_with_an_instance();
        liveness.beat("a", t0);
        let action = reconcile(&f.cache, &liveness, "a", GRACE, t0 + GRACE * 2);
        assert_eq!(marked(&action), None, "already marked");
        assert_eq!(deleted(&action), ["instances/default/web-a"]);
    }
}
