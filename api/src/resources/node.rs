//! Node: a worker machine that runs instances.

use serde::{Deserialize, Serialize};

use crate::meta::{Kind, Object, Resource};
use crate::quantity::{Cpu, Memory};
use crate::resources::Condition;

/// Marker for the Node kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeKind;

/// A Node object.
pub type Node = Object<NodeKind>;

impl Resource for NodeKind {
    const KIND: Kind = Kind::Node;
    type Spec = NodeSpec;
    type Status = NodeStatus;

    fn validate(object: &Node) -> Result<(), crate::meta::FieldError> {
        if object.spec.draining && !object.spec.unschedulable {
            let why = "a draining node is also unschedulable (else what leaves could come back)";
            return Err(crate::meta::FieldError::new("spec.draining", why));
        }
        Ok(())
    }
}

/// What is declared about a node (by its agent at registration, or by an operator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// Where its proxy listens, `host:port`.
    #[serde(default)]
    pub address: String,
    /// Where its agent API listens (HTTPS, called by the control plane only), `host:port`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_address: String,
    /// When true, the scheduler binds nothing new to it.
    #[serde(default)]
    pub unschedulable: bool,
    /// When true (with `unschedulable`), its workloads' instances are moved off it as a
    /// rollout moves them: replacements elsewhere first, within each workload's `maxSurge`,
    /// and at most `maxUnavailable` of them not serving at any time (`shoal drain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// How much a node has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capacity {
    /// Memory for instances.
    #[serde(default)]
    pub memory: Memory,
    /// CPU for instances.
    #[serde(default)]
    pub cpu: Cpu,
    /// Instance slots.
    #[serde(default)]
    pub instances: u32,
}

/// What a node reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeStatus {
    /// Everything it has.
    #[serde(default)]
    pub capacity: Capacity,
    /// What is left for instances after the system's own needs.
    #[serde(default)]
    pub allocatable: Capacity,
    /// Ready, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::Condition>,
    /// When its agent last heartbeated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
}

impl NodeStatus {
    /// The `Ready` condition, if reported.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}
