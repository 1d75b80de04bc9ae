//! The controllers' view of the cluster: typed copies of the objects they reconcile, kept
//! current from the local state machine's change history (an informer, without the network:
//! the controllers live in the control node's own process), with the indexes that let a
//! reconciler look at one object without walking the others: instances by owner and by node,
//! the pending instances, and what is bound to each node.
//!
//! Every change that reaches the cache also says which reconcile tasks it concerns
//! ([`super::triggers`]); [`Cache::sync`] returns them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use shoal_api::module::{MODULES, ModuleRecord};
use shoal_api::resources::cronjob::{CronJob, CronJobKind};
use shoal_api::resources::instance::{Instance, InstanceKind, InstanceSpec};
use shoal_api::resources::job::{Job, JobKind};
use shoal_api::resources::namespace::{Namespace, NamespaceKind};
use shoal_api::resources::node::{Node, NodeKind};
use shoal_api::resources::secret::DataSpec;
use shoal_api::resources::service::{Service, ServiceKind};
use shoal_api::resources::workload::{Source, Workload, WorkloadKind};
use shoal_api::{Kind, Object, Resource};

use super::queue::Task;
use super::triggers;
use crate::store::{ChangeKind, HistoryError, StoreReader};

/// How many changes one read of the history returns at most.
const BATCH: usize = 4096;

/// Objects by store key (`<plural>/<namespace>/<name>`).
pub type Objects<R> = BTreeMap<String, Object<R>>;

/// What the instances bound to one node request, together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// Memory, bytes.
    pub memory: u64,
    /// CPU, millicores.
    pub cpu: u64,
    /// Instance slots.
    pub instances: u32,
}

impl Allocated {
    /// This and `other` together.
    pub fn plus(self, other: Allocated) -> Allocated {
        Allocated {
            memory: self.memory.saturating_add(other.memory),
            cpu: self.cpu.saturating_add(other.cpu),
            instances: self.instances.saturating_add(other.instances),
        }
    }

    /// This less `other` (never below zero).
    pub fn minus(self, other: Allocated) -> Allocated {
        Allocated {
            memory: self.memory.saturating_sub(other.memory),
            cpu: self.cpu.saturating_sub(other.cpu),
            instances: self.instances.saturating_sub(other.instances),
        }
    }

    /// What one instance requesting `memory` and `cpu` takes.
    pub fn one(memory: u64, cpu: u64) -> Allocated {
        Allocated { memory, cpu, instances: 1 }
    }

    /// Adds (or, with `add` false, takes away) what `instance` requests.
    fn count(&mut self, instance: &Instance, add: bool) {
        let (memory, cpu) = requests(instance);
        let one = Allocated::one(memory, cpu);
        *self = if add { self.plus(one) } else { self.minus(one) };
    }
}

/// Memory (bytes) and CPU (millicores) an instance requests; none counts as 0.
pub fn requests(instance: &Instance) -> (u64, u64) {
    let r = &instance.spec.resources;
    (r.memory.map_or(0, |m| m.0), r.cpu.map_or(0, |c| c.0))
}

/// The namespace `instance` lives in.
pub fn namespace_of(instance: &Instance) -> &str {
    instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str())
}

/// The store key of the workload or Job that owns `instance`, if it names one.
pub fn owner_key(instance: &Instance) -> Option<String> {
    let ns = instance.metadata.namespace.as_ref()?;
    if let Some(workload) = instance.spec.workload.as_ref() {
        return Some(format!("workloads/{ns}/{workload}"));
    }
    let owner = instance.metadata.owner_references.first().filter(|o| o.kind == Kind::Job)?;
    Some(format!("jobs/{ns}/{}", owner.name))
}

/// The task that looks at the owner at `key` (a workload's or a Job's store key).
pub fn owner_task(key: String) -> Task {
    if key.starts_with("jobs/") { Task::Job(key) } else { Task::Workload(key) }
}

