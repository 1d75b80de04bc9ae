//! The scheduler: binds Pending instances to nodes, every instance due in one round at once
//! (their binds travel together, batched into raft entries by the proposer), and places the
//! instances workloads are about to create, so that those that fit are created bound.
//!
//! Filter: the node is Ready and schedulable, its labels match the instance's node selector, and
//! it has memory, CPU and an instance slot left after what is already bound to it. Score: least
//! allocated, minus a penalty per replica of the same workload already there (spread). An
//! instance that fits nowhere stays Pending, with a `FailedScheduling` Event that says why, per
//! node, e.g. `0/3 nodes available: 2 insufficient memory, 1 node selector mismatch`, and is
//! looked at again when room may have appeared (a node changed, an instance ended) or after
//! [`RETRY_UNSCHEDULABLE`].
//!
//! On a large cluster a placement scores a sample, as kube-scheduler's percentageOfNodesToScore
//! does: the search for feasible nodes starts where the last one stopped and ends once it has
//! [`nodes_to_score`] of them (500 of 5,000 nodes), so placing an instance costs a bounded share
//! of the nodes, and successive placements walk the whole ring, which keeps the spread even. An
//! instance that fits nowhere has looked at every node, so its reasons still count them all.
//!
//! What is bound to each node comes from the cache's index; binds decided earlier in the same
//! round are added on top, since the cache sees them only once they are applied.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_api::resources::event::{Event, EventType, ObjectReference, new_event};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::{AnyObject, Kind, Name};

use super::cache::{Allocated, Cache, is_ready, owner_key, requests};
use super::writes::{Action, Write};
use crate::stamp::now_rfc3339;

/// How long an instance that fits nowhere waits before it is tried again anyway.
pub const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(10);

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

/// Remembers which FailedScheduling events were written, so that an instance that stays
/// unschedulable is not re-reported on every pass.
#[derive(Default)]
pub struct Reported {
    messages: HashMap<String, (String, u32)>,
}

/// A bind decided but not yet seen in the cache (in flight): its room on the node is taken
/// meanwhile, as kube-scheduler's assumed pods are, so that rounds need not wait for each other.
#[derive(Debug, Clone)]
struct Assumed {
    node: String,
    memory: u64,
    cpu: u64,
    owner: Option<String>,
}

/// The scheduler's state across rounds.
#[derive(Default)]
pub struct Scheduler {
    reported: Reported,
    /// Binds in flight, by instance key.
    assumed: HashMap<String, Assumed>,
    /// Where the next search for feasible nodes starts (an index into a round's nodes).
    next_start: usize,
}

/// How many feasible nodes one placement scores, of `nodes`: all of them up to 100; beyond,
/// kube-scheduler's adaptive share (50%, less 1% per 125 nodes, at least 5%), and at least 100.
pub fn nodes_to_score(nodes: usize) -> usize {
    if nodes <= 100 {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(100)
}

/// One node as a round sees it: what about it does not depend on the instance (checked once
/// per round, not once per instance), and what is bound to it, binds of this round included.
struct Candidate<'c> {
    node: &'c Node,
    /// NotReady or unschedulable.
    unavailable: Option<Misfit>,
    allocatable: Allocated,
    used: Allocated,
}

/// The nodes of one round, in a vector, so that placing an instance does no lookups by name;
/// and, per workload, how many of its instances each node has.
struct Round<'c> {
    candidates: Vec<Candidate<'c>>,
    placed: HashMap<String, Vec<u32>>,
    /// Per workload, the candidates its binds in flight go to.
    assumed_placed: HashMap<String, Vec<usize>>,
    /// Where the next search for feasible nodes starts.
    next_start: usize,
}

