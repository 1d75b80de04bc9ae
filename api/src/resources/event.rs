//! Event: something that happened to an object, for `describe` and for people debugging.

use serde::{Deserialize, Serialize};

use crate::meta::{Kind, Object, Resource};
use crate::name::Name;

/// Marker for the Event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKind;

/// An Event object.
pub type Event = Object<EventKind>;

impl Resource for EventKind {
    const KIND: Kind = Kind::Event;
    type Spec = EventSpec;
    type Status = ();
}

/// Points at the object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectReference {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Name>,
    /// Its name.
    pub name: Name,
}

/// Whether an event is routine or a problem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Routine.
    #[default]
    Normal,
    /// Something is wrong.
    Warning,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSpec {
    /// The object it happened to.
    pub involved_object: ObjectReference,
    /// One CamelCase word, e.g. `FailedScheduling`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// Normal or Warning.
    #[serde(default, rename = "type")]
    pub type_: EventType,
    /// How many times it happened (repeats are folded into one event).
    #[serde(default = "one")]
    pub count: u32,
    /// When it last happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
}

/// The name of the event about `object` for `reason`: one event per object and reason, so that
/// repeats fold into its count. (`<object>-<hash>`, a valid name whatever the object's length.)
pub fn event_name(object: &str, reason: &str) -> Name {
    let digest = crate::digest::sha256_hex(format!("{object}/{reason}").as_bytes());
    let stem = object.get(..object.len().min(54)).unwrap_or("event").trim_end_matches('-');
    Name::new(format!("{stem}-{}", &digest[..8])).expect("a name stem and hex digits make a name")
}

/// A new event about `object` (its first occurrence).
pub fn new_event(object: ObjectReference, reason: &str, message: String, type_: EventType, now: String) -> Event {
    let namespace = Some(object.namespace.clone().unwrap_or_else(|| Name::new("default").expect("a name")));
    let name = event_name(object.name.as_str(), reason);
    let spec = EventSpec {
        involved_object: object,
        reason: reason.to_owned(),
        message,
        type_,
        count: 1,
        last_timestamp: Some(now),
    };
    Object::new(name, namespace, spec)
}

fn one() -> u32 {
    1
}

impl Default for EventSpec {
    fn default() -> Self {
        EventSpec {
            involved_object: ObjectReference {
                kind: Kind::Namespace,
                namespace: None,
                name: Name::new("unknown").expect("valid"),
            },
            reason: String::new(),
            message: String::new(),
            type_: EventType::Normal,
            count: 1,
            last_timestamp: None,
        }
    }
}
