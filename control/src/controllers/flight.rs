//! Which tasks have writes in flight, so that rounds can overlap (the instances one round
//! creates are scheduled while the next workloads' instances are being created) without a task
//! ever being reconciled against a cache that lacks its own previous writes.
//!
//! A task whose writes are in flight is held back (deferred) until they are done, and then runs
//! again against a cache that has caught up. (Binds in flight use room that the cache does not
//! show yet: the scheduler counts them itself, as assumed.)

use std::collections::HashSet;

use super::queue::Task;

/// Tasks in flight and tasks held back.
#[derive(Default)]
pub struct Flights {
    in_flight: HashSet<Task>,
    /// Held back by their own writes in flight.
    deferred: HashSet<Task>,
}

impl Flights {
    /// Splits `due` into the tasks that may run now and holds back the rest.
    pub fn admit(&mut self, due: Vec<Task>) -> Vec<Task> {
        let mut admitted = Vec::with_capacity(due.len());
        for task in due {
            if self.in_flight.contains(&task) {
                self.deferred.insert(task);
            } else {
                admitted.push(task);
            }
        }
        admitted
    }

    /// `tasks` now have writes in flight.
    pub fn start<'a>(&mut self, tasks: impl IntoIterator<Item = &'a Task>) {
        self.in_flight.extend(tasks.into_iter().cloned());
    }

    /// The writes of `tasks` (one flight) are done; returns the tasks this held back, to run
    /// again (and only those: the others still wait).
    pub fn finish<'a>(&mut self, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<Task> {
        let mut released = Vec::new();
        for task in tasks {
            self.in_flight.remove(task);
            if let Some(task) = self.deferred.take(task) {
                released.push(task);
            }
        }
        released
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

    #[test]
    fn a_task_in_flight_waits_and_comes_back_when_its_flight_lands() {
        let mut flights = Flights::default();
        let first = flights.admit(vec![w("a"), w("b")]);
        flights.start(&first);
        assert_eq!(flights.admit(vec![w("a"), w("c")]), vec![w("c")]);
        assert_eq!(flights.finish(&first), vec![w("a")]);
        assert_eq!(flights.admit(vec![w("a")]), vec![w("a")]);
    }
}
