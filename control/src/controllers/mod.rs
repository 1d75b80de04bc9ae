//! The controllers and the scheduler: reconcilers that run on the raft leader and turn what
//! users declared into what nodes run.
//!
//! # Layout
//! - [`cache`]: typed copies of workloads, instances, nodes and services, with indexes, fed by
//!   the local change history.
//! - [`triggers`]: which tasks a change concerns.
//! - [`queue`]: the work queue (one entry per task, requeue-after, the error policy).
//! - [`writes`]: writes as data, and how the runner makes them.
//! - [`flight`]: which tasks have writes in flight (rounds overlap; a task never does).
//! - The reconcilers, each a function of the cache and one key that returns an [`Action`]:
//!   [`workload`] (replicas, rollouts, status), [`scheduler`] (binds pending instances),
//!   [`lifecycle`] (node liveness → NotReady, instances moved), [`endpoints`] (Service →
//!   serving nodes), [`gc`] (instances whose owner is gone), [`namespace`] (usage),
//!   [`modules`] (module records nothing uses), [`events`] (expired Events), [`job`] and
//!   [`cronjob`]; [`singleton`], which holds back a singleton's replacement; and
//!   [`autoscale`], the replicas of autoscaled workloads, decided from the
//!   load the nodes report ([`crate::load`]) as their workload is reconciled.
//!
//! # The loop
//! One task per control node ([`run`]), shaped like kube-rs' controller runtime: after every
//! applied change it brings the cache up to date, which names the tasks the changes concern;
//! on the leader those go into the queue, and every task that is due is reconciled against the
//! cache. The writes of a round are made together (the proposer packs them into raft entries)
//! while the next rounds go on; a task whose writes are still in flight waits for them and then
//! runs against a cache that has caught up, so no task decides without its own previous writes
//! (the scheduler counts its binds in flight itself). A task whose writes failed comes back
//! after a back-off; one that asked to be looked at again comes back then; and every
//! [`ControllerOptions::resync`] every task runs once (level-triggered: whatever a missed change
//! left undone is done then). Every member keeps its cache warm, so a
//! new leader acts at once: it grants every node a fresh grace period and reconciles all.

pub mod autoscale;
pub mod cache;
pub mod cronjob;
pub mod endpoints;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod flight;
pub mod gc;
pub mod job;
pub mod lifecycle;
pub mod modules;
pub mod namespace;
pub mod queue;
pub mod quota;
pub mod scheduler;
pub mod singleton;
pub mod triggers;
pub mod workload;
pub mod writes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shoal_api::AnyObject;
use shoal_api::resources::instance::Instance;
use tokio_util::sync::CancellationToken;

use self::cache::Cache;
use self::flight::Flights;
use self::queue::{Task, WorkQueue};
use self::scheduler::Scheduler;
pub use self::writes::{Action, Write};
use crate::liveness::Liveness;
use crate::load::Load;
use crate::store::{ObjectKey, Store};

/// How many writes of one round are in flight at once.
const WRITES_IN_FLIGHT: usize = 4096;

/// How many tasks one round of reconciles takes at most. A round runs without a pause on one
/// of the runtime's threads: a resync at 150,000 instances is over 150,000 tasks, which in one
/// round would keep that thread from the API, the heartbeats and raft until it was done.
/// Thousands still make one batch of binds per round.
const MAX_TASKS_PER_ROUND: usize = 4096;

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How long a node may go without a heartbeat before it is marked NotReady.
    pub node_grace: Duration,
    /// How often every task runs, changed or not.
    pub resync: Duration,
    /// How long a module no Workload or Instance uses is kept (its record, and then its
    /// bytes on every member).
    pub module_grace: Duration,
    /// How long an Event is kept after it last happened.
    pub event_ttl: Duration,
    /// How long a Job waits after its first failed run before the next (doubling per failure).
    pub job_backoff: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            node_grace: Duration::from_secs(10),
            resync: Duration::from_secs(60),
            module_grace: Duration::from_secs(600),
            event_ttl: Duration::from_secs(3600),
            job_backoff: Duration::from_secs(10),
        }
    }
}

