//! Converging on the instances bound to this node: start what is not running, stop what is
//! gone, as [`follow`] lists and watches them. Instances keep running while the control plane
//! is unreachable — except singleton instances, which run only while the node's fencing lease
//! ([`super::fence`]) holds and names them: they are stopped when it runs out or stops naming
//! them, and started again when a lease names them and they are still bound here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_api::EventType;
use shoal_api::resources::event::EventType as EventSeverity;
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
    /// A singleton's instance, kept to start it again when a lapsed lease comes back.
    singleton: Option<Instance>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn key(instance: &Instance) -> String {
    format!("{}/{}", instance.metadata.namespace.as_ref().map_or("default", |n| n.as_str()), instance.metadata.name)
}

struct Supervisor {
    shared: Arc<Shared>,
    running: HashMap<String, Running>,
    /// Singleton instances bound here that wait for the fencing lease.
    held: HashMap<String, Instance>,
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
        if instance.spec.singleton && !self.shared.fence.may_run(instance.metadata.uid.as_deref(), Instant::now()) {
            tracing::info!("instance {key} is a singleton; it waits for a fencing lease that names it");
            self.held.insert(key, instance);
            self.shared.fence.want();
            return;
        }
        self.held.remove(&key);
        let singleton = instance.spec.singleton.then(|| instance.clone());
        tracing::debug!("starting instance {key}");
        let hosted = Hosted::new(&instance, LogBuffer::new(LOG_BYTES));
        self.shared.hosted.lock().expect("hosted lock").insert(key.clone(), hosted.clone());
        let cancel = self.shutdown.child_token();
        let uid = instance.metadata.uid.clone();
        let task = tokio::spawn(instance::run(self.shared.clone(), instance, hosted, cancel.clone()));
        self.running.insert(key, Running { uid, singleton, cancel, task });
    }

    /// Stops what runs at `key`; returns it if it was a singleton.
    fn stop(&mut self, key: &str) -> Option<Instance> {
        self.held.remove(key);
        let running = self.running.remove(key)?;
        tracing::info!("stopping instance {key}");
        running.cancel.cancel();
        drop(running.task);
        self.shared.hosted.lock().expect("hosted lock").remove(key);
        running.singleton
    }

    /// The fencing lease changed: singletons it no longer lets run stop (and wait), those
    /// waiting that it lets run start.
    fn refence(&mut self) {
        let now = Instant::now();
        let fence = self.shared.fence.clone();
        let stopping: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.singleton.is_some() && !fence.may_run(r.uid.as_deref(), now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stopping {
            if let Some(instance) = self.stop(&key) {
                tracing::warn!("stopping singleton instance {key}: the node's fencing lease no longer covers it");
                let message = "the node's fencing lease ran out or no longer names it (the control plane is \
                               out of reach, or bound it elsewhere); stopped until a lease names it again"
                    .to_owned();
                self.shared.events.record(&instance, "FenceLapsed", message, EventSeverity::Warning);
                self.held.insert(key, instance);
            }
        }
        let starting: Vec<String> = self
            .held
            .iter()
            .filter(|(_, i)| fence.may_run(i.metadata.uid.as_deref(), now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in starting {
            if let Some(instance) = self.held.remove(&key) {
                self.start(instance);
            }
        }
    }

    /// Makes the running set exactly `instances`.
    fn converge(&mut self, instances: Vec<Instance>) {
        let wanted: HashMap<String, Instance> =
            instances.into_iter().filter(|i| self.bound_here(i)).map(|i| (key(&i), i)).collect();
        self.held.retain(|k, _| wanted.contains_key(k));
        let gone: Vec<String> = self.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            self.stop(&key);
        }
        for (_, instance) in wanted {
            self.start(instance);
        }
    }
}

/// The supervisor, shared by the watch and the fence's keeper.
struct Watched(Arc<Mutex<Supervisor>>);

impl Watched {
    fn lock(&self) -> std::sync::MutexGuard<'_, Supervisor> {
        self.0.lock().expect("supervisor lock")
    }
}

impl follow::Follower<InstanceKind> for Watched {
    fn replace(&mut self, instances: Vec<Instance>) {
        self.lock().converge(instances);
    }

    fn change(&mut self, kind: EventType, instance: Instance) {
        let mut supervisor = self.lock();
        match kind {
            EventType::Deleted => drop(supervisor.stop(&key(&instance))),
            EventType::Added | EventType::Modified if supervisor.bound_here(&instance) => supervisor.start(instance),
            EventType::Added | EventType::Modified => drop(supervisor.stop(&key(&instance))),
        }
    }

    fn lost(&mut self, error: &shoal_api::ClientError) {
        tracing::warn!("watching instances: {error}; keeping {} running", self.lock().running.len());
    }
}

/// Stops the singletons when the fencing lease runs out or lets them go, and starts those it
/// names when it is renewed.
async fn keep_fence(supervisor: Arc<Mutex<Supervisor>>, fence: Arc<super::fence::Fence>, shutdown: CancellationToken) {
    let mut grants = fence.subscribe();
    loop {
        let now = Instant::now();
        let until = grants.borrow_and_update().until.filter(|u| *u > now);
        supervisor.lock().expect("supervisor lock").refence();
        let end = until.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = grants.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(end.unwrap_or_else(tokio::time::Instant::now)), if end.is_some() => {}
        }
    }
}

/// Runs the supervisor until `shutdown`; then stops every instance.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let client = shared.client.clone();
    let fence = shared.fence.clone();
    let supervisor = Supervisor { shared, running: HashMap::new(), held: HashMap::new(), shutdown: shutdown.clone() };
    let supervisor = Arc::new(Mutex::new(supervisor));
    let keeper = tokio::spawn(keep_fence(supervisor.clone(), fence, shutdown.clone()));
    follow::follow::<InstanceKind, _>(&client, &mut Watched(supervisor.clone()), &shutdown).await;
    let _ = keeper.await;
    let mut supervisor = supervisor.lock().expect("supervisor lock");
    let keys: Vec<String> = supervisor.running.keys().cloned().collect();
    for key in keys {
        supervisor.stop(&key);
    }
}