impl<'c> Round<'c> {
    fn new(cache: &'c Cache, assumed: &HashMap<String, Assumed>, next_start: usize) -> Self {
        let mut candidates: Vec<Candidate<'c>> = cache
            .nodes
            .values()
            .map(|node| {
                let unavailable = if !is_ready(node) {
                    Some(Misfit::NotReady)
                } else if node.spec.unschedulable {
                    Some(Misfit::Unschedulable)
                } else {
                    None
                };
                let allocatable = node.status.as_ref().map_or_else(Allocated::default, |s| Allocated {
                    memory: s.allocatable.memory.0,
                    cpu: s.allocatable.cpu.0,
                    instances: s.allocatable.instances,
                });
                Candidate { node, unavailable, allocatable, used: cache.allocated(node.metadata.name.as_str()) }
            })
            .collect();
        let index: HashMap<&str, usize> =
            candidates.iter().enumerate().map(|(i, c)| (c.node.metadata.name.as_str(), i)).collect();
        let mut assumed_placed: HashMap<String, Vec<usize>> = HashMap::new();
        for bind in assumed.values() {
            let Some(&i) = index.get(bind.node.as_str()) else { continue };
            let used = &mut candidates[i].used;
            used.memory = used.memory.saturating_add(bind.memory);
            used.cpu = used.cpu.saturating_add(bind.cpu);
            used.instances += 1;
            if let Some(owner) = &bind.owner {
                assumed_placed.entry(owner.clone()).or_default().push(i);
            }
        }
        let next_start = next_start % candidates.len().max(1);
        Round { candidates, placed: HashMap::new(), assumed_placed, next_start }
    }

    /// How many instances of the workload at `owner` each candidate has, taken out of the
    /// round (so that it can be read beside the candidates); give it back with
    /// [`Round::put_placed`].
    fn take_placed(&mut self, cache: &Cache, owner: &str) -> Vec<u32> {
        self.placed.remove(owner).unwrap_or_else(|| {
            let mut placed: Vec<u32> =
                self.candidates.iter().map(|c| cache.placed(owner, c.node.metadata.name.as_str())).collect();
            for i in self.assumed_placed.get(owner).into_iter().flatten() {
                placed[*i] += 1;
            }
            placed
        })
    }

    fn put_placed(&mut self, owner: String, placed: Vec<u32>) {
        self.placed.insert(owner, placed);
    }
}

impl Scheduler {
    /// Places each instance of `keys` (store keys) that is still pending, and each of `fresh`
    /// (instances a workload is about to create: one placed now is created bound, which saves
    /// its bind, a raft write, and the watch events and cache updates that follow it). Returns
    /// the action for each key, in order; a fresh instance that fits nowhere stays unbound and
    /// is scheduled, and reported, once the cache shows it pending.
    pub fn schedule(&mut self, cache: &Cache, keys: &[String], fresh: &mut [&mut Instance]) -> Vec<Action> {
        // A round costs a look at every node and every bind in flight: none without work.
        if keys.is_empty() && fresh.is_empty() {
            return Vec::new();
        }
        self.reported.messages.retain(|key, _| cache.pending().contains(key));
        let mut round = Round::new(cache, &self.assumed, self.next_start);
        let actions = keys.iter().map(|key| self.schedule_one(cache, key, &mut round)).collect();
        for instance in fresh.iter_mut() {
            if let Ok(i) = self.choose(cache, instance, &mut round) {
                let key = super::writes::key_of(&**instance).0;
                instance.spec.node = Some(self.take_room(cache, &mut round, i, instance, key));
            }
        }
        self.next_start = round.next_start;
        actions
    }

