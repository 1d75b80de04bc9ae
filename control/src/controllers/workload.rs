//! The workload controller: keeps `replicas` instances of every workload, made from its current
//! spec, rolls a changed spec out within `maxSurge`/`maxUnavailable`, deletes the instances of a
//! deleted workload (owner references), and reports counts in the workload's status.
//!
//! Every pass starts from what is (the cache), never from what it did last time, so a missed
//! pass or a lost leadership costs nothing but a delay.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use rand::Rng;
use sha2::{Digest, Sha256};
use shoal_api::meta::OwnerReference;
use shoal_api::resources::instance::{Instance, InstanceSpec, TEMPLATE_LABEL, WORKLOAD_LABEL};
use shoal_api::resources::workload::{Workload, WorkloadStatus};
use shoal_api::{Kind, Name, Object};

use super::cache::Cache;
use super::writer;
use crate::store::{Store, UpdateScope};

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
        args: spec.args.clone(),
        probes: spec.probes.clone(),
        restart_policy: spec.restart_policy,
        allowed_outbound_hosts: spec.allowed_outbound_hosts.clone(),
        request_timeout_ms: spec.request_timeout_ms,
        node_selector: spec.placement.as_ref().map(|p| p.node_selector.clone()).unwrap_or_default(),
    }
}

/// A short hash of a template: instances with another hash are from an older spec.
pub fn template_hash(template: &InstanceSpec) -> String {
    let digest = Sha256::digest(serde_json::to_vec(template).expect("specs serialize"));
    hex::encode(&digest[..5])
}

fn new_instance(workload: &Workload, template: &InstanceSpec, hash: &str) -> Instance {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    let base = workload.metadata.name.as_str();
    let name = format!("{}-{suffix}", &base[..base.len().min(57)]);
    let mut instance = Object::new(
        Name::new(name).expect("a workload name plus a suffix is a name"),
        workload.metadata.namespace.clone(),
        template.clone(),
    );
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

/// Runs one pass over every workload; returns the writes to make.
pub fn reconcile<'a>(cache: &'a Cache, store: &'a Store) -> Vec<BoxFuture<'a, bool>> {
    let mut writes: Vec<BoxFuture<'a, bool>> = Vec::new();
    let mut owned: BTreeMap<String, Vec<&Instance>> = BTreeMap::new();
    for instance in cache.instances.values() {
        let Some(workload) = &instance.spec.workload else { continue };
        let ns = instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
        let key = format!("workloads/{ns}/{workload}");
        match cache.workloads.get(&key) {
            // An instance whose workload was deleted (or deleted and made again: another uid).
            Some(w) if owner_matches(w, instance) => owned.entry(key).or_default().push(instance),
            _ => writes.push(Box::pin(writer::delete(store, instance))),
        }
    }
    for (key, workload) in &cache.workloads {
        let instances = owned.remove(key).unwrap_or_default();
        reconcile_one(cache, store, workload, instances, &mut writes);
    }
    writes
}

fn owner_matches(workload: &Workload, instance: &Instance) -> bool {
    match (&workload.metadata.uid, instance.metadata.owner_references.first()) {
        (Some(uid), Some(owner)) => &owner.uid == uid,
        _ => true,
    }
}

fn reconcile_one<'a>(
    cache: &'a Cache,
    store: &'a Store,
    workload: &'a Workload,
    instances: Vec<&'a Instance>,
    writes: &mut Vec<BoxFuture<'a, bool>>,
) {
    let template = template(workload);
    let hash = template_hash(&template);
    let replicas = workload.spec.replicas as usize;
    let rollout = &workload.spec.rollout;
    let is_new = |i: &&Instance| i.metadata.labels.get(TEMPLATE_LABEL) == Some(&hash);
    let (mut new, old): (Vec<&Instance>, Vec<&Instance>) = instances.iter().copied().partition(is_new);
    // Old instances that have ended are gone for every purpose but the record.
    let (old_ended, mut old): (Vec<&Instance>, Vec<&Instance>) = old.into_iter().partition(|i| i.phase().is_terminal());
    for instance in old_ended {
        writes.push(Box::pin(writer::delete(store, instance)));
    }

    let total = new.len() + old.len();
    if new.len() < replicas {
        let room = if old.is_empty() {
            replicas - new.len()
        } else {
            (replicas + rollout.max_surge as usize).saturating_sub(total).min(replicas - new.len())
        };
        for _ in 0..room {
            writes.push(Box::pin(writer::create(store, new_instance(workload, &template, &hash))));
        }
    } else if new.len() > replicas {
        removal_order(cache, &mut new);
        for instance in &new[..new.len() - replicas] {
            writes.push(Box::pin(writer::delete(store, instance)));
        }
        new.drain(..new.len() - replicas);
    }

    if !old.is_empty() {
        let serving_count = instances.iter().filter(|i| cache.serving(i)).count();
        let min_available = replicas.saturating_sub(rollout.max_unavailable as usize);
        let mut may_take = serving_count.saturating_sub(min_available);
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
            writes.push(Box::pin(writer::delete(store, instance)));
        }
    }

    let status = WorkloadStatus {
        observed_generation: workload.metadata.generation.unwrap_or(1),
        replicas: instances.iter().filter(|i| !i.phase().is_terminal()).count() as u32,
        ready_replicas: instances.iter().filter(|i| cache.serving(i)).count() as u32,
        updated_replicas: new.len() as u32,
        available_replicas: new.iter().filter(|i| cache.serving(i)).count() as u32,
        conditions: Vec::new(),
    };
    if workload.status.as_ref() != Some(&status) {
        let mut updated = workload.clone();
        updated.status = Some(status);
        writes.push(Box::pin(async move { writer::update(store, &updated, UpdateScope::Status).await }));
    }
}