/// Typed copies of workloads, instances, nodes and services, as of `revision`, and indexes.
#[derive(Default)]
pub struct Cache {
    /// Whether the first full read happened.
    loaded: bool,
    /// The store revision the cache reflects.
    pub revision: u64,
    /// Every workload.
    pub workloads: Objects<WorkloadKind>,
    /// Every instance.
    pub instances: Objects<InstanceKind>,
    /// Every node.
    pub nodes: Objects<NodeKind>,
    /// Every service.
    pub services: Objects<ServiceKind>,
    /// Every Job.
    pub jobs: Objects<JobKind>,
    /// Every CronJob.
    pub cronjobs: Objects<CronJobKind>,
    /// Every namespace object (`default` has none unless someone made it).
    pub namespaces: Objects<NamespaceKind>,
    /// What the live instances of each namespace request, by namespace name (for quotas).
    usage: HashMap<String, Allocated>,
    /// Instance keys by the key of the workload they name.
    by_owner: HashMap<String, BTreeSet<String>>,
    /// Keys of the instances bound to each node, by node name.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Keys of the unbound instances that have not ended.
    pending: BTreeSet<String>,
    /// What the live instances bound to each node request, by node name.
    allocated: HashMap<String, Allocated>,
    /// Live instances of each workload (by key) on each node (by name), for spreading.
    placed: HashMap<String, HashMap<String, u32>>,
    /// Keys of the instances changed since [`Cache::take_changed_instances`] last took them.
    changed_instances: Vec<String>,
    /// The uids of the singleton instances bound to each node (for fencing leases), and
    /// whether they changed since [`Cache::take_singletons`] last took them.
    singletons: HashMap<String, BTreeSet<String>>,
    singletons_changed: bool,
    /// Each workload's instance template and its hash, with the generation they were made at.
    templates: HashMap<String, (Option<u64>, Arc<InstanceSpec>, String)>,
    /// Module records: their size, by key (`modules/<namespace>/<sha256>`).
    pub modules: BTreeMap<String, u64>,
    /// What the module records of each namespace take together, by namespace name.
    module_bytes: HashMap<String, u64>,
    /// How many workloads and instances use each module record key (a count for every key
    /// used, whether or not it is recorded).
    module_users: HashMap<String, u32>,
    /// A short digest of each Secret's and Config's data as stored (a Secret's sealed), by key
    /// (`secrets/<ns>/<name>`, `configs/<ns>/<name>`): what the templates of the workloads that
    /// take values from them depend on, so that a change rolls them out.
    values: BTreeMap<String, String>,
    /// When each Event (by key) last happened: all that expiry and a namespace's deletion need
    /// of them.
    events: BTreeMap<String, std::time::SystemTime>,
}

/// The key of the module record a workload or instance in `ns` using `module` (`sha256:<hex>`)
/// needs.
pub fn module_key(ns: &str, module: &str) -> Option<String> {
    let hex = module.strip_prefix("sha256:")?;
    Some(format!("{MODULES}/{ns}/{hex}"))
}

fn parse<R: Resource>(key: &str, bytes: &[u8]) -> Option<Object<R>>
where
    Object<R>: DeserializeOwned,
{
    match serde_json::from_slice(bytes) {
        Ok(object) => Some(object),
        Err(e) => {
            tracing::warn!("controllers: skipping {key}: stored object does not parse: {e}");
            None
        }
    }
}

/// The object a change leaves (`Some(None)` for a delete), or `None` when the stored object
/// does not parse: then the cache keeps the copy it has rather than take it for a delete
/// (which would collect its instances, or strand them).
fn parsed<R: Resource>(key: &str, bytes: Option<&[u8]>) -> Option<Option<Object<R>>>
where
    Object<R>: DeserializeOwned,
{
    match bytes {
        Some(bytes) => parse(key, bytes).map(Some),
        None => Some(None),
    }
}

/// A short digest of stored data: it changes when a value changes (a Secret's sealed values
/// change only when written anew; see [`crate::sealing`]).
fn data_version(data: &BTreeMap<String, String>) -> String {
    let digest = Sha256::digest(serde_json::to_vec(data).expect("maps of strings serialize"));
    hex::encode(&digest[..8])
}

fn prefix(kind: Kind) -> String {
    format!("{}/", kind.plural())
}

impl Cache {
    /// Catches up with the state machine: a full read the first time (or when the history the
    /// cache needs was compacted away), the changes since `revision` after that. Returns the
    /// tasks the changes concern (every task there is, after a full read).
    pub fn sync(&mut self, reader: &StoreReader) -> Result<Vec<Task>, crate::store::types::StorageError> {
        let mut tasks = Vec::new();
        if self.loaded {
            match self.follow(reader, &mut tasks) {
                Ok(()) => return Ok(tasks),
                Err(HistoryError::Compacted { .. }) => tracing::info!("controllers: history compacted, re-reading"),
                Err(HistoryError::Storage(e)) => return Err(*e),
            }
        }
        self.reload(reader)?;
        Ok(self.every_task())
    }

