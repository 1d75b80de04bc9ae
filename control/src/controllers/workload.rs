//! The workload controller: keeps `replicas` instances of every workload, made from its current
//! spec, rolls a changed spec out within `maxSurge`/`maxUnavailable` (and so moves instances off
//! a draining node), deletes the instances of a
//! deleted workload (owner references), and reports counts in the workload's status.
//!
//! A reconcile looks at one workload and starts from what is (the cache), never from what it
//! did last time, so a missed reconcile or a lost leadership costs nothing but a delay. It
//! returns its writes; instances whose owner is gone are the garbage collector's.

use rand::Rng;
use sha2::{Digest, Sha256};
use shoal_api::meta::OwnerReference;
use shoal_api::resources::instance::{Instance, InstanceSpec, TEMPLATE_LABEL, WORKLOAD_LABEL};
use shoal_api::resources::namespace::NamespaceKind;
use shoal_api::resources::workload::{REVISION_HISTORY, REVISION_HISTORY_BYTES, Revision, Workload, WorkloadStatus};
use shoal_api::{AnyObject, Kind, Name, Object};

use shoal_api::resources::Condition;
use shoal_api::resources::event::{EventType, ObjectReference, new_event};

use super::cache::{Allocated, Cache};
use super::quota;
use super::triggers::owns;
use super::writes::{Action, Write};
use crate::stamp::now_rfc3339;
use crate::store::UpdateScope;

/// The instance spec a workload's current spec makes (unbound).
pub fn template(workload: &Workload) -> InstanceSpec {
    let spec = &workload.spec;
    InstanceSpec {
        workload: Some(workload.metadata.name.clone()),
        node: None,
        module: spec.module.clone(),
        type_: spec.type_,
        resources: spec.resources.clone(),
        env: spec.env.clone(),
        files: spec.files.clone(),
        wasi_config: spec.wasi_config.clone(),
        args: spec.args.clone(),
        probes: spec.probes.clone(),
        restart_policy: spec.restart_policy,
        allowed_outbound_hosts: spec.allowed_outbound_hosts.clone(),
        // Its namespace's, set when an instance is made (not part of the template's hash).
        allow_private_egress: false,
        request_timeout_ms: spec.request_timeout_ms,
        concurrency: spec.concurrency,
        node_selector: spec.placement.as_ref().map(|p| p.node_selector.clone()).unwrap_or_default(),
        singleton: spec.singleton,
    }
}

/// A short hash of a template and the restart it was made for: instances with another hash
/// are from an older spec (or from before a `rollout restart`).
pub fn template_hash(template: &InstanceSpec, restarted_at: Option<&str>) -> String {
    let mut digest = Sha256::new();
    digest.update(serde_json::to_vec(template).expect("specs serialize"));
    if let Some(at) = restarted_at {
        digest.update(format!("\nrestartedAt={at}").as_bytes());
    }
    hex::encode(&digest.finalize()[..5])
}

/// The workload's revisions with its current spec (of template hash `hash`) the newest: as
/// they were if it is already, else with it added (or moved up, after an undo) under the next
/// number, keeping at most [`REVISION_HISTORY`] in [`REVISION_HISTORY_BYTES`].
pub fn revisions(workload: &Workload, hash: &str, now: String) -> Vec<Revision> {
    let mut revisions = workload.status.as_ref().map(|s| s.revisions.clone()).unwrap_or_default();
    if revisions.last().is_some_and(|r| r.template_hash == hash) {
        return revisions;
    }
    let number = revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    revisions.retain(|r| r.template_hash != hash);
    let spec = workload.spec.clone();
    revisions.push(Revision { revision: number, template_hash: hash.to_owned(), created_at: Some(now), spec });
    let size = |r: &Revision| serde_json::to_vec(r).map_or(0, |v| v.len());
    let mut total: usize = revisions.iter().map(size).sum();
    while revisions.len() > REVISION_HISTORY || (total > REVISION_HISTORY_BYTES && revisions.len() > 1) {
        total -= size(&revisions.remove(0));
    }
    revisions
}

