//! Garbage collection: an instance whose owner is gone (its workload or Job was deleted, or
//! deleted and made again, which gives it another uid) is deleted. A reconcile looks at one instance;
//! it is asked to when the instance appears without its owner, or when the owner goes.

use super::cache::Cache;
use super::triggers::owns;
use super::writes::{Action, Write};

/// Reconciles the instance at `key`.
pub fn reconcile(cache: &Cache, key: &str) -> Action {
    let Some(instance) = cache.instances.get(key) else { return Action::none() };
    let owned = match &instance.spec.workload {
        Some(_) => cache.owner(instance).is_some_and(|w| owns(w, instance)),
        // A Job's, or no one's (an instance the admin made by hand stays).
        None => super::cache::owner_key(instance).is_none() || cache.job_owns(instance),
    };
    if owned {
        return Action::none();
    }
    Action::writes(vec![Write::delete(instance)])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, deleted, serving, workload};
    use super::*;

    #[test]
    fn an_instance_whose_workload_is_gone_or_replaced_is_deleted() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.instance(serving(&w, "web-1", "a"));
        assert_eq!(deleted(&reconcile(&f.cache, "instances/default/web-1")), ["instances/default/web-1"]);

        f.workload(w.clone());
        assert!(reconcile(&f.cache, "instances/default/web-1").writes.is_empty(), "its owner is back");

        let mut replaced = w.clone();
        replaced.metadata.uid = Some("another".into());
        f.workload(replaced);
        assert_eq!(deleted(&reconcile(&f.cache, "instances/default/web-1")), ["instances/default/web-1"]);
    }

    #[test]
    fn deleting_a_workload_names_its_instances_for_collection() {
        let w = workload("web", 2);
        let mut f = Fixture::default();
        f.workload(w.clone()).instance(serving(&w, "web-1", "a")).instance(serving(&w, "web-2", "a"));
        f.take_tasks();
        let key = "workloads/default/web";
        f.cache.put_workload(key, None, &mut f.tasks);
        let tasks = f.take_tasks();
        for name in ["web-1", "web-2"] {
            assert!(
                tasks.contains(&super::super::queue::Task::Collect(format!("instances/default/{name}"))),
                "{tasks:?}"
            );
        }
    }
}
