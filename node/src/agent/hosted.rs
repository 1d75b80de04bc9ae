//! What the node keeps of each instance it runs, beside the instance's task: its output, and
//! what it uses (memory, CPU time, restarts), for the agent API's logs and the node's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shoal_api::resources::instance::Instance;
use shoal_api::resources::workload::WorkloadType;

use super::instance::route_key;
use crate::runtime::fair::CpuTime;
use crate::runtime::limits::MemoryPool;
use crate::runtime::log::LogBuffer;

/// One instance on this node.
#[derive(Clone)]
pub struct Hosted {
    /// Its name.
    pub name: String,
    /// Its `(namespace, workload)`.
    pub route: (String, String),
    /// Whether it is a command (which restarts; an HTTP instance never does).
    pub command: bool,
    /// What it writes to stdout and stderr.
    pub logs: LogBuffer,
    /// What it uses.
    pub usage: Arc<Usage>,
}

/// What one instance uses, as its sandboxes count it.
#[derive(Debug)]
pub struct Usage {
    /// The memory its stores hold (every request's, for an HTTP instance), under its limit.
    pub memory: Arc<MemoryPool>,
    /// The time its guests' turns took on the node's threads.
    pub cpu: Arc<CpuTime>,
    /// The requests it answered (an HTTP instance's).
    pub answered: Arc<AtomicU64>,
    restarts: AtomicU32,
}

impl Usage {
    /// Counts a restart.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }
}

impl Hosted {
    /// The record of `instance`, which writes into `logs`.
    pub fn new(instance: &Instance, logs: LogBuffer) -> Hosted {
        let limit = instance.spec.resources.memory.map_or(u64::MAX, |m| m.0);
        let usage = Usage {
            memory: MemoryPool::new(limit),
            cpu: Default::default(),
            answered: Default::default(),
            restarts: AtomicU32::new(0),
        };
        Hosted {
            name: instance.metadata.name.to_string(),
            route: route_key(instance),
            command: instance.spec.type_ == WorkloadType::Command,
            logs,
            usage: Arc::new(usage),
        }
    }
}