    /// The cache now shows the instances at `keys` as they are: an assumed bind whose instance
    /// is no longer pending (bound, ended, gone) is counted by the cache's own indexes now.
    pub fn seen<'k>(&mut self, cache: &Cache, keys: impl IntoIterator<Item = &'k String>) {
        if self.assumed.is_empty() {
            return;
        }
        for key in keys {
            if !cache.pending().contains(key) {
                self.assumed.remove(key);
            }
        }
    }

    /// Forgets every bind in flight (a new term: what the last one had in flight is dropped).
    pub fn forget_assumed(&mut self) {
        self.assumed.clear();
    }

    /// The bind (or bound create) of the instance at `key` failed: its room is free again.
    pub fn forget(&mut self, key: &str) {
        self.assumed.remove(key);
    }

    /// The best candidate for `instance`, or why each node was passed over.
    fn choose(
        &self,
        cache: &Cache,
        instance: &Instance,
        round: &mut Round<'_>,
    ) -> Result<usize, BTreeMap<Misfit, u32>> {
        let (memory, cpu) = requests(instance);
        let owner = owner_key(instance).filter(|_| placement_spreads(cache, instance));
        let placed = owner.as_deref().map(|o| round.take_placed(cache, o));
        let mut best: Option<(f64, usize)> = None;
        let mut misfits: BTreeMap<Misfit, u32> = BTreeMap::new();
        let n = round.candidates.len();
        let wanted = nodes_to_score(n);
        // Every node scored: from the first, so that ties go the same way every time.
        let start = if wanted < n { round.next_start } else { 0 };
        let (mut feasible, mut looked) = (0, 0);
        for i in (start..n).chain(0..start) {
            looked += 1;
            match fit(&round.candidates[i], instance, memory, cpu) {
                Err(misfit) => *misfits.entry(misfit).or_default() += 1,
                Ok(free) => {
                    let same = placed.as_ref().map_or(0, |p| p[i]);
                    let score = free - f64::from(same);
                    if best.is_none_or(|(b, _)| score > b) {
                        best = Some((score, i));
                    }
                    feasible += 1;
                    if feasible >= wanted {
                        break;
                    }
                }
            }
        }
        round.next_start = (start + looked) % n.max(1);
        if let (Some(owner), Some(placed)) = (owner, placed) {
            round.put_placed(owner, placed);
        }
        best.map(|(_, i)| i).ok_or(misfits)
    }

    /// Takes room on candidate `i` for `instance` (at `key`), in this round and, assumed, in the
    /// rounds after it until the cache shows the bind; returns the node's name.
    fn take_room(&mut self, cache: &Cache, round: &mut Round<'_>, i: usize, instance: &Instance, key: String) -> Name {
        let (memory, cpu) = requests(instance);
        let chosen = &mut round.candidates[i];
        chosen.used.memory = chosen.used.memory.saturating_add(memory);
        chosen.used.cpu = chosen.used.cpu.saturating_add(cpu);
        chosen.used.instances += 1;
        let node = chosen.node.metadata.name.clone();
        // `choose` left this workload's placement counts in the round when it spreads.
        let owner = owner_key(instance).filter(|_| placement_spreads(cache, instance));
        if let Some(placed) = owner.as_ref().and_then(|o| round.placed.get_mut(o)) {
            placed[i] += 1;
        }
        self.assumed.insert(key, Assumed { node: node.to_string(), memory, cpu, owner });
        node
    }

    fn schedule_one(&mut self, cache: &Cache, key: &str, round: &mut Round<'_>) -> Action {
        let Some(instance) = cache.instances.get(key).filter(|_| cache.pending().contains(key)) else {
            return Action::none();
        };
        match self.choose(cache, instance, round) {
            Ok(i) => {
                let node = self.take_room(cache, round, i, instance, key.to_owned());
                let rv = instance.metadata.resource_version.unwrap_or(0);
                Action::writes(vec![Write::Bind(super::writes::key_of(instance), rv, node.to_string())])
            }
            Err(misfits) => {
                let reasons: Vec<String> = misfits.iter().map(|(m, n)| format!("{n} {}", m.describe())).collect();
                let message = format!("0/{} nodes available: {}", cache.nodes.len(), reasons.join(", "));
                let writes = self.reported.note(instance, message).map(|e| Write::Upsert(AnyObject::Event(e)));
                Action { writes: writes.into_iter().collect(), requeue_after: Some(RETRY_UNSCHEDULABLE) }
            }
        }
    }
}

fn placement_spreads(cache: &Cache, instance: &Instance) -> bool {
    cache.owner(instance).is_none_or(|w| w.spec.placement.as_ref().is_none_or(|p| p.spread))
}

