//! The work queue the reconcilers are fed from: keyed by what to look at, each key at most once
//! (a key added again before it ran keeps the earlier time), with a time for each (now, or a
//! requeue-after), and the one error policy: a task whose writes failed comes back after an
//! exponential back-off, reset by its next success.
//!
//! It is level-triggered: a key says *what* to look at, never what changed, so merging two
//! additions of one key loses nothing.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The first delay after a failure; doubled per further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a reconciler is asked to look at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    /// A workload, by store key (`workloads/<ns>/<name>`): replicas, rollout, status.
    Workload(String),
    /// An instance to place, by store key.
    Schedule(String),
    /// A node's liveness, by node name.
    Node(String),
    /// A Service's endpoints, by store key.
    Endpoints(String),
    /// An instance whose owner may be gone, by store key.
    Collect(String),
    /// A namespace's usage, by name.
    Namespace(String),
    /// A module record that may be unused, by store key (`modules/<namespace>/<sha256>`).
    Module(String),
    /// An Event that may have expired, by store key.
    Event(String),
    /// A Job, by store key (`jobs/<ns>/<name>`): its runs, status and expiry.
    Job(String),
    /// A CronJob, by store key: the Jobs its schedule makes, and their history.
    CronJob(String),
}

impl Task {
    /// What kind of task it is, as a metric's label.
    pub fn label(&self) -> &'static str {
        match self {
            Task::Workload(_) => "workload",
            Task::Schedule(_) => "schedule",
            Task::Node(_) => "node",
            Task::Endpoints(_) => "endpoints",
            Task::Collect(_) => "collect",
            Task::Namespace(_) => "namespace",
            Task::Module(_) => "module",
            Task::Event(_) => "event",
            Task::Job(_) => "job",
            Task::CronJob(_) => "cronjob",
        }
    }
}

/// Keys with the time each is due.
#[derive(Default)]
pub struct WorkQueue {
    due: HashMap<Task, Instant>,
    by_time: BTreeSet<(Instant, Task)>,
    failures: HashMap<Task, u32>,
}

impl WorkQueue {
    /// Asks for `task` to run at `at`, or earlier if it is already due earlier.
    pub fn add(&mut self, task: Task, at: Instant) {
        match self.due.get(&task) {
            Some(existing) if *existing <= at => {}
            Some(existing) => {
                self.by_time.remove(&(*existing, task.clone()));
                self.by_time.insert((at, task.clone()));
                self.due.insert(task, at);
            }
            None => {
                self.by_time.insert((at, task.clone()));
                self.due.insert(task, at);
            }
        }
    }

    /// Takes the tasks due at `now` (at most `most` of them), in the order they fell due.
    pub fn take_due(&mut self, now: Instant, most: usize) -> Vec<Task> {
        let mut taken = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now || taken.len() >= most {
                break;
            }
            let (_, task) = self.by_time.pop_first().expect("a first entry");
            self.due.remove(&task);
            taken.push(task);
        }
        taken
    }

    /// When the next task falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// How many tasks are waiting.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Forgets every task (on losing leadership: the next leader decides).
    pub fn clear(&mut self) {
        self.due.clear();
        self.by_time.clear();
        self.failures.clear();
    }

    /// The error policy: `task` failed at `now`; it runs again after a back-off that doubles
    /// with each failure in a row. Returns the delay.
    pub fn failed(&mut self, task: Task, now: Instant) -> Duration {
        let failures = self.failures.entry(task.clone()).or_default();
        *failures = failures.saturating_add(1);
        let delay = backoff(*failures);
        self.add(task, now + delay);
        delay
    }

    /// `task` succeeded: its next failure starts the back-off afresh.
    pub fn succeeded(&mut self, task: &Task) {
        self.failures.remove(task);
    }
}

/// The delay after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Task {
        Task::Workload(format!("workloads/default/{name}"))
    }

    #[test]
    fn a_key_is_queued_once_at_its_earliest_time() {
        let mut queue = WorkQueue::default();
        let t0 = Instant::now();
        queue.add(w("a"), t0 + Duration::from_secs(5));
        queue.add(w("a"), t0 + Duration::from_secs(1));
        queue.add(w("a"), t0 + Duration::from_secs(9));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(queue.take_due(t0, usize::MAX).is_empty());
        assert_eq!(queue.take_due(t0 + Duration::from_secs(1), usize::MAX), vec![w("a")]);
        assert!(queue.is_empty());
    }

    #[test]
    fn due_tasks_come_out_in_the_order_they_fell_due() {
        let mut queue = WorkQueue::default();
        let t0 = Instant::now();
        queue.add(w("late"), t0 + Duration::from_millis(20));
        queue.add(w("early"), t0 + Duration::from_millis(10));
        queue.add(w("later"), t0 + Duration::from_secs(60));
        assert_eq!(queue.take_due(t0 + Duration::from_secs(1), usize::MAX), vec![w("early"), w("late")]);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_round_takes_at_most_its_share_and_the_rest_stays_due_in_order() {
        let mut queue = WorkQueue::default();
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            queue.add(w(name), t0 + Duration::from_millis(i as u64));
        }
        let later = t0 + Duration::from_secs(1);
        assert_eq!(queue.take_due(later, 2), vec![w("a"), w("b")]);
        assert_eq!(queue.next_due(), Some(t0 + Duration::from_millis(2)), "the rest is still due");
        assert_eq!(queue.take_due(later, 2), vec![w("c")]);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap_and_reset_on_success() {
        let mut queue = WorkQueue::default();
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..10).map(|_| queue.failed(w("a"), t0)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[3], Duration::from_millis(800));
        assert_eq!(*delays.last().unwrap(), MAX_BACKOFF);
        queue.succeeded(&w("a"));
        assert_eq!(queue.failed(w("a"), t0), FIRST_BACKOFF);
    }
}
