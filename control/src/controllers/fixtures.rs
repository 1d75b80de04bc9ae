//! Objects for the reconcilers' unit tests, and a cache filled through the same path the store
//! feeds (so its indexes are the real ones). No store, no clock but the one a test passes.

use serde_json::json;
use shoal_api::Name;
use shoal_api::resources::instance::{Instance, InstanceStatus, Phase, TEMPLATE_LABEL, WORKLOAD_LABEL};
use shoal_api::resources::namespace::Namespace;
use shoal_api::resources::node::Node;
use shoal_api::resources::service::Service;
use shoal_api::resources::workload::Workload;

use super::cache::Cache;
use super::queue::Task;
use super::workload::{template, template_hash};
use super::writes::{Action, Write};

/// A workload `name` in `default` with `replicas`, each requesting 64Mi and 100m.
pub fn workload(name: &str, replicas: u32) -> Workload {
    let mut w: Workload = serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": 1},
        "spec": {"module": "sha256:00", "replicas": replicas, "resources": {"memory": "64Mi", "cpu": "100m"}}
    }))
    .unwrap();
    w.metadata.generation = Some(1);
    w
}

/// A Ready node with `memory` MiB, `cpu` millicores and `slots` instance slots.
pub fn node(name: &str, memory_mib: u64, cpu: u64, slots: u32) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": 1},
        "spec": {"address": format!("10.0.0.{}:8080", name.len()), "agentAddress": "10.0.0.1:9000"},
        "status": {
            "capacity": {"memory": format!("{memory_mib}Mi"), "cpu": format!("{cpu}m"), "instances": slots},
            "allocatable": {"memory": format!("{memory_mib}Mi"), "cpu": format!("{cpu}m"), "instances": slots},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": ""}]
        }
    }))
    .unwrap()
}

/// `node` with its Ready condition set to `status`.
pub fn with_ready(mut node: Node, status: &str) -> Node {
    node.status.as_mut().unwrap().conditions[0].status = status.into();
    node
}

/// An instance `name` of `workload` made from its current spec, on `node` (or pending), in
/// `phase` and `ready`.
pub fn instance(workload: &Workload, name: &str, node: Option<&str>, phase: Phase, ready: bool) -> Instance {
    let spec = template(workload);
    let hash = template_hash(&spec, workload.spec.restarted_at.as_deref());
    let mut i: Instance = serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Instance",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": 2,
            "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", name.len()),
            "ownerReferences": [{"kind": "Workload", "name": workload.metadata.name.as_str(),
                "uid": workload.metadata.uid.clone().unwrap()}]},
        "spec": spec,
    }))
    .unwrap();
    i.metadata.labels.insert(WORKLOAD_LABEL.into(), workload.metadata.name.to_string());
    i.metadata.labels.insert(TEMPLATE_LABEL.into(), hash);
    i.spec.node = node.map(|n| Name::new(n).unwrap());
    if phase != Phase::Pending || ready {
        i.status = Some(InstanceStatus { phase, ready, ..Default::default() });
    }
    i
}

/// A Running, ready instance on `node`.
pub fn serving(workload: &Workload, name: &str, node: &str) -> Instance {
    instance(workload, name, Some(node), Phase::Running, true)
}

/// A Service `name` in `default` selecting workload `workload`.
pub fn service(name: &str, workload: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "shoal.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": 1},
        "spec": {"selector": {"workload": workload}, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap()
}

/// A cache holding these objects, and the tasks their arrival named.
#[derive(Default)]
pub struct Fixture {
    /// The cache.
    pub cache: Cache,
    /// Tasks named so far.
    pub tasks: Vec<Task>,
}

impl Fixture {
    /// Adds a workload.
    pub fn workload(&mut self, w: Workload) -> &mut Self {
        let key = format!("workloads/default/{}", w.metadata.name);
        self.cache.put_workload(&key, Some(w), &mut self.tasks);
        self
    }

    /// Adds (or replaces) an instance.
    pub fn instance(&mut self, i: Instance) -> &mut Self {
        let key = format!("instances/default/{}", i.metadata.name);
        self.cache.put_instance(&key, Some(i), &mut self.tasks);
        self
    }

    /// Removes an instance.
    pub fn remove_instance(&mut self, name: &str) -> &mut Self {
        self.cache.put_instance(&format!("instances/default/{name}"), None, &mut self.tasks);
        self
    }

    /// Adds (or replaces) a node.
    pub fn node(&mut self, n: Node) -> &mut Self {
        let key = format!("nodes//{}", n.metadata.name);
        self.cache.put_node(&key, Some(n), &mut self.tasks);
        self
    }

    /// Adds a service.
    pub fn service(&mut self, s: Service) -> &mut Self {
        let key = format!("services/default/{}", s.metadata.name);
        self.cache.put_service(&key, Some(s), &mut self.tasks);
        self
    }

    /// Adds (or replaces) a namespace.
    pub fn namespace(&mut self, n: Namespace) -> &mut Self {
        let key = format!("namespaces//{}", n.metadata.name);
        self.cache.put_namespace(&key, Some(n), &mut self.tasks);
        self
    }

    /// Adds (or replaces, or with `None` removes) the Secret `name`, as a version of its data.
    pub fn secret(&mut self, name: &str, version: Option<&str>) -> &mut Self {
        let key = format!("secrets/default/{name}");
        self.cache.put_values(&key, version.map(str::to_owned), &mut self.tasks);
        self
    }

    /// Takes the tasks named so far.
    pub fn take_tasks(&mut self) -> Vec<Task> {
        std::mem::take(&mut self.tasks)
    }
}

/// The keys an action deletes, sorted.
pub fn deleted(action: &Action) -> Vec<String> {
    let mut keys: Vec<String> = action
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::Delete(key, _) => Some(key.0.clone()),
            _ => None,
        })
        .collect();
    keys.sort();
    keys
}

/// How many instances an action creates.
pub fn created(action: &Action) -> usize {
    action.writes.iter().filter(|w| matches!(w, Write::Create(_))).count()
}
