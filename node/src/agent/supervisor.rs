//! Converging on the instances bound to this node: list them, start what is not running, stop
//! what is gone, then follow a watch; when the watch breaks (the control plane went away), list
//! again once it is back. Instances keep running meanwhile: an unreachable control plane is no
//! reason to stop serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_api::resources::instance::{Instance, InstanceKind};
use shoal_api::{EventType, Reason};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::instance;
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
        let logs = LogBuffer::new(LOG_BYTES);
        self.shared.logs.lock().expect("logs lock").insert(key.clone(), logs.clone());
        let cancel = self.shutdown.child_token();
        let uid = instance.metadata.uid.clone();
        let task = tokio::spawn(instance::run(self.shared.clone(), instance, logs, cancel.clone()));
        self.running.insert(key, Running { uid, cancel, task });
    }

    fn stop(&mut self, key: &str) {
        if let Some(running) = self.running.remove(key) {
            tracing::info!("stopping instance {key}");
            running.cancel.cancel();
            drop(running.task);
            self.shared.logs.lock().expect("logs lock").remove(key);
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

    /// Lists, converges, and follows the watch until it breaks; returns when it does.
    async fn sync_once(&mut self) -> Result<(), shoal_api::ClientError> {
        let list = self.shared.client.list_of::<InstanceKind>(None).await?;
        self.converge(list.items);
        let mut changes = Box::pin(self.shared.client.watch_of::<InstanceKind>(None, list.resource_version).await?);
        loop {
            let change = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                change = changes.next() => change,
            };
            let Some(change) = change else { return Ok(()) };
            let change = change?;
            match change.type_ {
                EventType::Deleted => self.stop(&key(&change.object)),
                EventType::Added | EventType::Modified if self.bound_here(&change.object) => self.start(change.object),
                EventType::Added | EventType::Modified => self.stop(&key(&change.object)),
            }
        }
    }
}

/// Runs the supervisor until `shutdown`; then stops every instance.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut supervisor = Supervisor { shared, running: HashMap::new(), shutdown: shutdown.clone() };
    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match supervisor.sync_once().await {
            Ok(()) => delay = Duration::from_millis(200),
            Err(e) if e.reason() == Some(Reason::Gone) => {}
            Err(e) => {
                tracing::warn!("watching instances: {e}; keeping {} running", supervisor.running.len());
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let keys: Vec<String> = supervisor.running.keys().cloned().collect();
    for key in keys {
        supervisor.stop(&key);
    }
}
