//! Service: a stable name in front of the ready instances of a workload.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{FieldError, Kind, Object, Resource};
use crate::name::Name;

/// Marker for the Service kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceKind;

/// A Service object.
pub type Service = Object<ServiceKind>;

impl Resource for ServiceKind {
    const KIND: Kind = Kind::Service;
    type Spec = ServiceSpec;
    type Status = ServiceStatus;

    fn validate(object: &Service) -> Result<(), FieldError> {
        let selector = &object.spec.selector;
        if selector.workload.is_none() && selector.labels.is_empty() {
            return Err(FieldError::new("spec.selector", "must name a workload or labels"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, port) in object.spec.ports.iter().enumerate() {
            if !seen.insert(port.name.as_str()) {
                return Err(FieldError::new(
                    format!("spec.ports[{i}].name"),
                    format!("duplicate port name {:?}", port.name.as_str()),
                ));
            }
            if port.port == 0 {
                return Err(FieldError::new(format!("spec.ports[{i}].port"), "must be 1-65535"));
            }
        }
        for (field, count) in [
            ("ingressHosts", object.spec.ingress_hosts.len()),
            ("allowFromNamespaces", object.spec.allow_from_namespaces.len()),
        ] {
            if count > MAX_LISTED {
                return Err(FieldError::new(
                    format!("spec.{field}"),
                    format!("{count} entries; the most is {MAX_LISTED}"),
                ));
            }
        }
        for (i, host) in object.spec.ingress_hosts.iter().enumerate() {
            if !is_host_name(host) {
                return Err(FieldError::new(
                    format!("spec.ingressHosts[{i}]"),
                    format!("{host:?} is not a host name (lower-case letters, digits, '-' and '.', no port)"),
                ));
            }
        }
        Ok(())
    }
}

/// The most entries in a Service's `ingressHosts` or `allowFromNamespaces` (and a Namespace's
/// `ingressHosts`): admission compares them with every other Service's.
pub const MAX_LISTED: usize = 100;

/// Whether `host` is a bare host name as an ingress matches it: lower-case labels of letters,
/// digits and `-`, separated by dots, at most 253 characters (an IPv4 address passes too).
pub fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Which instances back the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSelector {
    /// The instances of this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Name>,
    /// Or: instances whose workload has all of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (HTTP).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A named port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Name used in SRV records (`_<name>._<proto>.<svc>...`).
    pub name: Name,
    /// Port number clients use.
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// What a user declares about a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Which instances back it.
    #[serde(default)]
    pub selector: ServiceSelector,
    /// Its ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Extra `Host` names the ingress routes to it: each within what its namespace owns
    /// (`*.<namespace>.<ingress domain>`) or what its Namespace's `spec.ingressHosts` grants,
    /// and claimed by no other Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_hosts: Vec<String>,
    /// Whether the ingress also routes its cluster-internal name
    /// (`<name>.<namespace>.svc.<cluster domain>`) from outside; guests reach that name anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// Other namespaces whose guests may call it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from_namespaces: Vec<Name>,
}

/// One node that serves the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    /// Node name.
    pub node: Name,
    /// Address of the node's proxy.
    pub address: String,
    /// Port of the node's proxy.
    pub port: u16,
    /// Where other nodes' proxies reach it over mutually authenticated TLS (`host:port` of its
    /// agent API), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// What the endpoints controller observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Nodes with a ready instance.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}