/// The reconcilers' state across rounds.
struct Controllers {
    cache: Cache,
    queue: WorkQueue,
    scheduler: Scheduler,
    /// Creates in flight, charged to their namespaces' quotas.
    charges: quota::Charges,
    /// Since when unused module records have been unused.
    unused_modules: modules::Unused,
    liveness: Arc<Liveness>,
    /// Autoscaled workloads' load, as the nodes report it.
    load: Arc<Load>,
    /// The stable windows of autoscaled workloads.
    autoscaler: autoscale::Autoscaler,
    /// Queue depth, reconcile times, writes and binds.
    metrics: Arc<crate::metrics::Metrics>,
    /// Since when each pending instance has waited for a node, as this leader saw it.
    waiting: HashMap<String, Instant>,
    /// Singleton workloads waiting for a replacement.
    singletons: singleton::Holds,
    /// When this member's controllers last took over as leader.
    leading_since: Instant,
    options: ControllerOptions,
}

impl Controllers {
    /// Reconciles `tasks` at `now`; returns each task with its action. Schedule tasks are
    /// placed together, in key order, so that their binds share one view of the room left.
    fn reconcile(&mut self, tasks: Vec<Task>, now: Instant) -> Vec<(Task, Action)> {
        let mut to_place = Vec::new();
        let mut done = Vec::with_capacity(tasks.len());
        for task in tasks {
            let started = Instant::now();
            let action = match &task {
                Task::Schedule(key) => {
                    to_place.push(key.clone());
                    continue;
                }
                Task::Workload(key) | Task::Job(key) => {
                    let ns = key.split('/').nth(1).unwrap_or("default");
                    let action = match &task {
                        Task::Job(_) => job::reconcile(
                            &self.cache,
                            key,
                            self.options.job_backoff,
                            self.charges.of(ns),
                            std::time::SystemTime::now(),
                        ),
                        _ => self.reconcile_workload(key, now),
                    };
                    for write in &action.writes {
                        if let Write::Create(AnyObject::Instance(instance)) = write {
                            let (memory, cpu) = cache::requests(instance);
                            self.charges.charge(writes::key_of(instance).0, ns, memory, cpu);
                        }
                    }
                    action
                }
                Task::CronJob(key) => cronjob::reconcile(&self.cache, key, std::time::SystemTime::now()),
                Task::Namespace(name) => namespace::reconcile(&self.cache, name),
                Task::Node(name) => {
                    lifecycle::reconcile(&self.cache, &self.liveness, name, self.options.node_grace, now)
                }
                Task::Endpoints(key) => endpoints::reconcile(&self.cache, key),
                Task::Collect(key) => gc::reconcile(&self.cache, key),
                Task::Event(key) => {
                    events::reconcile(&self.cache, key, self.options.event_ttl, std::time::SystemTime::now())
                }
                Task::Module(key) => {
                    modules::reconcile(&self.cache, &mut self.unused_modules, key, self.options.module_grace, now)
                }
            };
            let label = crate::metrics::TaskLabels { task: task.label() };
            self.metrics.reconcile_latency.get_or_create(&label).observe(started.elapsed().as_secs_f64());
            done.push((task, action));
        }
        to_place.sort();
        let started = Instant::now();
        let mut fresh: Vec<&mut Instance> = done
            .iter_mut()
            .flat_map(|(_, action)| action.writes.iter_mut())
            .filter_map(|write| match write {
                Write::Create(AnyObject::Instance(instance)) => Some(instance),
                _ => None,
            })
            .collect();
        for key in &to_place {
            self.waiting.entry(key.clone()).or_insert(now);
        }
        let placed = self.scheduler.schedule(&self.cache, &to_place, &mut fresh);
        let bound_fresh = fresh.iter().filter(|i| i.spec.node.is_some()).count();
        let took = started.elapsed().as_secs_f64();
        if !to_place.is_empty() || bound_fresh > 0 {
            let label = crate::metrics::TaskLabels { task: "schedule" };
            self.metrics.reconcile_latency.get_or_create(&label).observe(took);
        }
        let mut binds = 0;
        for (key, action) in to_place.iter().zip(&placed) {
            if action.writes.iter().any(|w| matches!(w, Write::Bind(..))) {
                binds += 1;
                let waited = self.waiting.remove(key).map_or(0.0, |since| since.elapsed().as_secs_f64());
                self.metrics.bind_latency.observe(waited.max(took));
            }
        }
        for _ in 0..bound_fresh {
            self.metrics.bind_latency.observe(took);
        }
        self.metrics.binds.inc_by((binds + bound_fresh) as u64);
        // Those no longer pending (deleted, ended) before a bind are forgotten.
        if self.waiting.len() > self.cache.pending().len() {
            let pending = self.cache.pending();
            self.waiting.retain(|key, _| pending.contains(key));
        }
        self.metrics.pending.set(self.cache.pending().len() as i64);
        done.extend(to_place.into_iter().map(Task::Schedule).zip(placed));
        done
    }

