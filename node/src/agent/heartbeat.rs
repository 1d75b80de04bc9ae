//! Registering this node and keeping its lease: the Node object is written once at start (its
//! address and labels; an operator's `unschedulable` is kept), and its status every heartbeat
//! (capacity, `Ready=True`, the time). The control plane's node lifecycle controller marks the
//! node NotReady when the heartbeats stop.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_api::resources::Condition;
use shoal_api::resources::node::{Capacity, Node, NodeKind, NodeSpec, NodeStatus};
use shoal_api::{AnyObject, Client, ClientError, Kind, Name, Object, Reason};
use tokio_util::sync::CancellationToken;

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

/// Heartbeats every `interval` until `shutdown`.
pub async fn run(client: Client, name: Name, capacity: Capacity, interval: Duration, shutdown: CancellationToken) {
    let mut node: Node = Object::new(name, None, NodeSpec::default());
    loop {
        node.status = Some(status(&capacity));
        if let Err(e) = client.put_status_of::<NodeKind>(&node).await {
            tracing::warn!("heartbeat failed: {e}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