/// A fresh name for an instance of `owner`: its name (cut to fit) and a random suffix of five
/// characters that spell no words, as Kubernetes names pods.
pub fn instance_name(owner: &Name) -> Name {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    let base = owner.as_str();
    Name::new(format!("{}-{suffix}", &base[..base.len().min(57)])).expect("a name plus a suffix is a name")
}

fn new_instance(workload: &Workload, template: &InstanceSpec, hash: &str) -> Instance {
    let base = workload.metadata.name.as_str();
    let mut instance =
        Object::new(instance_name(&workload.metadata.name), workload.metadata.namespace.clone(), template.clone());
    let meta = &mut instance.metadata;
    meta.labels = workload.metadata.labels.clone();
    meta.labels.insert(WORKLOAD_LABEL.into(), base.to_owned());
    meta.labels.insert(TEMPLATE_LABEL.into(), hash.to_owned());
    meta.owner_references = vec![OwnerReference {
        kind: Kind::Workload,
        name: workload.metadata.name.clone(),
        uid: workload.metadata.uid.clone().unwrap_or_default(),
    }];
    instance
}

/// Which instances to let go first: unbound, then not serving, then the youngest.
fn removal_order(cache: &Cache, instances: &mut [&Instance]) {
    instances.sort_by_key(|i| {
        let created = i.metadata.creation_timestamp.clone().unwrap_or_default();
        (i.spec.node.is_some(), cache.serving(i), std::cmp::Reverse(created))
    });
}

/// How many new instances to create and old serving ones to let go during a rollout, from the
/// counts alone: `new` of the current template, `old` of older ones (not ended), `serving` of
/// either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// New instances to create.
    pub create: usize,
    /// Surplus new instances to delete.
    pub remove_new: usize,
    /// Old serving instances that may be deleted now (old ones that serve nothing always may).
    pub take_serving_old: usize,
}

/// The rollout arithmetic: up to `replicas` new instances, `replicas + maxSurge` in all while
/// old ones exist, and at least `replicas - maxUnavailable` serving.
pub fn step(replicas: usize, max_surge: usize, max_unavailable: usize, new: usize, old: usize, serving: usize) -> Step {
    let create = if new >= replicas {
        0
    } else if old == 0 {
        replicas - new
    } else {
        (replicas + max_surge).saturating_sub(new + old).min(replicas - new)
    };
    let min_available = replicas.saturating_sub(max_unavailable);
    Step {
        create,
        remove_new: new.saturating_sub(replicas),
        take_serving_old: if old == 0 { 0 } else { serving.saturating_sub(min_available) },
    }
}

/// The most instances one reconcile of a workload creates.
pub const MAX_CREATES_PER_PASS: usize = 500;

