//! shoal-api: the language Shoal's parts speak to each other and to users.
//!
//! # Layout
//! - [`meta`]: the Kubernetes-style envelope (`apiVersion`, `kind`, `metadata`, `spec`, `status`)
//!   and the [`Resource`](meta::Resource) trait every kind implements.
//! - [`resources`]: the kinds themselves, one per file: Namespace, Workload, Instance, Service,
//!   Node, Event.
//! - [`object`]: [`AnyObject`](object::AnyObject), one object of any kind.
//! - [`name`], [`quantity`], [`selector`], [`digest`]: the value types fields are made of,
//!   each checked as it is parsed.
//! - [`manifest`]: YAML files and directories in, objects out; errors name file, line, column
//!   and field path.
//! - [`status`]: error bodies, lists and watch events on the wire.
//! - [`token`]: tenant tokens, limited to some namespaces.
//! - [`client`], [`config`]: the typed HTTP client and the config file that tells it where the
//!   cluster is.
//! - [`agent`]: what the control plane and node agents say to each other besides objects.
//! - [`identity`]: who a certificate of the node CA names: a node, or the control plane.
//! - [`serve`]: serving an axum router over TLS (the API server, raft, the node agent's API).
//! - [`batching`]: taking queued work in batches (raft writes, read-index rounds, forwarded
//!   beats, a node's instance reports).

pub mod agent;
pub mod batching;
mod checked;
pub mod client;
pub mod config;
pub mod digest;
pub mod duration;
pub mod exposition;
pub mod identity;
pub mod manifest;
pub mod members;
pub mod meta;
pub mod module;
pub mod name;
pub mod object;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod serve;
pub mod status;
pub mod token;

pub use client::{Client, ClientError};
pub use config::ClientConfig;
pub use meta::{Kind, Object, ObjectMeta, Resource};
pub use name::Name;
pub use object::AnyObject;
pub use status::{EventType, List, Reason, Status, WatchEvent, Watched};
