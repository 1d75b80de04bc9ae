//! Which reconcile tasks a change concerns: the map from "this object changed" to "look at
//! these keys", so that the cost of a change is what it touches. Each function sees the object
//! before and after the change (`None`: did not exist / was deleted) and the cache around it.

use shoal_api::resources::cronjob::CronJob;
use shoal_api::resources::instance::Instance;
use shoal_api::resources::job::Job;
use shoal_api::resources::namespace::Namespace;
use shoal_api::resources::node::Node;
use shoal_api::resources::workload::Workload;

use super::cache::{Cache, is_ready, namespace_of, owner_key, owner_task};
use super::endpoints::selects;
use super::queue::Task;
use super::workload::REPLICA_FAILURE;
use super::writes::key_of;

/// A workload changed: look at it, and at every instance naming it when it is gone or is
/// another workload now (its uid changed), for garbage collection.
pub fn workload(cache: &Cache, key: &str, old: Option<&Workload>, new: Option<&Workload>, tasks: &mut Vec<Task>) {
    tasks.push(Task::Workload(key.to_owned()));
    if replaced(old, new) {
        tasks.extend(cache.instances_of(key).map(|i| Task::Collect(key_of(i).0)));
    }
}

/// An instance changed: its workload counts it; an unbound one needs a node; one whose owner
/// is missing is garbage; the Services that select it may gain or lose an endpoint; and a
/// bound one that ended or went away freed room that pending instances may fit into.
pub fn instance(cache: &Cache, key: &str, old: Option<&Instance>, new: Option<&Instance>, tasks: &mut Vec<Task>) {
    // The queue keeps one entry per task, so naming the same owner twice costs nothing.
    tasks.extend([old, new].into_iter().flatten().filter_map(owner_key).map(owner_task));
    if let Some(new) = new {
        if new.spec.node.is_none() && !new.phase().is_terminal() {
            tasks.push(Task::Schedule(key.to_owned()));
        }
        if new.spec.workload.is_some() && !cache.owner(new).is_some_and(|w| owns(w, new))
            || new.spec.workload.is_none() && owner_key(new).is_some() && !cache.job_owns(new)
        {
            tasks.push(Task::Collect(key.to_owned()));
        }
    }
    for either in [old, new].into_iter().flatten() {
        let ns = either.metadata.namespace.as_ref().map_or("", |n| n.as_str());
        for (service_key, service) in cache.services_in(ns) {
            if selects(service, either) {
                tasks.push(Task::Endpoints(service_key.clone()));
            }
        }
    }
    // What the namespace uses changed when an instance came, went, or ended: its usage, and
    // the workloads that a full quota held back.
    let live = |i: Option<&Instance>| i.is_some_and(|i| !i.phase().is_terminal());
    if live(old) != live(new) {
        let ns = namespace_of(new.or(old).expect("one of them is live"));
        if let Some(namespace) = cache.namespace(ns) {
            tasks.push(Task::Namespace(ns.to_owned()));
            if live(old) && namespace.spec.quota.is_some() {
                // Only those the quota held back: the rest have what they want.
                let held_back = |w: &Workload| {
                    w.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == REPLICA_FAILURE))
                };
                tasks.extend(
                    cache.workloads_in(ns).filter(|(_, w)| held_back(w)).map(|(k, _)| Task::Workload(k.clone())),
                );
            }
        }
    }
    let held_room = |i: &Instance| i.spec.node.is_some() && !i.phase().is_terminal();
    if old.is_some_and(held_room) && !new.is_some_and(held_room) {
        tasks.extend(cache.pending().iter().map(|k| Task::Schedule(k.clone())));
    }
}

/// A Job changed: look at it, and at every instance it made when it is gone or is another Job
/// now, for garbage collection.
pub fn job(cache: &Cache, key: &str, old: Option<&Job>, new: Option<&Job>, tasks: &mut Vec<Task>) {
    tasks.push(Task::Job(key.to_owned()));
    // The CronJob that made it counts its active Jobs and keeps its history.
    let ns = key.split('/').nth(1).unwrap_or_default();
    for owner in [old, new].into_iter().flatten().filter_map(|j| j.metadata.owner_references.first()) {
        if owner.kind == shoal_api::Kind::CronJob {
            tasks.push(Task::CronJob(format!("cronjobs/{ns}/{}", owner.name)));
        }
    }
    if replaced(old, new) {
        tasks.extend(cache.instances_of(key).map(|i| Task::Collect(key_of(i).0)));
    }
}

/// A CronJob changed: look at it; and when it is gone (or another now), at its Jobs, which go
/// with it.
pub fn cronjob(cache: &Cache, key: &str, old: Option<&CronJob>, new: Option<&CronJob>, tasks: &mut Vec<Task>) {
    tasks.push(Task::CronJob(key.to_owned()));
    if replaced(old, new) {
        tasks.extend(cache.jobs_of(key).map(|(k, _)| Task::Job(k.clone())));
    }
}

/// Whether an owner's change leaves its dependents without it: it is gone, or it is another
/// object of the same name now (another uid).
fn replaced<R: shoal_api::Resource>(old: Option<&shoal_api::Object<R>>, new: Option<&shoal_api::Object<R>>) -> bool {
    match (old, new) {
        (Some(o), Some(n)) => o.metadata.uid != n.metadata.uid,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// Whether `workload` is the owner `instance` names (the same uid; an instance with no owner
/// reference belongs to the workload of its name).
pub fn owns(workload: &Workload, instance: &Instance) -> bool {
    match (&workload.metadata.uid, instance.metadata.owner_references.first()) {
        (Some(uid), Some(owner)) => &owner.uid == uid,
        _ => true,
    }
}

/// A node changed: its lifecycle; and when what the scheduler or a Service sees of it changed
/// (readiness, room, labels, address), the pending instances, and the workloads and Services of
/// the instances on it.
pub fn node(cache: &Cache, old: Option<&Node>, new: Option<&Node>, tasks: &mut Vec<Task>) {
    let Some(name) = new.or(old).map(|n| n.metadata.name.to_string()) else { return };
    tasks.push(Task::Node(name.clone()));
    let seen = |n: Option<&Node>| {
        n.map(|n| {
            let status = n.status.as_ref();
            (
                is_ready(n),
                n.spec.unschedulable,
                n.spec.draining,
                n.metadata.labels.clone(),
                status.map(|s| s.allocatable.clone()),
                n.spec.address.clone(),
                n.spec.agent_address.clone(),
            )
        })
    };
    if seen(old) == seen(new) {
        return;
    }
    tasks.extend(cache.pending().iter().map(|k| Task::Schedule(k.clone())));
    for instance in cache.instances_on(&name) {
        if let Some(owner) = owner_key(instance) {
            tasks.push(owner_task(owner));
        }
        let ns = instance.metadata.namespace.as_ref().map_or("", |n| n.as_str());
        for (service_key, service) in cache.services_in(ns) {
            if selects(service, instance) {
                tasks.push(Task::Endpoints(service_key.clone()));
            }
        }
    }
}

/// A namespace changed: its usage status; and when its quota or default requests changed, its
/// workloads (a raised quota lets them create what it held back).
pub fn namespace(cache: &Cache, name: &str, old: Option<&Namespace>, new: Option<&Namespace>, tasks: &mut Vec<Task>) {
    if new.is_some() {
        tasks.push(Task::Namespace(name.to_owned()));
    }
    if old.map(|n| &n.spec) != new.map(|n| &n.spec) {
        tasks.extend(cache.workloads_in(name).map(|(k, _)| Task::Workload(k.clone())));
    }
}
