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
        let listed = object.spec.ingress_hosts.len();
        if listed > crate::resources::service::MAX_LISTED {
            return Err(crate::meta::FieldError::new(
                "spec.ingressHosts",
                format!("{listed} entries; the most is {}", crate::resources::service::MAX_LISTED),
            ));
        }
        for (i, pattern) in object.spec.ingress_hosts.iter().enumerate() {
            let host = pattern.strip_prefix("*.").unwrap_or(pattern);
            if !crate::resources::service::is_host_name(host) {
                return Err(crate::meta::FieldError::new(
                    format!("spec.ingressHosts[{i}]"),
                    format!("{pattern:?} is not a host name or *.<domain>"),
                ));
            }
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
    /// Ingress hosts its Services may claim beyond `*.<namespace>.<ingress domain>`, which it
    /// always owns: exact names, or `*.<domain>` for any one label before `<domain>`. Set by
    /// the admin (tenants never write Namespaces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_hosts: Vec<String>,
    /// Whether its guests' `allowedOutboundHosts` may resolve to private addresses (10/8,
    /// 172.16/12, 192.168/16, 100.64/10, fc00::/7); loopback and link-local (the cloud
    /// metadata address) stay out of every guest's reach. Set by the admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_egress: bool,
}

/// Whether `pattern` (an exact host, or `*.<domain>` for one label before `<domain>`) matches
/// the bare host `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == host,
    }
}

/// Limits on the sum of requests in one namespace, and on its module storage.
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
    /// Total size of the modules uploaded to the namespace (each counted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_bytes: Option<Memory>,
}

/// What the namespace uses now, and whether it is going.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// Sum of the requests of its instances.
    #[serde(default)]
    pub usage: Quota,
    /// `Terminating` once it was deleted, until everything in it is gone; absent while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<NamespacePhase>,
}

/// A namespace's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespacePhase {
    /// Deleted: what is in it is being deleted, and nothing new may be made in it.
    Terminating,
}

impl NamespaceKind {
    /// Whether `namespace` was deleted and is emptying.
    pub fn is_terminating(namespace: &Namespace) -> bool {
        namespace.status.as_ref().and_then(|s| s.phase) == Some(NamespacePhase::Terminating)
    }
}

#[cfg(test)]
mod tests {
    use super::host_matches;

    #[test]
    fn a_wildcard_grants_one_label_and_an_exact_name_itself() {
        assert!(host_matches("*.shop.example.com", "www.shop.example.com"));
        assert!(!host_matches("*.shop.example.com", "a.b.shop.example.com"));
        assert!(!host_matches("*.shop.example.com", "shop.example.com"));
        assert!(!host_matches("*.shop.example.com", "evilshop.example.com"));
        assert!(host_matches("shop.localhost", "shop.localhost"));
        assert!(!host_matches("shop.localhost", "www.shop.localhost"));
    }
}
