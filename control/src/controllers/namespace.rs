//! The namespace controller: keeps each Namespace's `status.usage` (what its live instances
//! request, how many there are, and what its modules take) current, for `shoal get` and for people sizing quotas.
//! Quotas themselves are enforced where usage would rise (the workload controller, with
//! [`super::quota`]), not here.
//!
//! A deleted Namespace is first marked Terminating (by the API server); this controller then
//! deletes what it holds (workloads, services, instances, events, module records), at most
//! [`MAX_DELETES_PER_PASS`] a pass, and the Namespace once it is empty.

use shoal_api::AnyObject;
use shoal_api::quantity::{Cpu, Memory};
use std::time::Duration;

use shoal_api::resources::namespace::{Namespace, NamespaceKind, NamespaceStatus, Quota};

use super::cache::Cache;
use super::writes::{Action, Write};
use crate::store::{ObjectKey, UpdateScope};

/// How many objects one pass over a Terminating namespace deletes at most.
pub const MAX_DELETES_PER_PASS: usize = 500;

/// How soon a Terminating namespace is looked at again (after its deletes have landed).
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// Reconciles the namespace called `name`.
pub fn reconcile(cache: &Cache, name: &str) -> Action {
    let Some(namespace) = cache.namespace(name) else { return Action::none() };
    if NamespaceKind::is_terminating(namespace) {
        return empty(cache, namespace, name);
    }
    let used = cache.usage(name);
    let module_bytes = cache.module_bytes(name);
    // A namespace that never held an instance or a module keeps no status: nothing to say,
    // and no write that would bump the resourceVersion a user just read.
    if namespace.status.is_none() && used == Default::default() && module_bytes == 0 {
        return Action::none();
    }
    // Kept within what a quantity may say, so that the status always parses back.
    let usage = Quota {
        memory: Some(Memory(used.memory.min(shoal_api::quantity::MAX_MEMORY))),
        cpu: Some(Cpu(used.cpu.min(shoal_api::quantity::MAX_CPU_MILLI))),
        instances: Some(used.instances),
        module_bytes: Some(Memory(module_bytes)),
    };
    let status = NamespaceStatus { usage, phase: None };
    if namespace.status.as_ref() == Some(&status) {
        return Action::none();
    }
    let mut updated = namespace.clone();
    updated.status = Some(status);
    Action::writes(vec![Write::Update(AnyObject::Namespace(updated), UpdateScope::Status)])
}

/// Deletes what the Terminating namespace `name` holds, a bounded number at a time, and the
/// namespace itself once nothing is left.
fn empty(cache: &Cache, namespace: &Namespace, name: &str) -> Action {
    let mut doomed = cache.keys_in(name);
    if doomed.is_empty() {
        tracing::info!("controllers: namespace {name} is empty; deleting it");
        return Action::writes(vec![Write::delete(namespace)]);
    }
    doomed.truncate(MAX_DELETES_PER_PASS);
    Action {
        writes: doomed.into_iter().map(|k| Write::Delete(ObjectKey(k), None)).collect(),
        requeue_after: Some(LOOK_AGAIN),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, instance, workload};
    use super::*;
    use shoal_api::resources::instance::Phase;
    use shoal_api::resources::namespace::Namespace;
    use shoal_api::resources::workload::Resources;

    fn usage_written(action: &Action) -> Option<Quota> {
        action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::Namespace(n), UpdateScope::Status) => n.status.as_ref().map(|s| s.usage.clone()),
            _ => None,
        })
    }

    #[test]
    fn usage_counts_live_instances_and_is_written_only_when_it_changes() {
        let mut f = Fixture::default();
        let ns = Namespace::new(shoal_api::Name::new("default").unwrap(), None, Default::default());
        f.namespace(ns.clone());
        let w = workload("web", 2);
        let mut a = instance(&w, "web-a", None, Phase::Pending, false);
        a.spec.resources = Resources { memory: Some(Memory(32 << 20)), cpu: Some(Cpu(100)) };
        let mut ended = a.clone();
        ended.metadata.name = shoal_api::Name::new("web-b").unwrap();
        ended.status =
            Some(shoal_api::resources::instance::InstanceStatus { phase: Phase::Failed, ..Default::default() });
        f.workload(w).instance(a).instance(ended);
        let usage = usage_written(&reconcile(&f.cache, "default")).expect("a usage");
        assert_eq!((usage.instances, usage.memory, usage.cpu), (Some(1), Some(Memory(32 << 20)), Some(Cpu(100))));
        let mut current = ns;
        current.status = Some(NamespaceStatus { usage, phase: None });
        f.namespace(current);
        assert!(reconcile(&f.cache, "default").writes.is_empty(), "no change, no write");
        assert!(reconcile(&f.cache, "elsewhere").writes.is_empty(), "no namespace object, nothing to write");
        let mut f = Fixture::default();
        f.namespace(Namespace::new(shoal_api::Name::new("default").unwrap(), None, Default::default()));
        assert!(reconcile(&f.cache, "default").writes.is_empty(), "a namespace that never held an instance");
    }
}
