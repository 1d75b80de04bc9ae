//! The controllers' view of the cluster: typed copies of the objects they reconcile, kept
//! current from the local state machine's change history (an informer, without the network:
//! the controllers live in the control node's own process).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::Node;
use shoal_api::resources::workload::Workload;
use shoal_api::{Kind, Object, Resource};

use crate::store::{ChangeKind, HistoryError, StoreReader};

/// How many changes one read of the history returns at most.
const BATCH: usize = 4096;

/// Objects by store key (`<plural>/<namespace>/<name>`).
pub type Objects<R> = BTreeMap<String, Object<R>>;

/// Typed copies of workloads, instances and nodes, as of `revision`.
#[derive(Default)]
pub struct Cache {
    /// Whether the first full read happened.
    loaded: bool,
    /// The store revision the cache reflects.
    pub revision: u64,
    /// Every workload.
    pub workloads: Objects<shoal_api::resources::workload::WorkloadKind>,
    /// Every instance.
    pub instances: Objects<shoal_api::resources::instance::InstanceKind>,
    /// Every node.
    pub nodes: Objects<shoal_api::resources::node::NodeKind>,
    /// Every service.
    pub services: Objects<shoal_api::resources::service::ServiceKind>,
}

fn prefix(kind: Kind) -> String {
    format!("{}/", kind.plural())
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

impl Cache {
    /// Catches up with the state machine: a full read the first time (or when the history the
    /// cache needs was compacted away), the changes since `revision` after that.
    pub fn sync(&mut self, reader: &StoreReader) -> Result<(), crate::store::types::StorageError> {
        if self.loaded {
            match self.follow(reader) {
                Ok(()) => return Ok(()),
                Err(HistoryError::Compacted { .. }) => tracing::info!("controllers: history compacted, re-reading"),
                Err(HistoryError::Storage(e)) => return Err(*e),
            }
        }
        self.reload(reader)
    }

    fn reload(&mut self, reader: &StoreReader) -> Result<(), crate::store::types::StorageError> {
        let mut revision = u64::MAX;
        let mut load = |kind: Kind| {
            let (rev, entries) = reader.entries(&prefix(kind))?;
            revision = revision.min(rev);
            Ok::<_, crate::store::types::StorageError>(entries)
        };
        let (workloads, instances, nodes) = (load(Kind::Workload)?, load(Kind::Instance)?, load(Kind::Node)?);
        let services = load(Kind::Service)?;
        self.services = services.iter().filter_map(|(k, v)| Some((k.clone(), parse(k, v)?))).collect();
        self.workloads = workloads.iter().filter_map(|(k, v)| Some((k.clone(), parse(k, v)?))).collect();
        self.instances = instances.iter().filter_map(|(k, v)| Some((k.clone(), parse(k, v)?))).collect();
        self.nodes = nodes.iter().filter_map(|(k, v)| Some((k.clone(), parse(k, v)?))).collect();
        // The three reads may have seen different revisions; replaying from the oldest is
        // harmless (every change carries the whole object) and misses nothing.
        self.revision = revision;
        self.loaded = true;
        match self.follow(reader) {
            Ok(()) => Ok(()),
            Err(HistoryError::Storage(e)) => Err(*e),
            Err(HistoryError::Compacted { .. }) => Ok(()),
        }
    }

    fn follow(&mut self, reader: &StoreReader) -> Result<(), HistoryError> {
        let (workloads, instances, nodes) = (prefix(Kind::Workload), prefix(Kind::Instance), prefix(Kind::Node));
        let services = prefix(Kind::Service);
        loop {
            let (changes, scanned_to) = reader.changes_after(self.revision, "", BATCH)?;
            for change in &changes {
                let deleted = change.kind == ChangeKind::Deleted;
                if change.key.starts_with(&workloads) {
                    apply(&mut self.workloads, &change.key, deleted, &change.object);
                } else if change.key.starts_with(&instances) {
                    apply(&mut self.instances, &change.key, deleted, &change.object);
                } else if change.key.starts_with(&nodes) {
                    apply(&mut self.nodes, &change.key, deleted, &change.object);
                } else if change.key.starts_with(&services) {
                    apply(&mut self.services, &change.key, deleted, &change.object);
                }
            }
            self.revision = self.revision.max(scanned_to);
            if changes.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// The workload an instance belongs to, if it still exists.
    pub fn owner(&self, instance: &Instance) -> Option<&Workload> {
        let ns = instance.metadata.namespace.as_ref()?;
        let workload = instance.spec.workload.as_ref()?;
        self.workloads.get(&format!("workloads/{ns}/{workload}"))
    }

    /// Whether an instance serves: Running and ready, on a node that is itself Ready.
    pub fn serving(&self, instance: &Instance) -> bool {
        instance.is_ready()
            && instance
                .spec
                .node
                .as_ref()
                .and_then(|n| self.node(n.as_str()))
                .is_some_and(|n| n.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True"))
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&format!("nodes//{name}"))
    }
}

fn apply<R: Resource>(objects: &mut Objects<R>, key: &str, deleted: bool, bytes: &[u8])
where
    Object<R>: DeserializeOwned,
{
    if deleted {
        objects.remove(key);
    } else if let Some(object) = parse(key, bytes) {
        objects.insert(key.to_owned(), object);
    }
}
