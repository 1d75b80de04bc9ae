//! The scheduler: binds Pending instances to nodes, a whole pass of them at once.
//!
//! Filter: the node is Ready and schedulable, its labels match the instance's node selector, and
//! it has memory, CPU and an instance slot left after what is already bound to it. Score: least
//! allocated, minus a penalty per replica of the same workload already there (spread). An
//! instance that fits nowhere stays Pending, with a `FailedScheduling` Event that says why, per
//! node, e.g. `0/3 nodes available: 2 insufficient memory, 1 node selector mismatch`.

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use shoal_api::resources::event::{Event, EventType, ObjectReference, new_event};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::{Kind, Name};

use super::cache::Cache;
use super::writer;
use crate::api::objects::now_rfc3339;
use crate::store::{Store, UpdateScope};

/// What is bound to one node.
#[derive(Debug, Default, Clone, Copy)]
struct Allocated {
    memory: u64,
    cpu: u64,
    instances: u32,
}

/// Why a node was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Unschedulable,
    SelectorMismatch,
    InsufficientMemory,
    InsufficientCpu,
    TooManyInstances,
}

impl Misfit {
    fn describe(self) -> &'static str {
        match self {
            Misfit::NotReady => "node not ready",
            Misfit::Unschedulable => "node unschedulable",
            Misfit::SelectorMismatch => "node selector mismatch",
            Misfit::InsufficientMemory => "insufficient memory",
            Misfit::InsufficientCpu => "insufficient cpu",
            Misfit::TooManyInstances => "too many instances",
        }
    }
}

fn requests(instance: &Instance) -> (u64, u64) {
    let r = &instance.spec.resources;
    (r.memory.map_or(0, |m| m.0), r.cpu.map_or(0, |c| c.0))
}

fn is_ready(node: &Node) -> bool {
    node.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True")
}

/// Remembers which FailedScheduling events were written, so that an instance that stays
/// unschedulable is not re-reported on every pass.
#[derive(Default)]
pub struct Reported {
    messages: HashMap<String, (String, u32)>,
}

/// The scheduler's state across passes.
#[derive(Default)]
pub struct Scheduler {
    reported: Reported,
}

impl Scheduler {
    /// Binds what it can of the Pending instances; returns the writes to make.
    pub fn schedule<'a>(&mut self, cache: &'a Cache, store: &'a Store) -> Vec<BoxFuture<'a, bool>> {
        let pending: Vec<&Instance> =
            cache.instances.values().filter(|i| i.spec.node.is_none() && !i.phase().is_terminal()).collect();
        self.reported.messages.retain(|key, _| cache.instances.get(key).is_some_and(|i| i.spec.node.is_none()));
        if pending.is_empty() {
            return Vec::new();
        }
        let mut allocated: BTreeMap<&str, Allocated> = BTreeMap::new();
        let mut replicas: HashMap<(&str, String), u32> = HashMap::new();
        for instance in cache.instances.values().filter(|i| !i.phase().is_terminal()) {
            let Some(node) = &instance.spec.node else { continue };
            let (memory, cpu) = requests(instance);
            let a = allocated.entry(node.as_str()).or_default();
            a.memory += memory;
            a.cpu += cpu;
            a.instances += 1;
            *replicas.entry((node.as_str(), owner_key(instance))).or_default() += 1;
        }

        let mut writes: Vec<BoxFuture<'a, bool>> = Vec::new();
        for instance in pending {
            let (memory, cpu) = requests(instance);
            let owner = owner_key(instance);
            let mut best: Option<(f64, &str)> = None;
            let mut misfits: BTreeMap<Misfit, u32> = BTreeMap::new();
            for node in cache.nodes.values() {
                let name = node.metadata.name.as_str();
                let used = allocated.get(name).copied().unwrap_or_default();
                match fit(node, instance, used, memory, cpu) {
                    Err(misfit) => *misfits.entry(misfit).or_default() += 1,
                    Ok(free) => {
                        let same = replicas.get(&(name, owner.clone())).copied().unwrap_or(0);
                        let spread = instance.spec.workload.is_some() && placement_spreads(cache, instance);
                        let score = free - if spread { f64::from(same) } else { 0.0 };
                        if best.is_none_or(|(b, _)| score > b) {
                            best = Some((score, name));
                        }
                    }
                }
            }
            match best {
                Some((_, node)) => {
                    let a = allocated.entry(node).or_default();
                    a.memory += memory;
                    a.cpu += cpu;
                    a.instances += 1;
                    *replicas.entry((node, owner)).or_default() += 1;
                    let mut bound = instance.clone();
                    bound.spec.node = Some(Name::new(node).expect("node names are names"));
                    writes.push(Box::pin(async move { writer::update(store, &bound, UpdateScope::Spec).await }));
                }
                None => {
                    let reasons: Vec<String> = misfits.iter().map(|(m, n)| format!("{n} {}", m.describe())).collect();
                    let message = format!("0/{} nodes available: {}", cache.nodes.len(), reasons.join(", "));
                    if let Some(event) = self.reported.note(instance, message) {
                        writes.push(Box::pin(writer::upsert(store, event)));
                    }
                }
            }
        }
        writes
    }
}

