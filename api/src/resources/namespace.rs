//! Namespace: a tenant's space for names, with an optional quota.

use serde::{Deserialize, Serialize};

use crate::meta::{Kind, Object, Resource};
use crate::quantity::{Cpu, Memory};
use crate::resources::workload::Resources;

/// Marker for the Namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceKind;

/// A Namespace object.
pub type Namespace = Object<NamespaceKind>;

impl Resource for NamespaceKind {
    const KIND: Kind = Kind::Namespace;
    type Spec = NamespaceSpec;
    type Status = NamespaceStatus;

    fn validate(object: &Namespace) -> Result<(), crate::meta::FieldError> {
        let defaults = object.spec.default_requests.as_ref();
        if defaults.and_then(|d| d.memory).is_some_and(|m| m.0 < 64 * 1024) {
            return Err(crate::meta::FieldError::new(
                "spec.defaultRequests.memory",
                "must be at least 64Ki (one wasm page)",
            ));
        }
        Ok(())
    }
}

/// What a namespace may use in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Upper bounds on what the namespace's instances may request; absent means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Requests given to a Workload of this namespace that sets none (like Kubernetes'
    /// LimitRange defaults), applied when the Workload is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_requests: Option<Resources>,
}

/// Limits on the sum of requests in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quota {
    /// Total memory of all instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Total CPU of all instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Number of instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
}

/// What the namespace uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// Sum of the requests of its instances.
    #[serde(default)]
    pub usage: Quota,
}
