//! The envelope every resource shares: `apiVersion`, `kind`, `metadata`, `spec`, `status`,
//! as in Kubernetes, so that habits carry over.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::Name;

/// The one API version Shoal speaks today.
pub const API_VERSION: &str = "shoal.dev/v1";

/// The `apiVersion` field: serializes as [`API_VERSION`] and accepts nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiVersion;

impl Serialize for ApiVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(API_VERSION)
    }
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::checked::deserialize_checked_str(d, "an apiVersion", |s| {
            if s == API_VERSION {
                Ok(ApiVersion)
            } else {
                Err(format!("unsupported apiVersion {s:?}, expected {API_VERSION:?}"))
            }
        })
    }
}

/// What a kind of resource is: its names, where it lives, and the types of its spec and status.
pub trait Resource: Sized + Send + Sync + 'static {
    /// The `kind` field, e.g. `Workload`.
    const KIND: Kind;
    /// What the user declares.
    type Spec: Serialize + DeserializeOwned + Default + Clone + fmt::Debug + PartialEq + Send + Sync;
    /// Written by the system, not by users.
    type Status: Serialize + DeserializeOwned + Default + Clone + fmt::Debug + PartialEq + Send + Sync;

    /// Checks that need more than one field at a time. Parsing has already checked each field.
    fn validate(_object: &Object<Self>) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A validation failure that names the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path to the field, e.g. `spec.rollout.maxSurge`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// Builds an error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into() }
    }
}

/// The kinds of resource Shoal knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A tenant's space for names and quota.
    Namespace,
    /// Desired state of a set of replicas (like a Deployment).
    Workload,
    /// One running copy of a workload (like a Pod).
    Instance,
    /// A stable name in front of ready instances.
    Service,
    /// A worker machine.
    Node,
    /// Something that happened to an object.
    Event,
    /// Values kept encrypted, for workloads to take (like Kubernetes' Secret).
    Secret,
    /// Values for workloads to take (like Kubernetes' ConfigMap).
    Config,
    /// A command run to completion (like Kubernetes' Job).
    Job,
    /// Jobs made on a schedule (like Kubernetes' CronJob).
    CronJob,
}

impl Kind {
    /// Every kind, in the order `apply` creates them (namespaces before what lives in them).
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Secret,
        Kind::Config,
        Kind::Service,
        Kind::Workload,
        Kind::Job,
        Kind::CronJob,
        Kind::Instance,
        Kind::Event,
    ];

    /// The `kind` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Workload => "Workload",
            Kind::Instance => "Instance",
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::Event => "Event",
            Kind::Secret => "Secret",
            Kind::Config => "Config",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    /// The lower-case plural used in API paths and on the command line.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Workload => "workloads",
            Kind::Instance => "instances",
            Kind::Service => "services",
            Kind::Node => "nodes",
            Kind::Event => "events",
            Kind::Secret => "secrets",
            Kind::Config => "configs",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
        }
    }

    /// Whether objects of this kind live inside a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Parses what a user may type: `Workload`, `workload`, `workloads`, or a short name.
    pub fn parse(input: &str) -> Option<Kind> {
        let lower = input.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            lower == k.as_str().to_ascii_lowercase() || lower == k.plural() || Some(lower.as_str()) == k.short()
        })
    }

    fn short(self) -> Option<&'static str> {
        match self {
            Kind::Namespace => Some("ns"),
            Kind::Workload => Some("wl"),
            Kind::Instance => Some("inst"),
            Kind::Service => Some("svc"),
            Kind::Node => Some("no"),
            Kind::Event => Some("ev"),
            Kind::Secret => None,
            Kind::Config => Some("cfg"),
            Kind::Job => None,
            Kind::CronJob => Some("cj"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `kind` field of an [`Object<R>`]: serializes as `R::KIND` and accepts nothing else.
pub struct KindTag<R>(PhantomData<fn() -> R>);

impl<R> KindTag<R> {
    /// The tag (there is only one value).
    pub const fn new() -> Self {
        KindTag(PhantomData)
    }
}
impl<R> Default for KindTag<R> {
    fn default() -> Self {
        Self::new()
    }
}
impl<R> Clone for KindTag<R> {
    fn clone(&self) -> Self {
        Self::new()
    }
}
impl<R> PartialEq for KindTag<R> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<R: Resource> fmt::Debug for KindTag<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(R::KIND.as_str())
    }
}
impl<R: Resource> Serialize for KindTag<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(R::KIND.as_str())
    }
}
impl<'de, R: Resource> Deserialize<'de> for KindTag<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::checked::deserialize_checked_str(d, "a kind", |s| {
            if s == R::KIND.as_str() {
                Ok(Self::new())
            } else {
                Err(format!("expected kind {:?}, found {s:?}", R::KIND.as_str()))
            }
        })
    }
}

/// A reference from a dependent to the object that owns it; deleting the owner deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerReference {
    /// Kind of the owner.
    pub kind: Kind,
    /// Name of the owner, in the dependent's namespace.
    pub name: Name,
    /// uid of the owner, so that a new object with the same name is not taken for the old one.
    pub uid: String,
}

/// Metadata of every object. Users set `name`, `namespace`, `labels` and `annotations`; the
/// control plane sets the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique among objects of this kind in this namespace; a DNS-1123 label.
    pub name: Name,
    /// Namespace of a namespaced object; `default` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Name>,
    /// Identifying key/value pairs, matched by label selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Non-identifying key/value pairs for tools and people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the control plane at creation; never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The store revision (raft log index) of the last write to this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
    /// Incremented by the control plane whenever `spec` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// When the object was created (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Objects this one belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// Metadata with just a name (and a namespace, for namespaced kinds).
    pub fn named(name: Name, namespace: Option<Name>) -> Self {
        ObjectMeta {
            name,
            namespace,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            uid: None,
            resource_version: None,
            generation: None,
            creation_timestamp: None,
            owner_references: Vec::new(),
        }
    }
}

/// One object of kind `R` in its envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", bound = "")]
pub struct Object<R: Resource> {
    /// Always `shoal.dev/v1`.
    pub api_version: ApiVersion,
    /// Always `R::KIND`.
    pub kind: KindTag<R>,
    /// Name, namespace, labels, and what the control plane records.
    pub metadata: ObjectMeta,
    /// What the user wants.
    #[serde(default)]
    pub spec: R::Spec,
    /// What the system observed; written by the control plane and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<R::Status>,
}

impl<R: Resource> Object<R> {
    /// A new object with the given name and spec.
    pub fn new(name: Name, namespace: Option<Name>, spec: R::Spec) -> Self {
        Object {
            api_version: ApiVersion,
            kind: KindTag::new(),
            metadata: ObjectMeta::named(name, namespace),
            spec,
            status: None,
        }
    }
}

/// Checks every label key and value: keys are `[prefix/]name`, values at most 63 characters of
/// letters, digits, `-`, `_` and `.`.
pub(crate) fn validate_labels(meta: &ObjectMeta) -> Result<(), FieldError> {
    let ok_part = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    for (key, value) in &meta.labels {
        let name =
            key.rsplit_once('/').map_or(key.as_str(), |(prefix, name)| if ok_part(prefix, 253) { name } else { "" });
        if !ok_part(name, 63) {
            return Err(FieldError::new(
                format!("metadata.labels.{key}"),
                "invalid label key: expected [prefix/]name, where name is 1-63 letters, digits, '-', '_' or '.'",
            ));
        }
        if !value.is_empty() && !ok_part(value, 63) {
            return Err(FieldError::new(
                format!("metadata.labels.{key}"),
                format!("invalid label value {value:?}: at most 63 letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    Ok(())
}