fn owner_key(instance: &Instance) -> String {
    let ns = instance.metadata.namespace.as_ref().map_or("", |n| n.as_str());
    let workload = instance.spec.workload.as_ref().map_or("", |n| n.as_str());
    format!("{ns}/{workload}")
}

fn placement_spreads(cache: &Cache, instance: &Instance) -> bool {
    cache.owner(instance).is_none_or(|w| w.spec.placement.as_ref().is_none_or(|p| p.spread))
}

/// Whether `instance` fits on `node`; if so, a score in [0, 1]: how much is left free.
fn fit(node: &Node, instance: &Instance, used: Allocated, memory: u64, cpu: u64) -> Result<f64, Misfit> {
    if !is_ready(node) {
        return Err(Misfit::NotReady);
    }
    if node.spec.unschedulable {
        return Err(Misfit::Unschedulable);
    }
    if instance.spec.node_selector.iter().any(|(k, v)| node.metadata.labels.get(k) != Some(v)) {
        return Err(Misfit::SelectorMismatch);
    }
    let status = node.status.as_ref().expect("a ready node has a status");
    let alloc = &status.allocatable;
    if used.memory + memory > alloc.memory.0 {
        return Err(Misfit::InsufficientMemory);
    }
    if used.cpu + cpu > alloc.cpu.0 {
        return Err(Misfit::InsufficientCpu);
    }
    if used.instances + 1 > alloc.instances {
        return Err(Misfit::TooManyInstances);
    }
    let left = |used: u64, total: u64| if total == 0 { 0.0 } else { 1.0 - used as f64 / total as f64 };
    let free = (left(used.memory + memory, alloc.memory.0)
        + left(used.cpu + cpu, alloc.cpu.0)
        + left(u64::from(used.instances + 1), u64::from(alloc.instances)))
        / 3.0;
    Ok(free)
}

impl Reported {
    /// The event to write for `instance` failing to schedule with `message`, unless that was
    /// already reported.
    fn note(&mut self, instance: &Instance, message: String) -> Option<Event> {
        let key = format!("instances/{}/{}", instance.metadata.namespace.as_ref()?, instance.metadata.name);
        let entry = self.messages.entry(key).or_insert_with(|| (String::new(), 0));
        if entry.0 == message {
            return None;
        }
        entry.0 = message.clone();
        entry.1 += 1;
        let involved = ObjectReference {
            kind: Kind::Instance,
            namespace: instance.metadata.namespace.clone(),
            name: instance.metadata.name.clone(),
        };
        let mut event = new_event(involved, "FailedScheduling", message, EventType::Warning, now_rfc3339());
        event.spec.count = entry.1;
        Some(event)
    }
}