    /// Reconciles the workload at `key`, with the replicas the autoscaler decides for it now
    /// if it is autoscaled (looked at again when they may fall).
    fn reconcile_workload(&mut self, key: &str, now: Instant) -> Action {
        let ns = key.split('/').nth(1).unwrap_or("default");
        let decision = match self.cache.workloads.get(key) {
            Some(w) => match &w.spec.autoscale {
                Some(autoscale) => {
                    let current = self
                        .cache
                        .instances_of(key)
                        .filter(|i| triggers::owns(w, i) && !i.phase().is_terminal())
                        .count() as u32;
                    Some(self.autoscaler.decide(&self.load, key, w, autoscale, current, now))
                }
                None => None,
            },
            None => None,
        };
        if decision.is_none() {
            self.autoscaler.forget(key);
            self.load.forget(key);
        }
        let mut action = workload::reconcile(&self.cache, key, self.charges.of(ns), decision.map(|d| d.replicas));
        if let Some(recheck) = decision.and_then(|d| d.recheck) {
            action.requeue_after = Some(action.requeue_after.map_or(recheck, |after| after.min(recheck)));
        }
        match self.cache.workloads.get(key).filter(|w| w.spec.singleton) {
            Some(_) => {
                let live = self.cache.instances_of(key).any(|i| !i.phase().is_terminal());
                let timing = singleton::Timing {
                    hold: self.liveness.singleton_hold(),
                    leading_since: self.leading_since,
                    takeover: self.options.node_grace,
                };
                self.singletons.apply(key, live, timing, now, &mut action);
            }
            None => self.singletons.forget(key),
        }
        action
    }

    /// Records how `task` went: a success resets its back-off and, if it asked, brings it back
    /// after `requeue_after`; a failure brings it back after the back-off (and frees the room a
    /// failed bind had taken). Returns whether it succeeded.
    fn settle(&mut self, task: Task, requeue_after: Option<Duration>, ok: bool, now: Instant) -> bool {
        if !ok {
            self.queue.failed(task, now);
            return false;
        }
        self.queue.succeeded(&task);
        if let Some(after) = requeue_after {
            self.queue.add(task, now + after);
        }
        true
    }
}

/// What one flight of writes did: per task, when to look again and whether all its writes
/// were made; and the keys of the writes that were not.
struct Outcomes {
    tasks: Vec<(Task, Option<Duration>, bool)>,
    failed: Vec<ObjectKey>,
}

/// Makes the writes of one round; returns, per task, whether all its writes were made.
async fn make_writes(store: &Store, round: Vec<(Task, Action)>) -> Outcomes {
    let mut outcomes = Vec::with_capacity(round.len());
    let mut failed = Vec::new();
    let mut writes = Vec::new();
    for (i, (task, action)) in round.into_iter().enumerate() {
        outcomes.push((task, action.requeue_after, true));
        writes.extend(action.writes.into_iter().map(move |w| (i, w)));
    }
    let count = writes.len();
    let started = Instant::now();
    let mut made = futures::stream::iter(writes)
        .map(|(i, write)| async move {
            let key = write.key();
            (i, key, writes::execute(store, write).await)
        })
        .buffer_unordered(WRITES_IN_FLIGHT);
    while let Some((i, key, ok)) = made.next().await {
        outcomes[i].2 &= ok;
        if !ok {
            failed.push(key);
        }
    }
    if count > 0 {
        tracing::debug!("controllers: {} tasks, {count} writes made in {:?}", outcomes.len(), started.elapsed());
    }
    Outcomes { tasks: outcomes, failed }
}

