//! shoal-node: a worker node of Shoal.
//!
//! # Layout
//! - [`agent`]: the node agent: registration, heartbeats, converging on the instances bound to
//!   this node, the ingress.
//! - [`runtime`]: wasmtime, WASI and wasi-http: running command guests and serving HTTP guests
//!   in sandboxes with memory, CPU and time limits.
//! - [`proxy`]: the service proxy: the ingress, Services served here or on other nodes, guests'
//!   calls to them, and the fences between tenants on those paths.
//! - [`follow`]: list + watch of one kind, resumed after the control plane comes back.
//! - [`serve`]: the HTTP accept loop behind the ingress and `shoal run --listen`.
//! - [`hollow`]: hollow nodes, for scale tests and benchmarks of the control plane: many nodes
//!   in one process, running the agent's own code paths against the real API, the runtime
//!   replaced (instances are reported Running; nothing runs).

pub mod agent;
pub mod follow;
pub mod hollow;
pub mod proxy;
pub mod runtime;
pub mod serve;
