//! The resource kinds, one per file: what a user declares (`spec`) and what the system reports
//! (`status`).

pub mod config;
pub mod cronjob;
pub mod event;
pub mod instance;
pub mod job;
pub mod namespace;
pub mod node;
pub mod secret;
pub mod service;
pub mod workload;

use serde::{Deserialize, Serialize};

/// A condition on an object's status, e.g. `Ready=True` on a Node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word on why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}
