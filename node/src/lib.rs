//! shoal-node: a worker node of Shoal.
//!
//! # Layout
//! - [`agent`]: the node agent: registration, heartbeats, converging on the instances bound to
//!   this node, the ingress.
//! - [`runtime`]: wasmtime, WASI and wasi-http: running command guests and serving HTTP guests
//!   in sandboxes with memory, CPU and time limits.
//! - [`serve`]: the HTTP accept loop behind the ingress and `shoal run --listen`.

pub mod agent;
pub mod runtime;
pub mod serve;