/// Runs the controllers until `shutdown`.
pub async fn run(
    store: Arc<Store>,
    liveness: Arc<Liveness>,
    load: Arc<Load>,
    metrics: Arc<crate::metrics::Metrics>,
    options: ControllerOptions,
    shutdown: CancellationToken,
) {
    let mut c = Controllers {
        cache: Cache::default(),
        queue: WorkQueue::default(),
        scheduler: Scheduler::default(),
        charges: quota::Charges::default(),
        unused_modules: modules::Unused::default(),
        liveness,
        load,
        autoscaler: autoscale::Autoscaler::default(),
        metrics,
        waiting: HashMap::new(),
        singletons: singleton::Holds::default(),
        leading_since: Instant::now(),
        options,
    };
    let mut flights = Flights::default();
    let mut landing = FuturesUnordered::new();
    let mut applied = store.reader().subscribe();
    // The term this member leads in, as far as the loop has acted on it.
    let mut leading: Option<u64> = None;
    let mut next_resync = Instant::now() + c.options.resync;
    loop {
        applied.borrow_and_update();
        let term = store.leader_term();
        if term.is_some() && term != leading {
            // Before deciding anything, apply what earlier leaders committed: binds this member
            // has not applied yet still take room on their nodes.
            if let Err(e) = store.linearize().await {
                tracing::info!("controllers: not acting as leader yet: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        }
        let changed = match c.cache.sync(store.reader()) {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::error!("controllers: reading the store failed: {e}");
                Vec::new()
            }
        };
        if let Some(singletons) = c.cache.take_singletons() {
            c.liveness.set_singletons(singletons);
        }
        let seen = c.cache.take_changed_instances();
        c.scheduler.seen(&c.cache, &seen);
        for key in &seen {
            c.charges.release(key);
        }
        let now = Instant::now();
        if term != leading {
            // A new term (or none): nothing decided before it is still ours to finish.
            c.queue.clear();
            flights.clear();
            c.scheduler.forget_assumed();
            c.charges.clear();
            c.unused_modules.clear();
            // Until the nodes have reported to this leader, nothing is scaled down.
            c.autoscaler.clear(now, c.options.node_grace);
            c.load.clear();
            c.singletons.clear();
            c.leading_since = now;
            // Leases are granted in this term from now on, with the singletons just published.
            c.liveness.leading(term);
            landing = FuturesUnordered::new();
            if term.is_some() {
                tracing::info!("controllers: leading; reconciling everything");
                c.liveness.grant_all(c.cache.nodes.values().map(|n| n.metadata.name.as_str()), now);
                for task in c.cache.every_task() {
                    c.queue.add(task, now);
                }
            }
            leading = term;
        }
        let leader = term.is_some();
        if leader {
            for task in changed {
                c.queue.add(task, now);
            }
            for node in c.liveness.take_revived() {
                c.queue.add(Task::Node(node), now);
            }
            for workload in c.load.take_poked() {
                c.queue.add(Task::Workload(workload), now);
            }
            if now >= next_resync {
                for task in c.cache.every_task() {
                    c.queue.add(task, now);
                }
                next_resync = now + c.options.resync;
            }
            let due = flights.admit(c.queue.take_due(now, MAX_TASKS_PER_ROUND));
            let (round, settled): (Vec<_>, Vec<_>) =
                c.reconcile(due, now).into_iter().partition(|(_, action)| !action.writes.is_empty());
            for (task, action) in settled {
                c.settle(task, action.requeue_after, true, now);
            }
            c.metrics.queue_depth.set(c.queue.len() as i64);
            if !round.is_empty() {
                let writes: usize = round.iter().map(|(_, action)| action.writes.len()).sum();
                c.metrics.controller_writes.inc_by(writes as u64);
                flights.start(round.iter().map(|(task, _)| task));
                landing.push(make_writes(&store, round));
            }
        }
        if leader && c.queue.next_due().is_some_and(|due| due <= now) {
            // More is due than one round takes (a resync of 150,000 objects): let the API and
            // raft have this thread between rounds.
            tokio::task::yield_now().await;
        }
        let wake = match c.queue.next_due().filter(|_| leader) {
            Some(due) => due.min(next_resync),
            None => next_resync,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
            Some(outcomes) = landing.next(), if !landing.is_empty() => {
                let now = Instant::now();
                let deferred = flights.finish(outcomes.tasks.iter().map(|(task, _, _)| task));
                // A bind or a bound create that failed took room that is free again.
                for key in &outcomes.failed {
                    c.scheduler.forget(&key.0);
                    c.charges.release(&key.0);
                }
                let mut failed = std::collections::HashSet::new();
                for (task, requeue_after, ok) in outcomes.tasks {
                    if !c.settle(task.clone(), requeue_after, ok, now) {
                        failed.insert(task);
                    }
                }
                // Held back meanwhile: run again, except what just failed (it waits its back-off).
                for task in deferred.into_iter().filter(|t| !failed.contains(t)) {
                    c.queue.add(task, now);
                }
            }
            _ = c.liveness.revived(), if leader => {}
            _ = c.load.poked(), if leader => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