    fn reload(&mut self, reader: &StoreReader) -> Result<(), crate::store::types::StorageError> {
        *self = Cache::default();
        let mut revision = u64::MAX;
        for kind in
            [Kind::Namespace, Kind::Workload, Kind::CronJob, Kind::Job, Kind::Instance, Kind::Node, Kind::Service]
        {
            let (rev, entries) = reader.entries(&prefix(kind))?;
            revision = revision.min(rev);
            for (key, bytes) in entries {
                self.apply_bytes(&key, Some(&bytes), &mut Vec::new());
            }
        }
        for prefix in [format!("{MODULES}/"), prefix(Kind::Event), prefix(Kind::Secret), prefix(Kind::Config)] {
            let (rev, entries) = reader.entries(&prefix)?;
            revision = revision.min(rev);
            for (key, bytes) in entries {
                self.apply_bytes(&key, Some(&bytes), &mut Vec::new());
            }
        }
        // The reads may have seen different revisions; replaying from the oldest is harmless
        // (every change carries the whole object) and misses nothing.
        self.revision = revision;
        self.loaded = true;
        self.singletons_changed = true;
        match self.follow(reader, &mut Vec::new()) {
            Ok(()) | Err(HistoryError::Compacted { .. }) => Ok(()),
            Err(HistoryError::Storage(e)) => Err(*e),
        }
    }

