//! Registering this node and keeping it alive: the Node object is written once at start (its
//! address and labels; an operator's `unschedulable` is kept), its status once after that
//! (capacity, `Ready=True`, the time), and then a heartbeat every `--heartbeat` to the leader,
//! which keeps it in memory. The control plane's node lifecycle controller marks the node
//! NotReady when the heartbeats stop, and Ready again when they resume. Each beat carries the
//! load of the autoscaled workloads the node serves; each answer names the revoked nodes,
//! whose certificates the proxy then refuses, and may carry a fencing lease ([`Fence`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::resources::Condition;
use shoal_api::resources::node::{Capacity, Node, NodeKind, NodeSpec, NodeStatus};
use shoal_api::{AnyObject, Client, ClientError, Kind, Name, Object, Reason};
use tokio_util::sync::CancellationToken;

use super::fence::Fence;
use crate::proxy::Proxy;

/// The shortest time between two beats (when a singleton waits for a lease).
const EARLIEST: Duration = Duration::from_millis(100);

/// Creates or updates the Node object.
pub async fn register(
    client: &Client,
    name: &Name,
    address: &str,
    agent_address: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ClientError> {
    let existing = match client.get(Kind::Node, None, name.as_str()).await {
        Ok(AnyObject::Node(node)) => Some(node),
        Ok(_) => None,
        Err(e) if e.reason() == Some(Reason::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut node: Node = existing.unwrap_or_else(|| Object::new(name.clone(), None, NodeSpec::default()));
    node.spec.address = address.to_owned();
    node.spec.agent_address = agent_address.to_owned();
    node.metadata.labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    client.put_of::<NodeKind>(&node).await?;
    Ok(())
}

fn status(capacity: &Capacity) -> NodeStatus {
    NodeStatus {
        capacity: capacity.clone(),
        allocatable: capacity.clone(),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "AgentReady".into(),
            message: "the node agent is heartbeating".into(),
            last_transition_time: None,
        }],
        last_heartbeat: Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
    }
}

/// Beats, writes the Node's status (capacity, `Ready=True`) once, then beats every `interval` until
/// `shutdown`. A beat is no raft write: the leader holds it in memory, and the node lifecycle
/// controller writes the Node only when its readiness changes. With a `proxy` and a `fence` (a
/// real node, not a hollow one), each beat reports its load and each answer updates its
/// revocations and renews its lease.
pub async fn run(
    client: Client,
    name: Name,
    capacity: Capacity,
    interval: Duration,
    real: Option<(Arc<Proxy>, Arc<Fence>)>,
    shutdown: CancellationToken,
) {
    let (proxy, fence) = real.unzip();
    let mut node: Node = Object::new(name.clone(), None, NodeSpec::default());
    node.status = Some(status(&capacity));
    let mut status_written = false;
    // The tag of the revocations last received: while they are unchanged none are sent.
    let mut known_revocations = 0;
    loop {
        // The beat first: a node back after an absence must not show itself Ready to a leader
        // whose last beat of it is stale.
        let beat = proxy.as_ref().map(|p| p.load_report()).unwrap_or_default();
        let sent = std::time::Instant::now();
        match client.heartbeat(name.as_str(), known_revocations, &beat).await {
            Ok(answer) => {
                if let (Some(fence), Some(lease)) = (&fence, &answer.lease) {
                    fence.renew(sent, lease);
                }
                if let Some(revoked) = &answer.revoked {
                    if let Some(proxy) = &proxy {
                        proxy.revocations.replace(revoked);
                    }
                    known_revocations = answer.revocations_tag;
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
        if !status_written {
            match client.put_status_of::<NodeKind>(&node).await {
                Ok(_) => status_written = true,
                Err(e) => tracing::warn!("writing the node's status failed: {e}"),
            }
        }
        let early = async {
            match &fence {
                Some(fence) => fence.wanted().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until((sent + interval).into()) => {}
            // A singleton waits for a lease: beat soon, but never more often than EARLIEST.
            _ = early => tokio::time::sleep_until((sent + interval.min(EARLIEST)).into()).await,
        }
    }
}
