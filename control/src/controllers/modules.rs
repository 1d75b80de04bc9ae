//! Module collection: a module record that no Workload or Instance of its namespace has used
//! for the grace period is deleted, which frees the namespace's module storage quota; every
//! member then removes the bytes once no namespace records them ([`crate::blobs`]).
//!
//! When a record became unused is held in the leader's memory, on its monotonic clock: a new
//! leader starts every grace period afresh, which only ever keeps a module longer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::cache::Cache;
use super::writes::{Action, Write};
use crate::store::ObjectKey;

/// Since when each record (by key) has been seen unused.
#[derive(Default)]
pub struct Unused {
    since: HashMap<String, Instant>,
}

impl Unused {
    /// Forgets everything (a new term).
    pub fn clear(&mut self) {
        self.since.clear();
    }
}

/// Reconciles the module record at `key` at `now`.
pub fn reconcile(cache: &Cache, unused: &mut Unused, key: &str, grace: Duration, now: Instant) -> Action {
    if !cache.modules.contains_key(key) || cache.module_users(key) > 0 {
        unused.since.remove(key);
        return Action::none();
    }
    let since = *unused.since.entry(key.to_owned()).or_insert(now);
    let left = grace.saturating_sub(now.saturating_duration_since(since));
    if !left.is_zero() {
        return Action::requeue(left);
    }
    unused.since.remove(key);
    tracing::info!("controllers: {key} unused for {grace:?}; deleting it");
    Action::writes(vec![Write::Delete(ObjectKey(key.to_owned()), None)])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, workload};
    use super::super::queue::Task;
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn deletes(action: &Action) -> Vec<String> {
        action
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(key, _) => Some(key.0.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_unused_module_goes_after_the_grace_and_a_used_one_stays() {
        let mut f = Fixture::default();
        let hex = "ab".repeat(32);
        let key = format!("modules/default/{hex}");
        f.cache.put_module(&key, Some(1000), &mut f.tasks);
        assert!(f.take_tasks().contains(&Task::Module(key.clone())));
        let (mut unused, t0) = (Unused::default(), Instant::now());
        let first = reconcile(&f.cache, &mut unused, &key, GRACE, t0);
        assert!(first.writes.is_empty());
        assert_eq!(first.requeue_after, Some(GRACE), "looked at again when the grace ends");
        let later = reconcile(&f.cache, &mut unused, &key, GRACE, t0 + GRACE / 2);
        assert_eq!(later.requeue_after, Some(GRACE / 2), "the grace counts from when it was first seen unused");
        assert_eq!(deletes(&reconcile(&f.cache, &mut unused, &key, GRACE, t0 + GRACE)), std::slice::from_ref(&key));

        // Used by a workload: kept, and the clock starts again once it is unused.
        let mut w = workload("web", 1);
        w.spec.module = format!("sha256:{hex}");
        f.workload(w.clone());
        assert!(reconcile(&f.cache, &mut unused, &key, GRACE, t0 + GRACE * 2).writes.is_empty());
        f.take_tasks();
        f.cache.put_workload("workloads/default/web", None, &mut f.tasks);
        assert!(f.take_tasks().contains(&Task::Module(key.clone())), "its last user going asks for a look");
        let again = reconcile(&f.cache, &mut unused, &key, GRACE, t0 + GRACE * 3);
        assert_eq!(again.requeue_after, Some(GRACE));

        // A record elsewhere is not used by this namespace's workloads.
        let other = format!("modules/other/{hex}");
        f.workload(w);
        f.cache.put_module(&other, Some(1000), &mut f.tasks);
        assert_eq!(f.cache.module_users(&key), 1);
        assert_eq!(f.cache.module_users(&other), 0);
        assert_eq!((f.cache.module_bytes("default"), f.cache.module_bytes("other")), (1000, 1000));
        f.cache.put_module(&key, None, &mut f.tasks);
        assert_eq!(f.cache.module_bytes("default"), 0);
        assert!(reconcile(&f.cache, &mut unused, &key, GRACE, t0).writes.is_empty(), "a gone record");
    }
}