    fn follow(&mut self, reader: &StoreReader, tasks: &mut Vec<Task>) -> Result<(), HistoryError> {
        loop {
            let (changes, scanned_to) = reader.changes_after(self.revision, "", BATCH)?;
            for change in &changes {
                let bytes = (change.kind != ChangeKind::Deleted).then_some(change.object.as_slice());
                self.apply_bytes(&change.key, bytes, tasks);
            }
            self.revision = self.revision.max(scanned_to);
            if changes.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// The keys of the instances changed since the last call (for the scheduler, whose
    /// assumed binds end when the cache shows them).
    pub fn take_changed_instances(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed_instances)
    }

    /// Every task there is: what a full resync looks at.
    pub fn every_task(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.workloads.keys().map(|k| Task::Workload(k.clone())).collect();
        tasks.extend(self.pending.iter().map(|k| Task::Schedule(k.clone())));
        tasks.extend(self.nodes.values().map(|n| Task::Node(n.metadata.name.to_string())));
        tasks.extend(self.services.keys().map(|k| Task::Endpoints(k.clone())));
        tasks.extend(self.jobs.keys().map(|k| Task::Job(k.clone())));
        tasks.extend(self.cronjobs.keys().map(|k| Task::CronJob(k.clone())));
        tasks.extend(self.instances.keys().map(|k| Task::Collect(k.clone())));
        tasks.extend(self.namespaces.values().map(|n| Task::Namespace(n.metadata.name.to_string())));
        tasks.extend(self.modules.keys().map(|k| Task::Module(k.clone())));
        tasks.extend(self.events.keys().map(|k| Task::Event(k.clone())));
        tasks
    }

    pub(super) fn apply_bytes(&mut self, key: &str, bytes: Option<&[u8]>, tasks: &mut Vec<Task>) {
        let kind = key.split('/').next().unwrap_or_default();
        if kind == Kind::Workload.plural() {
            if let Some(new) = parsed::<WorkloadKind>(key, bytes) {
                self.put_workload(key, new, tasks);
            }
        } else if kind == Kind::Instance.plural() {
            if let Some(new) = parsed::<InstanceKind>(key, bytes) {
                self.put_instance(key, new, tasks);
            }
        } else if kind == Kind::Node.plural() {
            if let Some(new) = parsed::<NodeKind>(key, bytes) {
                self.put_node(key, new, tasks);
            }
        } else if kind == Kind::Job.plural() {
            if let Some(new) = parsed::<JobKind>(key, bytes) {
                self.put_job(key, new, tasks);
            }
        } else if kind == Kind::CronJob.plural() {
            if let Some(new) = parsed::<CronJobKind>(key, bytes) {
                self.put_cronjob(key, new, tasks);
            }
        } else if kind == Kind::Service.plural() {
            if let Some(new) = parsed::<ServiceKind>(key, bytes) {
                self.put_service(key, new, tasks);
            }
        } else if kind == Kind::Namespace.plural() {
            if let Some(new) = parsed::<NamespaceKind>(key, bytes) {
                self.put_namespace(key, new, tasks);
            }
        } else if kind == Kind::Event.plural() {
            match bytes.map(event_time) {
                Some(at) => {
                    self.events.insert(key.to_owned(), at);
                    tasks.push(Task::Event(key.to_owned()));
                }
                None => {
                    self.events.remove(key);
                }
            }
        } else if kind == Kind::Secret.plural() || kind == Kind::Config.plural() {
            // Only the data matters here, and a Secret's and a Config's have one shape.
            #[derive(serde::Deserialize)]
            struct Stored {
                spec: DataSpec,
            }
            let version = match bytes.map(serde_json::from_slice::<Stored>) {
                Some(Ok(object)) => Some(data_version(&object.spec.data)),
                Some(Err(e)) => {
                    tracing::warn!("controllers: skipping {key}: stored object does not parse: {e}");
                    return;
                }
                None => None,
            };
            self.put_values(key, version, tasks);
        } else if kind == MODULES {
            let size = match bytes.map(serde_json::from_slice::<ModuleRecord>) {
                Some(Ok(record)) => Some(record.size),
                Some(Err(e)) => {
                    tracing::warn!("controllers: skipping {key}: stored module record does not parse: {e}");
                    return;
                }
                None => None,
            };
            self.put_module(key, size, tasks);
        }
    }

    /// Records (with a size) or forgets the module record at `key`; adds its tasks.
    pub fn put_module(&mut self, key: &str, size: Option<u64>, tasks: &mut Vec<Task>) {
        let ns = key.split('/').nth(1).unwrap_or_default().to_owned();
        let old = match size {
            Some(size) => self.modules.insert(key.to_owned(), size),
            None => self.modules.remove(key),
        };
        let total = self.module_bytes.entry(ns.clone()).or_default();
        *total = total.saturating_sub(old.unwrap_or(0)).saturating_add(size.unwrap_or(0));
        if *total == 0 {
            self.module_bytes.remove(&ns);
        }
        if old != size {
            tasks.push(Task::Module(key.to_owned()));
            if self.namespace(&ns).is_some() {
                tasks.push(Task::Namespace(ns));
            }
        }
    }

    /// Records (with its data's version) or forgets the Secret or Config at `key`; when that
    /// changed what it holds, the workloads of its namespace that take values from it are
    /// tasks (their template changes with it).
    pub fn put_values(&mut self, key: &str, version: Option<String>, tasks: &mut Vec<Task>) {
        let changed = match version {
            Some(v) => self.values.insert(key.to_owned(), v.clone()).as_ref() != Some(&v),
            None => self.values.remove(key).is_some(),
        };
        if !changed {
            return;
        }
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else { return };
        for (workload_key, workload) in self.workloads_in(ns) {
            let names = |s: &Source<'_>| s.kind().plural() == kind && s.name().as_str() == name;
            if workload.spec.sources().iter().any(names) {
                tasks.push(Task::Workload(workload_key.clone()));
            }
        }
    }

    /// When the Event at `key` last happened, if it exists.
    pub fn event_time(&self, key: &str) -> Option<std::time::SystemTime> {
        self.events.get(key).copied()
    }

    /// What the module records of namespace `ns` take together.
    pub fn module_bytes(&self, ns: &str) -> u64 {
        self.module_bytes.get(ns).copied().unwrap_or(0)
    }

    /// How many workloads and instances use the module record at `key`.
    pub fn module_users(&self, key: &str) -> u32 {
        self.module_users.get(key).copied().unwrap_or(0)
    }

    /// Counts one more (or, with `add` false, one fewer) user of `module` in `ns`; a module
    /// left without users is a task for its collection.
    fn use_module(&mut self, ns: &str, module: &str, add: bool, tasks: &mut Vec<Task>) {
        let Some(key) = module_key(ns, module) else { return };
        let users = self.module_users.entry(key.clone()).or_default();
        *users = if add { users.saturating_add(1) } else { users.saturating_sub(1) };
        if *users == 0 {
            self.module_users.remove(&key);
            if self.modules.contains_key(&key) {
                tasks.push(Task::Module(key));
            }
        }
    }

    /// Replaces (or, with `None`, removes) the workload at `key`; adds the tasks it concerns.
    pub fn put_workload(&mut self, key: &str, new: Option<Workload>, tasks: &mut Vec<Task>) {
        let old = match &new {
            Some(w) => {
                let spec_changed = self.templates.get(key).is_none_or(|(g, _, _)| *g != w.metadata.generation);
                if spec_changed {
                    let template = super::workload::template(w);
                    let hash = super::workload::template_hash(&template, w.spec.restarted_at.as_deref());
                    self.templates.insert(key.to_owned(), (w.metadata.generation, Arc::new(template), hash));
                }
                self.workloads.insert(key.to_owned(), w.clone())
            }
            None => {
                self.templates.remove(key);
                self.workloads.remove(key)
            }
        };
        let ns = key.split('/').nth(1).unwrap_or_default();
        if let Some(new) = &new {
            self.use_module(ns, &new.spec.module, true, tasks);
        }
        if let Some(old) = &old {
            self.use_module(ns, &old.spec.module, false, tasks);
        }
        triggers::workload(self, key, old.as_ref(), new.as_ref(), tasks);
    }

    /// The hash of the workload at `key`'s spec alone (its revision's), computed once per
    /// generation.
    pub fn spec_hash(&self, key: &str) -> Option<&str> {
        self.templates.get(key).map(|(_, _, hash)| hash.as_str())
    }

    /// The instance spec the workload at `key` makes now, and its hash: of the spec (computed
    /// once per generation of the workload, not once per reconcile) and of the versions of the
    /// Secrets and Configs it takes values from, so that a change of those rolls it out.
    pub fn template(&self, key: &str) -> Option<(Arc<InstanceSpec>, String)> {
        let (_, template, hash) = self.templates.get(key)?;
        let sources = template.sources();
        if sources.is_empty() {
            return Some((template.clone(), hash.clone()));
        }
        let ns = key.split('/').nth(1).unwrap_or_default();
        let mut digest = Sha256::new();
        digest.update(hash.as_bytes());
        for source in sources {
            let at = format!("{}/{ns}/{}", source.kind().plural(), source.name());
            digest.update(format!("\n{at}={}", self.values.get(&at).map_or("-", |v| v.as_str())).as_bytes());
        }
        Some((template.clone(), hex::encode(&digest.finalize()[..5])))
    }

    /// Replaces (or removes) the instance at `key`, keeping the indexes; adds its tasks.
    pub fn put_instance(&mut self, key: &str, new: Option<Instance>, tasks: &mut Vec<Task>) {
        let old = self.instances.remove(key);
        if let Some(new) = &new {
            self.use_module(namespace_of(new), &new.spec.module, true, tasks);
        }
        if let Some(old) = &old {
            self.use_module(namespace_of(old), &old.spec.module, false, tasks);
            self.unindex(key, old);
        }
        if let Some(new) = &new {
            self.index(key, new);
        }
        triggers::instance(self, key, old.as_ref(), new.as_ref(), tasks);
        self.changed_instances.push(key.to_owned());
        self.track_singleton(old.as_ref(), new.as_ref());
        if let Some(new) = new {
            self.instances.insert(key.to_owned(), new);
        }
    }

    fn track_singleton(&mut self, old: Option<&Instance>, new: Option<&Instance>) {
        let fenced = |i: &Instance| match (&i.spec.node, &i.metadata.uid) {
            (Some(node), Some(uid)) if i.spec.singleton => Some((node.to_string(), uid.clone())),
            _ => None,
        };
        let (before, after) = (old.and_then(fenced), new.and_then(fenced));
        if before == after {
            return;
        }
        if let Some((node, uid)) = before
            && let Some(uids) = self.singletons.get_mut(&node)
        {
            uids.remove(&uid);
            if uids.is_empty() {
                self.singletons.remove(&node);
            }
        }
        if let Some((node, uid)) = after {
            self.singletons.entry(node).or_default().insert(uid);
        }
        self.singletons_changed = true;
    }

    /// The uids of the singleton instances bound to each node, if they changed since the last
    /// call (or the cache was read anew).
    pub fn take_singletons(&mut self) -> Option<HashMap<String, Vec<String>>> {
        if !std::mem::take(&mut self.singletons_changed) {
            return None;
        }
        Some(self.singletons.iter().map(|(node, uids)| (node.clone(), uids.iter().cloned().collect())).collect())
    }

    /// Replaces (or removes) the node at `key`; adds its tasks.
    pub fn put_node(&mut self, key: &str, new: Option<Node>, tasks: &mut Vec<Task>) {
        let old = match &new {
            Some(n) => self.nodes.insert(key.to_owned(), n.clone()),
            None => self.nodes.remove(key),
        };
        triggers::node(self, old.as_ref(), new.as_ref(), tasks);
    }

    /// Replaces (or removes) the namespace at `key`; adds its tasks.
    pub fn put_namespace(&mut self, key: &str, new: Option<Namespace>, tasks: &mut Vec<Task>) {
        let old = match new {
            Some(n) => self.namespaces.insert(key.to_owned(), n),
            None => self.namespaces.remove(key),
        };
        let name = key.rsplit('/').next().unwrap_or_default();
        triggers::namespace(self, name, old.as_ref(), self.namespaces.get(key), tasks);
    }

    /// The namespace object called `name`, if there is one.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(&format!("namespaces//{name}"))
    }

