//! Paths of the guest workloads in `examples/guests`, built to wasm by this crate's `build.rs`.
//! Tests and benchmarks depend on this crate; nothing prebuilt is checked in.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
