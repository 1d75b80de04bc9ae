//! shoal-node: a worker node of Shoal.
//!
//! # Layout
//! - [`runtime`]: wasmtime, WASI and wasi-http: running command guests and serving HTTP guests
//!   in sandboxes with memory, CPU and time limits.
//! - [`serve`]: an HTTP listener that hands requests to an HTTP guest (`shoal run --listen`).

pub mod runtime;
pub mod serve;
