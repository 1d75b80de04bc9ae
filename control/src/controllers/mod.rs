//! The controllers and the scheduler: reconcile loops that run on the raft leader and turn what
//! users declared into what nodes run.
//!
//! # Layout
//! - [`cache`]: typed copies of workloads, instances and nodes, fed by the local change history.
//! - [`workload`]: replicas, rollouts, owner references, workload status.
//! - [`scheduler`]: binds Pending instances to nodes.
//! - [`lifecycle`]: nodes that stop heartbeating become NotReady; their instances move.
//! - [`endpoints`]: which nodes serve each Service.
//! - [`writer`]: the raft writes they make.
//!
//! One task runs them all, level-triggered: after every change to the store (and at least every
//! [`RESYNC`]), it brings the cache up to date and, on the leader, runs one pass of each and
//! waits for the writes that pass decided. Every member keeps its cache warm, so a new leader
//! acts at once.

pub mod cache;
pub mod endpoints;
pub mod lifecycle;
pub mod scheduler;
pub mod workload;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::cache::Cache;
use self::lifecycle::Lifecycle;
use self::scheduler::Scheduler;
use crate::store::Store;

/// The longest the loop sleeps without a change.
pub const RESYNC: Duration = Duration::from_millis(500);

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How long a node may go without a heartbeat before it is marked NotReady.
    pub node_grace: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions { node_grace: Duration::from_secs(3) }
    }
}

/// Runs the controllers until `shutdown`.
pub async fn run(store: Arc<Store>, options: ControllerOptions, shutdown: CancellationToken) {
    let mut cache = Cache::default();
    let mut scheduler = Scheduler::default();
    let mut lifecycle = Lifecycle::new(options.node_grace);
    let mut applied = store.reader().subscribe();
    let mut leading = false;
    loop {
        applied.borrow_and_update();
        if let Err(e) = cache.sync(store.reader()) {
            tracing::error!("controllers: reading the store failed: {e}");
        }
        let leader = store.is_leader();
        if leader && !leading {
            tracing::info!("controllers: leading; reconciling");
            lifecycle.reset();
        }
        leading = leader;
        let mut wait = RESYNC;
        if leader {
            let mut writes = workload::reconcile(&cache, &store);
            writes.extend(scheduler.schedule(&cache, &store));
            writes.extend(lifecycle.check(&cache, &store, Instant::now()));
            writes.extend(endpoints::reconcile(&cache, &store));
            if !writes.is_empty() {
                let done = futures::future::join_all(writes).await;
                if done.iter().any(|ok| *ok) {
                    continue;
                }
            }
            if let Some(deadline) = lifecycle.next_deadline() {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(10));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
