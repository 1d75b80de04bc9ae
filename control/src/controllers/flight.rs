//! Which tasks have writes in flight, so that rounds can overlap (the instances one round
//! creates are scheduled while the next workloads' instances are being created) without a task
//! ever being reconciled against a cache that lacks its own previous writes.
//!
//! A task whose writes are in flight is held back (deferred) until they are done, and then runs
//! again against a cache that has caught up. Scheduling is held back as a whole: a bind in
//! flight uses room on its node that the cache does not show yet, so the next scheduling round
//! waits for it.

use std::collections::HashSet;

use super::queue::Task;

/// Tasks in flight and tasks held back.
#[derive(Default)]
pub struct Flights {
    in_flight: HashSet<Task>,
    scheduling: bool,
    deferred: HashSet<Task>,
}

impl Flights {
    /// Splits `due` into the tasks that may run now and holds back the rest.
    pub fn admit(&mut self, due: Vec<Task>) -> Vec<Task> {
        let mut admitted = Vec::with_capacity(due.len());
        for task in due {
            let blocked = self.in_flight.contains(&task) || (self.scheduling && matches!(task, Task::Schedule(_)));
            if blocked {
                self.deferred.insert(task);
            } else {
                admitted.push(task);
            }
        }
        admitted
    }

    /// `tasks` now have writes in flight.
    pub fn start<'a>(&mut self, tasks: impl IntoIterator<Item = &'a Task>) {
        for task in tasks {
            self.scheduling |= matches!(task, Task::Schedule(_));
            self.in_flight.insert(task.clone());
        }
    }

    /// The writes of `tasks` (one flight) are done; returns the tasks held back meanwhile, to
    /// run again.
    pub fn finish<'a>(&mut self, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<Task> {
        for task in tasks {
            if matches!(task, Task::Schedule(_)) {
                self.scheduling = false;
            }
            self.in_flight.remove(task);
        }
        self.deferred.drain().collect()
    }

    /// Forgets everything (on losing leadership).
    pub fn clear(&mut self) {
        *self = Flights::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Task {
        Task::Workload(name.into())
    }

    fn s(name: &str) -> Task {
        Task::Schedule(name.into())
    }

    #[test]
    fn a_task_in_flight_waits_and_comes_back_when_its_flight_lands() {
        let mut flights = Flights::default();
        let first = flights.admit(vec![w("a"), w("b")]);
        flights.start(&first);
        assert_eq!(flights.admit(vec![w("a"), w("c")]), vec![w("c")]);
        assert_eq!(flights.finish(&first), vec![w("a")]);
        assert_eq!(flights.admit(vec![w("a")]), vec![w("a")]);
    }

    #[test]
    fn scheduling_waits_for_the_binds_in_flight_but_other_tasks_do_not() {
        let mut flights = Flights::default();
        let binds = flights.admit(vec![s("i1")]);
        flights.start(&binds);
        let mut admitted = flights.admit(vec![s("i2"), w("a")]);
        admitted.sort();
        assert_eq!(admitted, vec![w("a")]);
        assert_eq!(flights.finish(&binds), vec![s("i2")]);
        assert_eq!(flights.admit(vec![s("i2")]), vec![s("i2")]);
    }
}
