//! The node lifecycle controller: a node whose heartbeat has not changed for the grace period is
//! marked NotReady, and the instances bound to a node that is not Ready are deleted, so that
//! their workloads make replacements and the scheduler puts those elsewhere.
//!
//! Staleness is measured on this control node's monotonic clock, from when it *saw* a heartbeat
//! change, so clock skew between machines does not matter; a new leader gives every node a
//! fresh grace period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shoal_api::resources::Condition;

use super::cache::Cache;
use super::writer;
use crate::api::objects::now_rfc3339;
use crate::store::{Store, UpdateScope};

/// Tracks when each node's heartbeat last changed.
pub struct Lifecycle {
    grace: Duration,
    seen: HashMap<String, (Option<String>, Instant)>,
}

impl Lifecycle {
    /// A controller that allows `grace` between heartbeats.
    pub fn new(grace: Duration) -> Self {
        Lifecycle { grace, seen: HashMap::new() }
    }

    /// Forgets every observation (on becoming leader: nobody is stale yet).
    pub fn reset(&mut self) {
        self.seen.clear();
    }

    /// When the next node would go stale, if none changes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.seen.values().map(|(_, at)| *at + self.grace).min()
    }

    /// One pass; returns the writes to make.
    pub fn check<'a>(&mut self, cache: &'a Cache, store: &'a Store, now: Instant) -> Vec<BoxFuture<'a, bool>> {
        let mut writes: Vec<BoxFuture<'a, bool>> = Vec::new();
        self.seen.retain(|name, _| cache.node(name).is_some());
        for node in cache.nodes.values() {
            let name = node.metadata.name.as_str();
            let heartbeat = node.status.as_ref().and_then(|s| s.last_heartbeat.clone());
            let entry = self.seen.entry(name.to_owned()).or_insert_with(|| (heartbeat.clone(), now));
            if entry.0 != heartbeat {
                *entry = (heartbeat, now);
            }
            let ready = node.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True");
            let stale = now.duration_since(entry.1) >= self.grace;
            if ready && stale {
                let mut marked = node.clone();
                let status = marked.status.get_or_insert_with(Default::default);
                status.conditions.retain(|c| c.type_ != "Ready");
                status.conditions.push(Condition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: "NodeStatusUnknown".into(),
                    message: format!("no heartbeat for {:?}", self.grace),
                    last_transition_time: Some(now_rfc3339()),
                });
                tracing::warn!("node {name}: no heartbeat for {:?}; marking it NotReady", self.grace);
                writes.push(Box::pin(async move { writer::update(store, &marked, UpdateScope::Status).await }));
            }
            if !ready || stale {
                for instance in cache.instances.values() {
                    let here = instance.spec.node.as_ref().is_some_and(|n| n.as_str() == name);
                    if here && !instance.phase().is_terminal() {
                        writes.push(Box::pin(writer::delete(store, instance)));
                    }
                }
            }
        }
        writes
    }
}