    /// What the live instances of namespace `ns` request together.
    pub fn usage(&self, ns: &str) -> Allocated {
        self.usage.get(ns).copied().unwrap_or_default()
    }

    /// Replaces (or removes) the Job at `key`; adds its tasks.
    pub fn put_job(&mut self, key: &str, new: Option<Job>, tasks: &mut Vec<Task>) {
        let old = match &new {
            Some(j) => self.jobs.insert(key.to_owned(), j.clone()),
            None => self.jobs.remove(key),
        };
        let ns = key.split('/').nth(1).unwrap_or_default().to_owned();
        if let Some(new) = &new {
            self.use_module(&ns, &new.spec.template.module, true, tasks);
        }
        if let Some(old) = &old {
            self.use_module(&ns, &old.spec.template.module, false, tasks);
        }
        triggers::job(self, key, old.as_ref(), new.as_ref(), tasks);
    }

    /// Replaces (or removes) the CronJob at `key`; adds its tasks.
    pub fn put_cronjob(&mut self, key: &str, new: Option<CronJob>, tasks: &mut Vec<Task>) {
        let old = match &new {
            Some(c) => self.cronjobs.insert(key.to_owned(), c.clone()),
            None => self.cronjobs.remove(key),
        };
        let ns = key.split('/').nth(1).unwrap_or_default().to_owned();
        if let Some(new) = &new {
            self.use_module(&ns, &new.spec.job_template.template.module, true, tasks);
        }
        if let Some(old) = &old {
            self.use_module(&ns, &old.spec.job_template.template.module, false, tasks);
        }
        triggers::cronjob(self, key, old.as_ref(), new.as_ref(), tasks);
    }