/// The condition a workload carries while its quota holds back instances it wants
/// (Kubernetes' ReplicaSets say the same with this type and reason).
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Reconciles the workload at `key`; `in_flight` is what creates decided earlier, not yet in
/// the cache, already take of its namespace's quota; `autoscaled` is the replicas the
/// autoscaler decided, for an autoscaled workload (recorded in its status).
pub fn reconcile(cache: &Cache, key: &str, in_flight: Allocated, autoscaled: Option<u32>) -> Action {
    let Some(workload) = cache.workloads.get(key) else { return Action::none() };
    let instances: Vec<&Instance> = cache.instances_of(key).filter(|i| owns(workload, i)).collect();
    let mut writes = Vec::new();
    let Some((template, hash)) = cache.template(key) else { return Action::none() };
    let replicas = autoscaled.unwrap_or(workload.spec.replicas) as usize;
    let rollout = &workload.spec.rollout;
    let hash = hash.as_str();
    // An instance on a draining node is as good as old: it is replaced as a rollout would.
    let draining =
        |i: &&Instance| i.spec.node.as_ref().and_then(|n| cache.node(n.as_str())).is_some_and(|n| n.spec.draining);
    let is_new = |i: &&Instance| i.metadata.labels.get(TEMPLATE_LABEL).is_some_and(|h| h == hash) && !draining(i);
    let (mut new, old): (Vec<&Instance>, Vec<&Instance>) = instances.iter().copied().partition(is_new);
    // Old instances that have ended are gone for every purpose but the record.
    let (old_ended, mut old): (Vec<&Instance>, Vec<&Instance>) = old.into_iter().partition(|i| i.phase().is_terminal());
    writes.extend(old_ended.into_iter().map(Write::delete));
    // So have current ones whose node gave up on them for failing a probe: they are replaced.
    let (failed_probe, kept): (Vec<&Instance>, Vec<&Instance>) = new.into_iter().partition(|i| i.failed_probe());
    new = kept;
    writes.extend(failed_probe.into_iter().map(Write::delete));

    let serving = instances.iter().filter(|i| cache.serving(i)).count();
    let step =
        step(replicas, rollout.max_surge as usize, rollout.max_unavailable as usize, new.len(), old.len(), serving);
    // Bounded per pass: the creates land, the cache shows them, and the workload is looked at
    // again (a Workload of 10,000 replicas is not 10,000 objects in one round's memory).
    let wanted = step.create.min(MAX_CREATES_PER_PASS);
    let ns = workload.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
    let quota = cache.namespace(ns).and_then(|n| n.spec.quota.as_ref());
    let admitted = match quota {
        // A namespace being deleted gets nothing new; its workloads are about to go.
        _ if cache.namespace(ns).is_some_and(NamespaceKind::is_terminating) => {
            quota::Admitted { count: 0, refused: None }
        }
        Some(quota) => quota::admit(quota, cache.usage(ns).plus(in_flight), &template.resources, wanted),
        None => quota::Admitted { count: wanted, refused: None },
    };
    let allow_private_egress = cache.namespace(ns).is_some_and(|n| n.spec.allow_private_egress);
    for _ in 0..admitted.count {
        let mut instance = new_instance(workload, &template, hash);
        instance.spec.allow_private_egress = allow_private_egress;
        writes.push(Write::Create(AnyObject::Instance(instance)));
    }
    if step.remove_new > 0 {
        removal_order(cache, &mut new);
        writes.extend(new.drain(..step.remove_new).map(Write::delete));
    }
    let mut may_take = step.take_serving_old;
    removal_order(cache, &mut old);
    for instance in old {
        // An old instance that serves nothing can go at once; one that serves only while
        // enough others do.
        if cache.serving(instance) {
            if may_take == 0 {
                continue;
            }
            may_take -= 1;
        }
        writes.push(Write::delete(instance));
    }

    let status = WorkloadStatus {
        observed_generation: workload.metadata.generation.unwrap_or(1),
        replicas: instances.iter().filter(|i| !i.phase().is_terminal()).count() as u32,
        ready_replicas: serving as u32,
        updated_replicas: new.len() as u32,
        available_replicas: new.iter().filter(|i| cache.serving(i)).count() as u32,
        desired_replicas: autoscaled,
        conditions: Vec::new(),
        revisions: match cache.spec_hash(key) {
            Some(spec_hash) => revisions(workload, spec_hash, now_rfc3339()),
            None => Vec::new(),
        },
    };
    let mut status = status;
    if let Some(message) = admitted.refused {
        let before = workload.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == REPLICA_FAILURE));
        if before.is_none_or(|c| c.message != message) {
            let involved = ObjectReference {
                kind: Kind::Workload,
                namespace: workload.metadata.namespace.clone(),
                name: workload.metadata.name.clone(),
            };
            let event = new_event(involved, "FailedCreate", message.clone(), EventType::Warning, now_rfc3339());
            writes.push(Write::Upsert(AnyObject::Event(event)));
        }
        let since = before.filter(|c| c.status == "True").and_then(|c| c.last_transition_time.clone());
        status.conditions.push(Condition {
            type_: REPLICA_FAILURE.into(),
            status: "True".into(),
            reason: "FailedCreate".into(),
            message,
            last_transition_time: since.or_else(|| Some(now_rfc3339())),
        });
    }
    if workload.status.as_ref() != Some(&status) {
        let mut updated = workload.clone();
        updated.status = Some(status);
        writes.push(Write::Update(AnyObject::Workload(updated), UpdateScope::Status));
    }
    Action::writes(writes)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, created, deleted, instance, node, serving, workload};
    use super::super::queue::Task;
    use super::*;
    use shoal_api::resources::instance::Phase;

    #[test]
    fn rollout_arithmetic_keeps_surge_and_availability() {
        // No old instances: make what is missing, all at once.
        assert_eq!(step(3, 1, 0, 0, 0, 0), Step { create: 3, remove_new: 0, take_serving_old: 0 });
        // Rollout of 3 with maxSurge 1, maxUnavailable 0: one new at a time, no old goes until
        // a new one serves.
        assert_eq!(step(3, 1, 0, 0, 3, 3), Step { create: 1, remove_new: 0, take_serving_old: 0 });
        assert_eq!(step(3, 1, 0, 1, 3, 3), Step { create: 0, remove_new: 0, take_serving_old: 0 });
        assert_eq!(step(3, 1, 0, 1, 3, 4), Step { create: 0, remove_new: 0, take_serving_old: 1 });
        // maxSurge 2, maxUnavailable 1: two new at once and one old may go at once.
        assert_eq!(step(3, 2, 1, 0, 3, 3), Step { create: 2, remove_new: 0, take_serving_old: 1 });
        // maxSurge 0 needs maxUnavailable to make room.
        assert_eq!(step(3, 0, 1, 0, 3, 3), Step { create: 0, remove_new: 0, take_serving_old: 1 });
        assert_eq!(step(3, 0, 1, 0, 2, 2), Step { create: 1, remove_new: 0, take_serving_old: 0 });
        // Scaled down: the surplus of new ones goes.
        assert_eq!(step(2, 1, 0, 5, 0, 5), Step { create: 0, remove_new: 3, take_serving_old: 0 });
    }

    fn key(name: &str) -> String {
        format!("workloads/default/{name}")
    }

    #[test]
    fn missing_replicas_are_created_and_status_counts_what_serves() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10));
        f.instance(serving(&w, "web-a", "a"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(created(&action), 2);
        let status = action.writes.iter().find_map(|w| match w {
            Write::Update(AnyObject::Workload(w), UpdateScope::Status) => w.status.clone(),
            _ => None,
        });
        let status = status.expect("a status update");
        assert_eq!((status.replicas, status.ready_replicas, status.updated_replicas), (1, 1, 1));
    }

    #[test]
    fn one_pass_creates_a_bounded_number_and_the_next_pass_goes_on() {
        let w = workload("big", 10_000);
        let mut f = Fixture::default();
        f.workload(w.clone());
        let action = reconcile(&f.cache, &key("big"), Allocated::default(), None);
        assert_eq!(created(&action), MAX_CREATES_PER_PASS);
        for (i, write) in action.writes.into_iter().enumerate() {
            if let Write::Create(AnyObject::Instance(mut instance)) = write {
                instance.metadata.name = Name::new(format!("big-{i}")).unwrap();
                f.instance(instance);
            }
        }
        assert_eq!(created(&reconcile(&f.cache, &key("big"), Allocated::default(), None)), MAX_CREATES_PER_PASS);
    }

    #[test]
    fn a_scale_down_deletes_unbound_then_not_serving_then_youngest() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10));
        f.instance(serving(&w, "web-old", "a"));
        f.instance(instance(&w, "web-starting", Some("a"), Phase::Running, false));
        f.instance(instance(&w, "web-unbound", None, Phase::Pending, false));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/web-starting", "instances/default/web-unbound"]);
    }

    #[test]
    fn a_changed_spec_rolls_out_one_at_a_time_and_keeps_the_old_serving() {
        let old_spec = workload("web", 2);
        let mut new_spec = old_spec.clone();
        new_spec.spec.args = vec!["v2".into()];
        let mut f = Fixture::default();
        f.workload(new_spec.clone()).node(node("a", 1024, 1000, 10));
        f.instance(serving(&old_spec, "web-1", "a")).instance(serving(&old_spec, "web-2", "a"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!((created(&action), deleted(&action).len()), (1, 0), "surge one, keep both old");

        // An old one that serves nothing goes at once; a serving one only while two others serve.
        f.instance(serving(&new_spec, "web-n1", "a"));
        f.instance(instance(&old_spec, "web-2", Some("a"), Phase::CrashLoopBackOff, false));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/web-2"]);
        assert_eq!(created(&action), 0, "replicas + maxSurge in all");

        f.remove_instance("web-2").instance(serving(&new_spec, "web-n2", "a"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/web-1"]);
    }

    #[test]
    fn a_draining_nodes_instances_are_replaced_elsewhere_first_within_the_rollout_bounds() {
        let w = workload("web", 2);
        let mut drained = node("a", 1024, 1000, 10);
        (drained.spec.unschedulable, drained.spec.draining) = (true, true);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(drained).node(node("b", 1024, 1000, 10));
        f.instance(serving(&w, "web-1", "a")).instance(serving(&w, "web-2", "a"));
        // maxSurge 1, maxUnavailable 0: one replacement, and nothing leaves the node yet.
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!((created(&action), deleted(&action).len()), (1, 0));
        // Once it serves elsewhere, one on the draining node may go; and so on.
        f.instance(serving(&w, "web-b1", "b"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action).len(), 1);
        assert_eq!(created(&action), 0, "replicas + maxSurge in all");
        f.remove_instance("web-1").instance(serving(&w, "web-b2", "b"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/web-2"]);
        // A cordoned node that is not draining keeps what it runs.
        let mut f = Fixture::default();
        let mut cordoned = node("a", 1024, 1000, 10);
        cordoned.spec.unschedulable = true;
        f.workload(w.clone()).node(cordoned);
        f.instance(serving(&w, "web-1", "a")).instance(serving(&w, "web-2", "a"));
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!((created(&action), deleted(&action).len()), (0, 0));
    }

    #[test]
    fn revisions_record_each_new_spec_move_an_undone_one_up_and_keep_ten() {
        let mut w = workload("web", 1);
        let at = || "2026-12-02T00:00:00Z".to_owned();
        let numbers = |revisions: &[Revision]| {
            revisions.iter().map(|r| (r.revision, r.template_hash.clone())).collect::<Vec<_>>()
        };
        let first = revisions(&w, "h1", at());
        assert_eq!(numbers(&first), [(1, "h1".into())]);
        w.status = Some(WorkloadStatus { revisions: first.clone(), ..Default::default() });
        assert_eq!(revisions(&w, "h1", at()), first, "the same spec: nothing new");
        w.spec.args = vec!["v2".into()];
        let second = revisions(&w, "h2", at());
        assert_eq!(numbers(&second), [(1, "h1".into()), (2, "h2".into())]);
        assert_eq!(second[1].spec.args, ["v2"], "each keeps its spec");
        // An undo to h1 makes it the newest, under a new number.
        w.status = Some(WorkloadStatus { revisions: second, ..Default::default() });
        assert_eq!(numbers(&revisions(&w, "h1", at())), [(2, "h2".into()), (3, "h1".into())]);
        // At most ten.
        for i in 0..20 {
            let next = revisions(&w, &format!("x{i}"), at());
            w.status = Some(WorkloadStatus { revisions: next, ..Default::default() });
        }
        let kept = &w.status.as_ref().unwrap().revisions;
        assert_eq!(kept.len(), REVISION_HISTORY);
        assert_eq!(kept.last().unwrap().revision, 22);
        // And a spec too large for ten keeps fewer.
        w.spec.args = vec!["x".repeat(REVISION_HISTORY_BYTES / 3)];
        for i in 0..5 {
            let next = revisions(&w, &format!("big{i}"), at());
            w.status = Some(WorkloadStatus { revisions: next, ..Default::default() });
        }
        assert!(w.status.as_ref().unwrap().revisions.len() <= 3);
    }

    #[test]
    fn a_restart_is_a_new_template_with_the_same_spec() {
        let w = workload("web", 1);
        let spec = template(&w);
        assert_ne!(template_hash(&spec, None), template_hash(&spec, Some("2026-12-02T00:00:00Z")));
        assert_eq!(template_hash(&spec, Some("a")), template_hash(&spec, Some("a")));
    }

    #[test]
    fn a_new_generation_of_the_spec_gets_a_new_template() {
        let old_spec = workload("web", 1);
        let mut new_spec = old_spec.clone();
        new_spec.spec.args = vec!["v2".into()];
        new_spec.metadata.generation = Some(2);
        let mut f = Fixture::default();
        f.workload(old_spec.clone()).node(node("a", 1024, 1000, 10));
        f.instance(serving(&old_spec, "web-1", "a"));
        assert_eq!(created(&reconcile(&f.cache, &key("web"), Allocated::default(), None)), 0, "up to date");
        f.workload(new_spec.clone());
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        let made = action.writes.iter().find_map(|w| match w {
            Write::Create(AnyObject::Instance(i)) => Some(i.spec.args.clone()),
            _ => None,
        });
        assert_eq!(made, Some(vec!["v2".to_owned()]));
    }

    #[test]
    fn a_change_of_a_secret_it_takes_values_from_rolls_the_workload_out() {
        let mut w = workload("web", 1);
        w.spec.env.push(
            serde_json::from_value(
                serde_json::json!({"name": "PASSWORD", "valueFrom": {"secret": "db", "key": "password"}}),
            )
            .unwrap(),
        );
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10)).secret("db", Some("one")).secret("other", Some("x"));
        let mut running = serving(&w, "web-1", "a");
        let (_, hash) = f.cache.template(&key("web")).unwrap();
        running.metadata.labels.insert(TEMPLATE_LABEL.into(), hash.clone());
        f.instance(running);
        assert_eq!(created(&reconcile(&f.cache, &key("web"), Allocated::default(), None)), 0, "up to date");
        f.take_tasks();

        // A Secret it does not use changes: nothing to look at.
        f.secret("other", Some("y"));
        assert!(f.take_tasks().is_empty());
        // Its Secret is written again unchanged: nothing either.
        f.secret("db", Some("one"));
        assert!(f.take_tasks().is_empty());
        // Its Secret changes: the workload is a task, with a new template to roll out.
        f.secret("db", Some("two"));
        assert_eq!(f.take_tasks(), vec![Task::Workload(key("web"))]);
        assert_ne!(f.cache.template(&key("web")).unwrap().1, hash);
        assert_eq!(created(&reconcile(&f.cache, &key("web"), Allocated::default(), None)), 1, "a surge of one");
        // Deleted, too (its instances cannot start until it is back, and say so).
        f.secret("db", None);
        assert_eq!(f.take_tasks(), vec![Task::Workload(key("web"))]);
    }

    #[test]
    fn an_instance_that_failed_its_liveness_probe_is_replaced_and_one_that_just_failed_is_not() {
        let w = workload("web", 2);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10));
        let mut unhealthy = instance(&w, "web-1", Some("a"), Phase::Failed, false);
        unhealthy.status.as_mut().unwrap().reason = shoal_api::resources::instance::LIVENESS_FAILED.into();
        let failed = instance(&w, "web-2", Some("a"), Phase::Failed, false);
        f.instance(unhealthy).instance(failed);
        let action = reconcile(&f.cache, &key("web"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/web-1"]);
        assert_eq!(created(&action), 1, "one replacement; web-2 ended for its own reasons and stays");
    }

    #[test]
    fn ended_old_instances_are_deleted_and_a_missing_workload_is_nothing_to_do() {
        let old_spec = workload("job", 1);
        let mut new_spec = old_spec.clone();
        new_spec.spec.args = vec!["v2".into()];
        let mut f = Fixture::default();
        f.workload(new_spec.clone());
        f.instance(instance(&old_spec, "job-1", Some("a"), Phase::Succeeded, false));
        let action = reconcile(&f.cache, &key("job"), Allocated::default(), None);
        assert_eq!(deleted(&action), ["instances/default/job-1"]);
        assert!(reconcile(&f.cache, &key("gone"), Allocated::default(), None).writes.is_empty());
    }
}
