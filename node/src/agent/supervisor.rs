//! Converging on the instances bound to this node: start what is not running, stop what is
//! gone, as [`follow`] lists and watches them. Instances keep running while the control plane
//! is unreachable.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_api::EventType;
use shoal_api::resources::instance::{Instance, InstanceKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hosted::Hosted;
use super::{Shared, instance};
use crate::follow;
use crate::runtime::log::LogBuffer;

/// How much of each instance's output the node keeps.
pub const LOG_BYTES: usize = 256 * 1024;

struct Running {
    uid: Option<String>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn key(instance: &Instance) -> String {
    format!("{}/{}", instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()), instance.metadata.name)
}

struct Supervisor {
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
    shutdown: CancellationToken,
}

impl Supervisor {
    fn bound_here(&self, instance: &Instance) -> bool {
        instance.spec.node.as_ref().is_some_and(|n| n.as_str() == self.shared.name.as_str())
    }

    fn start(&mut self, instance: Instance) {
        let key = key(&instance);
        if let Some(running) = self.running.get(&key) {
            if running.uid == instance.metadata.uid {
                return;
            }
            self.stop(&key);
        }
        tracing::debug!("starting instance {key}");
        let hosted = Hosted::new(&instance, LogBuffer::new(LOG_BYTES));
        self.shared.hosted.lock().expect("hosted lock").insert(key.clone(), hosted.clone());
        let cancel = self.shutdown.child_token();
        let uid = instance.metadata.uid.clone();
        let task = tokio::spawn(instance::run(self.shared.clone(), instance, hosted, cancel.clone()));
        self.running.insert(key, Running { uid, cancel, task });
    }

    fn stop(&mut self, key: &str) {
        if let Some(running) = self.running.remove(key) {
            tracing::info!("stopping instance {key}");
            running.cancel.cancel();
            drop(running.task);
            self.shared.hosted.lock().expect("hosted lock").remove(key);
        }
    }

    /// Makes the running set exactly `instances`.
    fn converge(&mut self, instances: Vec<Instance>) {
        let wanted: HashMap<String, Instance> =
            instances.into_iter().filter(|i| self.bound_here(i)).map(|i| (key(&i), i)).collect();
        let gone: Vec<String> = self.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            self.stop(&key);
        }
        for (_, instance) in wanted {
            self.start(instance);
        }
    }
}

impl follow::Follower<InstanceKind> for Supervisor {
    fn replace(&mut self, instances: Vec<Instance>) {
        self.converge(instances);
    }

    fn change(&mut self, kind: EventType, instance: Instance) {
        match kind {
            EventType::Deleted => self.stop(&key(&instance)),
            EventType::Added | EventType::Modified if self.bound_here(&instance) => self.start(instance),
            EventType::Added | EventType::Modified => self.stop(&key(&instance)),
        }
    }

    fn lost(&mut self, error: &shoal_api::ClientError) {
        tracing::warn!("watching instances: {error}; keeping {} running", self.running.len());
    }
}

/// Runs the supervisor until `shutdown`; then stops every instance.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let client = shared.client.clone();
    let mut supervisor = Supervisor { shared, running: HashMap::new(), shutdown: shutdown.clone() };
    follow::follow::<InstanceKind, _>(&client, &mut supervisor, &shutdown).await;
    let keys: Vec<String> = supervisor.running.keys().cloned().collect();
    for key in keys {
        supervisor.stop(&key);
    }
}
