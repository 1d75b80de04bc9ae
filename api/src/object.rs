//! [`AnyObject`]: one object of any kind, for code that handles every kind alike (manifests,
//! the API server, `shoal get`).

use serde::Serialize;

use crate::meta::{FieldError, Kind, Object, ObjectMeta, Resource, validate_labels};
use crate::resources::config::{Config, ConfigKind};
use crate::resources::cronjob::{CronJob, CronJobKind};
use crate::resources::event::{Event, EventKind};
use crate::resources::instance::{Instance, InstanceKind};
use crate::resources::job::{Job, JobKind};
use crate::resources::namespace::{Namespace, NamespaceKind};
use crate::resources::node::{Node, NodeKind};
use crate::resources::secret::{Secret, SecretKind};
use crate::resources::service::{Service, ServiceKind};
use crate::resources::workload::{Workload, WorkloadKind};

/// One object of any kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum AnyObject {
    Namespace(Namespace),
    Workload(Workload),
    Instance(Instance),
    Service(Service),
    Node(Node),
    Event(Event),
    Secret(Secret),
    Config(Config),
    Job(Job),
    CronJob(CronJob),
}

/// Runs `$body` with `$o` bound to the typed object inside an [`AnyObject`], and `$R` to its
/// kind marker.
macro_rules! each_kind {
    ($any:expr, |$o:ident, $R:ident| $body:expr) => {
        match $any {
            AnyObject::Namespace($o) => {
                type $R = NamespaceKind;
                $body
            }
            AnyObject::Workload($o) => {
                type $R = WorkloadKind;
                $body
            }
            AnyObject::Instance($o) => {
                type $R = InstanceKind;
                $body
            }
            AnyObject::Service($o) => {
                type $R = ServiceKind;
                $body
            }
            AnyObject::Node($o) => {
                type $R = NodeKind;
                $body
            }
            AnyObject::Event($o) => {
                type $R = EventKind;
                $body
            }
            AnyObject::Secret($o) => {
                type $R = SecretKind;
                $body
            }
            AnyObject::Config($o) => {
                type $R = ConfigKind;
                $body
            }
            AnyObject::Job($o) => {
                type $R = JobKind;
                $body
            }
            AnyObject::CronJob($o) => {
                type $R = CronJobKind;
                $body
            }
        }
    };
}

/// Deserializes an object of `kind` from `de`, reporting the path of the field that failed.
pub fn deserialize_kind<'de, D>(kind: Kind, de: D) -> Result<AnyObject, serde_path_to_error::Error<D::Error>>
where
    D: serde::Deserializer<'de>,
{
    Ok(match kind {
        Kind::Namespace => AnyObject::Namespace(serde_path_to_error::deserialize(de)?),
        Kind::Workload => AnyObject::Workload(serde_path_to_error::deserialize(de)?),
        Kind::Instance => AnyObject::Instance(serde_path_to_error::deserialize(de)?),
        Kind::Service => AnyObject::Service(serde_path_to_error::deserialize(de)?),
        Kind::Node => AnyObject::Node(serde_path_to_error::deserialize(de)?),
        Kind::Event => AnyObject::Event(serde_path_to_error::deserialize(de)?),
        Kind::Secret => AnyObject::Secret(serde_path_to_error::deserialize(de)?),
        Kind::Config => AnyObject::Config(serde_path_to_error::deserialize(de)?),
        Kind::Job => AnyObject::Job(serde_path_to_error::deserialize(de)?),
        Kind::CronJob => AnyObject::CronJob(serde_path_to_error::deserialize(de)?),
    })
}

fn validate_typed<R: Resource>(object: &Object<R>) -> Result<(), FieldError> {
    validate_labels(&object.metadata)?;
    if R::KIND.namespaced() {
        // Leaving the namespace out means `default`; nothing to check beyond the name itself.
    } else if object.metadata.namespace.is_some() {
        return Err(FieldError::new("metadata.namespace", format!("{} is not namespaced", R::KIND)));
    }
    R::validate(object)
}

impl AnyObject {
    /// Drops its status: what a write of its spec by anyone but the admin may not set (the
    /// controllers and nodes write statuses, through the status path).
    pub fn clear_status(&mut self) {
        each_kind!(self, |o, _R| {
            o.status = None;
        })
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        each_kind!(self, |_o, R| R::KIND)
    }

    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, |o, _R| &o.metadata)
    }

    /// Its metadata, to change.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, |o, _R| &mut o.metadata)
    }

    /// Checks what parsing alone cannot: labels, namespacing, and each kind's own rules.
    pub fn validate(&self) -> Result<(), FieldError> {
        each_kind!(self, |o, _R| validate_typed(o))
    }

    /// The namespace it lives in: its own, or `default` for namespaced kinds that leave it out.
    pub fn namespace(&self) -> Option<&str> {
        if self.kind().namespaced() {
            Some(self.meta().namespace.as_ref().map_or("default", |n| n.as_str()))
        } else {
            None
        }
    }

    /// `Kind/name` or `Kind/namespace/name`, for messages.
    pub fn display_name(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{ns}/{}", self.kind().plural(), self.meta().name),
            None => format!("{}/{}", self.kind().plural(), self.meta().name),
        }
    }

    /// Parses a JSON value of a known kind.
    pub fn from_json(kind: Kind, value: &serde_json::Value) -> Result<AnyObject, FieldError> {
        deserialize_kind(kind, value).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())
        })
    }

    /// Parses JSON text of a known kind in one pass: `Err(None)` when it is not JSON at all,
    /// `Err(Some(_))` naming the field when it is JSON but not such an object.
    pub fn from_json_slice(kind: Kind, bytes: &[u8]) -> Result<AnyObject, Option<FieldError>> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let object = deserialize_kind(kind, &mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            inner.is_data().then(|| FieldError::new(if path == "." { String::new() } else { path }, inner.to_string()))
        })?;
        // Trailing text after the object is not JSON either.
        de.end().map_err(|_| None)?;
        Ok(object)
    }

    /// Serializes to a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("objects always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_parses_in_one_pass_and_says_what_is_wrong() {
        let ok = br#"{"apiVersion":"shoal.dev/v1","kind":"Namespace","metadata":{"name":"alpha"},"spec":{}}"#;
        assert_eq!(AnyObject::from_json_slice(Kind::Namespace, ok).unwrap().meta().name.as_str(), "alpha");
        assert!(AnyObject::from_json_slice(Kind::Namespace, b"{not json").unwrap_err().is_none());
        let trailing = [ok.as_slice(), b" {}"].concat();
        assert!(AnyObject::from_json_slice(Kind::Namespace, &trailing).unwrap_err().is_none());
        let wrong = br#"{"apiVersion":"shoal.dev/v1","kind":"Namespace","metadata":{"name":7},"spec":{}}"#;
        let field = AnyObject::from_json_slice(Kind::Namespace, wrong).unwrap_err().expect("a field error");
        assert!(field.to_string().contains("metadata.name"), "{field}");
    }
}