/// Whether `instance` fits on `candidate`; if so, a score in [0, 1]: how much is left free.
fn fit(candidate: &Candidate<'_>, instance: &Instance, memory: u64, cpu: u64) -> Result<f64, Misfit> {
    if let Some(misfit) = candidate.unavailable {
        return Err(misfit);
    }
    let labels = &candidate.node.metadata.labels;
    if instance.spec.node_selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return Err(Misfit::SelectorMismatch);
    }
    let (used, alloc) = (&candidate.used, &candidate.allocatable);
    let (memory_after, cpu_after) = (used.memory.saturating_add(memory), used.cpu.saturating_add(cpu));
    if memory_after > alloc.memory {
        return Err(Misfit::InsufficientMemory);
    }
    if cpu_after > alloc.cpu {
        return Err(Misfit::InsufficientCpu);
    }
    if used.instances.saturating_add(1) > alloc.instances {
        return Err(Misfit::TooManyInstances);
    }
    let left = |used: u64, total: u64| if total == 0 { 0.0 } else { 1.0 - used as f64 / total as f64 };
    let free = (left(memory_after, alloc.memory)
        + left(cpu_after, alloc.cpu)
        + left(u64::from(used.instances) + 1, u64::from(alloc.instances)))
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{self, Fixture, instance, node, with_ready, workload};
    use super::*;
    use shoal_api::resources::instance::Phase;

    fn bound_to(action: &Action) -> Option<String> {
        match action.writes.first()? {
            Write::Bind(key, 2, node) if key.0.starts_with("instances/default/") => Some(node.clone()),
            _ => None,
        }
    }

    fn event_message(action: &Action) -> Option<String> {
        action.writes.iter().find_map(|w| match w {
            Write::Upsert(AnyObject::Event(e)) => Some(e.spec.message.clone()),
            _ => None,
        })
    }

    fn pending_keys(f: &Fixture) -> Vec<String> {
        f.cache.pending().iter().cloned().collect()
    }

    #[test]
    fn replicas_spread_evenly_and_binds_of_one_round_count_against_room() {
        let w = workload("web", 4);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10)).node(node("b", 1024, 1000, 10));
        for i in 0..4 {
            f.instance(instance(&w, &format!("web-{i}"), None, Phase::Pending, false));
        }
        let actions = Scheduler::default().schedule(&f.cache, &pending_keys(&f), &mut []);
        let mut nodes: Vec<String> = actions.iter().filter_map(bound_to).collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "a", "b", "b"]);
    }

    #[test]
    fn spread_counts_what_is_already_bound() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10)).node(node("b", 1024, 1000, 10));
        f.instance(fixtures::serving(&w, "web-0", "a")).instance(fixtures::serving(&w, "web-1", "a"));
        f.instance(instance(&w, "web-2", None, Phase::Pending, false));
        let actions = Scheduler::default().schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(bound_to(&actions[0]).as_deref(), Some("b"));
    }

    #[test]
    fn least_allocated_wins_when_spread_is_off() {
        let mut w = workload("batch", 1);
        w.spec.placement = Some(shoal_api::resources::workload::Placement { spread: false, ..Default::default() });
        let other = workload("other", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).workload(other.clone());
        f.node(node("big", 4096, 4000, 10)).node(node("small", 1024, 1000, 10));
        f.instance(instance(&w, "batch-0", None, Phase::Pending, false));
        let actions = Scheduler::default().schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(bound_to(&actions[0]).as_deref(), Some("big"));
    }

    #[test]
    fn an_instance_that_fits_nowhere_says_why_per_node_once_and_is_retried() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone());
        f.node(node("tiny", 32, 1000, 10)); // 32Mi < 64Mi
        f.node(node("slow", 1024, 50, 10)); // 50m < 100m
        f.node(node("full", 1024, 1000, 0));
        f.node(with_ready(node("down", 1024, 1000, 10), "Unknown"));
        let mut cordoned = node("cordoned", 1024, 1000, 10);
        cordoned.spec.unschedulable = true;
        f.node(cordoned);
        let mut labelled = instance(&w, "web-0", None, Phase::Pending, false);
        labelled.spec.node_selector.insert("zone".into(), "a".into());
        f.node(node("elsewhere", 1024, 1000, 10));
        f.instance(labelled);
        let mut scheduler = Scheduler::default();
        let actions = scheduler.schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(bound_to(&actions[0]), None);
        // The selector is checked before room, so every node with room fails on the selector.
        assert_eq!(
            event_message(&actions[0]).as_deref(),
            Some("0/6 nodes available: 1 node not ready, 1 node unschedulable, 4 node selector mismatch")
        );
        assert_eq!(actions[0].requeue_after, Some(RETRY_UNSCHEDULABLE));
        let again = scheduler.schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(event_message(&again[0]), None, "the same reason is not reported twice");
    }

    #[test]
    fn room_is_checked_for_memory_cpu_and_slots() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone());
        f.node(node("tiny", 32, 1000, 10)).node(node("slow", 1024, 50, 10)).node(node("full", 1024, 1000, 0));
        f.instance(instance(&w, "web-0", None, Phase::Pending, false));
        let actions = Scheduler::default().schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(
            event_message(&actions[0]).as_deref(),
            Some("0/3 nodes available: 1 insufficient memory, 1 insufficient cpu, 1 too many instances")
        );
    }

    #[test]
    fn a_node_filled_in_this_round_takes_no_more() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 128, 1000, 10)); // room for two of 64Mi
        for i in 0..3 {
            f.instance(instance(&w, &format!("web-{i}"), None, Phase::Pending, false));
        }
        let actions = Scheduler::default().schedule(&f.cache, &pending_keys(&f), &mut []);
        assert_eq!(actions.iter().filter_map(bound_to).count(), 2);
        assert!(event_message(&actions[2]).unwrap().contains("1 insufficient memory"));
    }

    #[test]
    fn binds_in_flight_take_room_in_the_next_round_until_the_cache_shows_them() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 128, 1000, 10)).node(node("b", 1024, 1000, 10));
        for i in 0..3 {
            f.instance(instance(&w, &format!("web-{i}"), None, Phase::Pending, false));
        }
        let mut scheduler = Scheduler::default();
        let first = scheduler.schedule(&f.cache, &["instances/default/web-0".to_owned()], &mut []);
        let second = scheduler.schedule(&f.cache, &["instances/default/web-1".to_owned()], &mut []);
        assert_ne!(bound_to(&first[0]), bound_to(&second[0]), "the first bind, in flight, spreads the second");
        // The first bind failed: its room is free again.
        scheduler.forget("instances/default/web-0");
        let third = scheduler.schedule(&f.cache, &["instances/default/web-2".to_owned()], &mut []);
        assert_eq!(bound_to(&third[0]), bound_to(&first[0]));
    }

    #[test]
    fn new_instances_are_placed_as_they_are_created_and_hold_their_room_until_the_cache_shows_them() {
        let w = workload("web", 3);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 128, 1000, 10)).node(node("b", 128, 1000, 10)); // two of 64Mi each
        let mut fresh: Vec<Instance> =
            (0..3).map(|i| instance(&w, &format!("web-{i}"), None, Phase::Pending, false)).collect();
        let mut scheduler = Scheduler::default();
        scheduler.schedule(&f.cache, &[], &mut fresh.iter_mut().collect::<Vec<_>>());
        let nodes: Vec<String> = fresh.iter().filter_map(|i| i.spec.node.as_ref().map(|n| n.to_string())).collect();
        assert_eq!(nodes.len(), 3, "room for four, three placed");
        let on_a = nodes.iter().filter(|n| *n == "a").count();
        assert!(on_a == 1 || on_a == 2, "spread two and one: {nodes:?}");
        // In flight, not yet in the cache: a fourth fits in the one slot left, a fifth nowhere.
        let mut more: Vec<Instance> =
            (3..5).map(|i| instance(&w, &format!("web-{i}"), None, Phase::Pending, false)).collect();
        scheduler.schedule(&f.cache, &[], &mut more.iter_mut().collect::<Vec<_>>());
        assert!(more[0].spec.node.is_some());
        assert_eq!(more[1].spec.node, None, "room taken by creates in flight is not given twice");
        // The cache shows the first three: their room is counted once, by the cache.
        let mut seen = Vec::new();
        for i in &fresh {
            f.instance(i.clone());
            seen.push(format!("instances/default/{}", i.metadata.name));
        }
        scheduler.seen(&f.cache, &seen);
        let mut last = [instance(&w, "web-5", None, Phase::Pending, false)];
        scheduler.schedule(&f.cache, &[], &mut last.iter_mut().collect::<Vec<_>>());
        assert_eq!(last[0].spec.node, None, "three bound and one in flight fill both nodes");
        // The create in flight failed: its slot is free again.
        scheduler.forget(&format!("instances/default/{}", more[0].metadata.name));
        scheduler.schedule(&f.cache, &[], &mut last.iter_mut().collect::<Vec<_>>());
        assert!(last[0].spec.node.is_some());
    }

    #[test]
    fn the_share_of_nodes_scored_shrinks_with_the_cluster_and_never_below_a_hundred() {
        assert_eq!(nodes_to_score(3), 3);
        assert_eq!(nodes_to_score(100), 100);
        assert_eq!(nodes_to_score(150), 100, "49% of 150 is under a hundred");
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(100_000), 5000);
    }

    /// Per node, how many of `actions` bound an instance there.
    fn per_node(actions: &[Action]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for node in actions.iter().filter_map(bound_to) {
            *counts.entry(node).or_default() += 1;
        }
        counts
    }

    #[test]
    fn sampled_placements_walk_every_node_and_keep_the_spread_within_one() {
        let mut f = Fixture::default();
        let workloads: Vec<_> = (0..12).map(|i| workload(&format!("w{i}"), 100)).collect();
        for w in &workloads {
            f.workload(w.clone());
        }
        for i in 0..400 {
            f.node(node(&format!("n{i:03}"), 1 << 20, 1 << 20, 1000));
        }
        for w in &workloads {
            for i in 0..100 {
                f.instance(instance(w, &format!("{}-{i}", w.metadata.name), None, Phase::Pending, false));
            }
        }
        let keys = pending_keys(&f);
        assert_eq!(nodes_to_score(400), 188, "a sample, not every node");
        let mut scheduler = Scheduler::default();
        // In rounds of 100, each counting the binds of the earlier ones as in flight.
        let actions: Vec<Action> = keys.chunks(100).flat_map(|k| scheduler.schedule(&f.cache, k, &mut [])).collect();
        let counts = per_node(&actions);
        assert_eq!(counts.values().sum::<usize>(), 1200, "every instance placed");
        assert_eq!(counts.len(), 400, "every node used");
        let (least, most) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert!(most - least <= 1, "1,200 over 400 nodes: {least}..{most} per node");
    }

    #[test]
    fn a_sampled_search_still_finds_the_one_node_with_room_and_counts_every_misfit() {
        let w = workload("web", 2);
        let mut f = Fixture::default();
        f.workload(w.clone());
        for i in 0..300 {
            f.node(node(&format!("n{i:03}"), 32, 1000, 10)); // 32Mi < 64Mi
        }
        f.node(node("roomy", 1024, 1000, 10));
        f.instance(instance(&w, "web-0", None, Phase::Pending, false));
        f.instance(instance(&w, "web-1", None, Phase::Pending, false));
        let mut scheduler = Scheduler::default();
        let first = scheduler.schedule(&f.cache, &["instances/default/web-0".to_owned()], &mut []);
        assert_eq!(bound_to(&first[0]).as_deref(), Some("roomy"));
        // Full now: the one search that finds no room looks at every node.
        f.node(node("roomy", 32, 1000, 10));
        scheduler.forget_assumed();
        let second = scheduler.schedule(&f.cache, &["instances/default/web-1".to_owned()], &mut []);
        assert_eq!(bound_to(&second[0]), None);
        assert_eq!(event_message(&second[0]).as_deref(), Some("0/301 nodes available: 301 insufficient memory"));
    }

    #[test]
    fn bound_or_ended_instances_are_left_alone() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).node(node("a", 1024, 1000, 10));
        f.instance(fixtures::serving(&w, "web-0", "a"));
        let actions = Scheduler::default().schedule(&f.cache, &["instances/default/web-0".to_owned()], &mut []);
        assert!(actions[0].writes.is_empty());
    }
}