    /// The Jobs the CronJob at `key` made (by their owner reference's name; the uid is the
    /// caller's to check).
    pub fn jobs_of<'a>(&'a self, cron_key: &str) -> impl Iterator<Item = (&'a String, &'a Job)> + use<'a> {
        let mut parts = cron_key.splitn(3, '/').skip(1);
        let (ns, name) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
        let from = format!("jobs/{ns}/");
        self.jobs.range(from.clone()..).take_while(move |(k, _)| k.starts_with(&from)).filter(move |(_, j)| {
            j.metadata.owner_references.first().is_some_and(|o| o.kind == Kind::CronJob && o.name.as_str() == name)
        })
    }

    /// Replaces (or removes) the service at `key`; adds its tasks.
    pub fn put_service(&mut self, key: &str, new: Option<Service>, tasks: &mut Vec<Task>) {
        match new {
            Some(s) => {
                self.services.insert(key.to_owned(), s);
                tasks.push(Task::Endpoints(key.to_owned()));
            }
            None => {
                self.services.remove(key);
            }
        }
    }

    fn index(&mut self, key: &str, instance: &Instance) {
        let owner = owner_key(instance);
        if let Some(owner) = &owner {
            self.by_owner.entry(owner.clone()).or_default().insert(key.to_owned());
        }
        let live = !instance.phase().is_terminal();
        if live {
            self.usage.entry(namespace_of(instance).to_owned()).or_default().count(instance, true);
        }
        match &instance.spec.node {
            Some(node) => {
                self.by_node.entry(node.to_string()).or_default().insert(key.to_owned());
                if live {
                    self.allocated.entry(node.to_string()).or_default().count(instance, true);
                    if let Some(owner) = owner {
                        *self.placed.entry(owner).or_default().entry(node.to_string()).or_default() += 1;
                    }
                }
            }
            None if live => {
                self.pending.insert(key.to_owned());
            }
            None => {}
        }
    }

    fn unindex(&mut self, key: &str, instance: &Instance) {
        let owner = owner_key(instance);
        if let Some(owner) = &owner {
            remove_from(&mut self.by_owner, owner, key);
        }
        self.pending.remove(key);
        if !instance.phase().is_terminal()
            && let Some(usage) = self.usage.get_mut(namespace_of(instance))
        {
            usage.count(instance, false);
            if usage.instances == 0 {
                self.usage.remove(namespace_of(instance));
            }
        }
        let Some(node) = &instance.spec.node else { return };
        remove_from(&mut self.by_node, node.as_str(), key);
        if instance.phase().is_terminal() {
            return;
        }
        if let Some(allocated) = self.allocated.get_mut(node.as_str()) {
            allocated.count(instance, false);
            if allocated.instances == 0 {
                self.allocated.remove(node.as_str());
            }
        }
        if let Some(owner) = owner
            && let Some(per_node) = self.placed.get_mut(&owner)
        {
            if let Some(count) = per_node.get_mut(node.as_str()) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_node.remove(node.as_str());
                }
            }
            if per_node.is_empty() {
                self.placed.remove(&owner);
            }
        }
    }

    /// The instances that name the workload at `key` (whatever their owner's uid), by key.
    pub fn instances_of<'a>(&'a self, workload_key: &str) -> impl Iterator<Item = &'a Instance> + use<'a> {
        self.by_owner.get(workload_key).into_iter().flatten().filter_map(|k| self.instances.get(k))
    }

    /// The instances bound to node `name`.
    pub fn instances_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Instance> + use<'a> {
        self.by_node.get(node).into_iter().flatten().filter_map(|k| self.instances.get(k))
    }

    /// The instances in namespace `ns`.
    pub fn instances_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a Instance> + use<'a> {
        let from = format!("instances/{ns}/");
        self.instances.range(from.clone()..).take_while(move |(k, _)| k.starts_with(&from)).map(|(_, i)| i)
    }

    /// The services in namespace `ns`, with their keys.
    /// The workloads of namespace `ns`, with their keys.
    pub fn workloads_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = (&'a String, &'a Workload)> + use<'a> {
        let from = format!("workloads/{ns}/");
        self.workloads.range(from.clone()..).take_while(move |(k, _)| k.starts_with(&from))
    }

    /// The services of namespace `ns`, with their keys.
    pub fn services_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = (&'a String, &'a Service)> + use<'a> {
        let from = format!("services/{ns}/");
        self.services.range(from.clone()..).take_while(move |(k, _)| k.starts_with(&from))
    }

    /// The keys of everything namespace `ns` holds: workloads, services, instances, events and
    /// module records.
    pub fn keys_in(&self, ns: &str) -> Vec<String> {
        fn range<'a, V>(map: &'a BTreeMap<String, V>, from: String) -> impl Iterator<Item = String> + 'a {
            map.range(from.clone()..).take_while(move |(k, _)| k.starts_with(&from)).map(|(k, _)| k.clone())
        }
        let mut keys: Vec<String> = range(&self.workloads, format!("workloads/{ns}/")).collect();
        keys.extend(range(&self.services, format!("services/{ns}/")));
        keys.extend(range(&self.jobs, format!("jobs/{ns}/")));
        keys.extend(range(&self.cronjobs, format!("cronjobs/{ns}/")));
        keys.extend(range(&self.instances, format!("instances/{ns}/")));
        keys.extend(range(&self.modules, format!("{MODULES}/{ns}/")));
        keys.extend(range(&self.events, format!("events/{ns}/")));
        keys.extend(range(&self.values, format!("secrets/{ns}/")));
        keys.extend(range(&self.values, format!("configs/{ns}/")));
        keys
    }

    /// Keys of the unbound instances that have not ended.
    pub fn pending(&self) -> &BTreeSet<String> {
        &self.pending
    }

    /// What the live instances bound to node `name` request.
    pub fn allocated(&self, node: &str) -> Allocated {
        self.allocated.get(node).copied().unwrap_or_default()
    }

    /// How many live instances of the workload at `key` are bound to node `name`.
    pub fn placed(&self, workload_key: &str, node: &str) -> u32 {
        self.placed.get(workload_key).and_then(|n| n.get(node)).copied().unwrap_or(0)
    }

    /// Whether the Job an instance names (by its owner reference) exists and is the one that
    /// made it (the same uid).
    pub fn job_owns(&self, instance: &Instance) -> bool {
        let Some(owner) = instance.metadata.owner_references.first().filter(|o| o.kind == Kind::Job) else {
            return false;
        };
        let Some(key) = owner_key(instance) else { return false };
        self.jobs.get(&key).is_some_and(|j| j.metadata.uid.as_deref().is_none_or(|uid| uid == owner.uid))
    }

    /// The workload an instance belongs to, if it still exists.
    pub fn owner(&self, instance: &Instance) -> Option<&Workload> {
        self.workloads.get(&owner_key(instance)?)
    }

    /// Whether an instance serves: Running and ready, on a node that is itself Ready.
    pub fn serving(&self, instance: &Instance) -> bool {
        instance.is_ready() && instance.spec.node.as_ref().and_then(|n| self.node(n.as_str())).is_some_and(is_ready)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&format!("nodes//{name}"))
    }
}

/// When a stored Event (JSON) last happened: its `lastTimestamp`, else its creation; now for
/// one that says neither (it expires a TTL from when it was seen).
fn event_time(bytes: &[u8]) -> std::time::SystemTime {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Times {
        #[serde(default)]
        metadata: Meta,
        #[serde(default)]
        spec: Spec,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        creation_timestamp: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        last_timestamp: Option<String>,
    }
    let times: Times = serde_json::from_slice(bytes).unwrap_or_default();
    times
        .spec
        .last_timestamp
        .or(times.metadata.creation_timestamp)
        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
        .unwrap_or_else(std::time::SystemTime::now)
}

/// Whether a node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True")
}

fn remove_from(index: &mut HashMap<String, BTreeSet<String>>, at: &str, key: &str) {
    if let Some(keys) = index.get_mut(at) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Fixture, serving, workload};
    use super::*;

    #[test]
    fn a_stored_object_that_does_not_parse_is_not_taken_for_a_delete() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone()).instance(serving(&w, "web-1", "a"));
        f.take_tasks();
        let mut tasks = Vec::new();
        f.cache.apply_bytes("workloads/default/web", Some(br#"{"spec": "from a newer version"}"#), &mut tasks);
        assert!(f.cache.workloads.contains_key("workloads/default/web"), "the last good copy stays");
        assert!(tasks.is_empty(), "nothing is collected: {tasks:?}");
        f.cache.apply_bytes("workloads/default/web", None, &mut tasks);
        assert!(tasks.contains(&Task::Collect("instances/default/web-1".into())), "a real delete is: {tasks:?}");
    }

    #[test]
    fn indexes_follow_an_instance_through_bind_end_and_delete() {
        let w = workload("web", 1);
        let mut f = Fixture::default();
        f.workload(w.clone());
        let mut pending = serving(&w, "web-1", "a");
        pending.spec.node = None;
        pending.status = None;
        f.instance(pending);
        assert!(f.cache.pending().contains("instances/default/web-1"));
        f.instance(serving(&w, "web-1", "a"));
        assert!(f.cache.pending().is_empty());
        assert_eq!(f.cache.allocated("a").instances, 1);
        assert_eq!(f.cache.placed("workloads/default/web", "a"), 1);
        let mut ended = serving(&w, "web-1", "a");
        ended.status.as_mut().unwrap().phase = shoal_api::resources::instance::Phase::Succeeded;
        f.instance(ended);
        assert_eq!(f.cache.allocated("a"), Allocated::default(), "an ended instance takes no room");
        assert_eq!(f.cache.instances_on("a").count(), 1, "but is still bound there");
        f.remove_instance("web-1");
        assert_eq!(f.cache.instances_on("a").count(), 0);
        assert_eq!(f.cache.instances_of("workloads/default/web").count(), 0);
    }
}
