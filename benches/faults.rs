//! Faults beyond kill, the long runs (issue 17): for each fault, three fresh control members
//! on hosts of their own, the Jepsen-style load of `tests/faults/scenario.rs` (9 register
//! clients, 3 adders, 3 resuming watchers), the fault held for `SHOAL_FAULT_SECS` (60) with
//! 5 s healthy before and after, then every check over the whole history: operations checked,
//! linearizability violations, acknowledged creates lost, watch problems, writes a cut-off
//! member acknowledged, the majority's write success rate after its first success, and the
//! time from the heal until every member has applied a write made after it.
//!
//! `cargo bench --bench faults [leader-partitioned|minority-partitioned|flapping-partition|
//! packet-loss|leader-paused|packet-delay|membership-change-in-partition]` (release build; needs root, iproute2 and iptables).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/faults/history.rs"]
#[allow(dead_code)] // its unit tests' helpers, under clippy's cfg(test)
mod history;
#[path = "../tests/faults/scenario.rs"]
mod scenario;

use std::time::Duration;

use common::netns::Network;
use scenario::{Cluster, Fault, Timing};

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    if !Network::available() {
        return;
    }
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let secs = std::env::var("SHOAL_FAULT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let timing = Timing {
        healthy: Duration::from_secs(5),
        fault: Duration::from_secs(secs),
        op_timeout: Duration::from_secs(2),
        delay: (Duration::from_millis(20), Duration::from_millis(40)),
    };
    for fault in Fault::ALL {
        if !which.is_empty() && !which.iter().any(|w| w == fault.name()) {
            continue;
        }
        // Delayed round trips (40–120 ms) need a longer raft heartbeat than the default.
        let extra: &[&str] = if fault == Fault::Delay { &["--raft-heartbeat", "150ms"] } else { &[] };
        let cluster = Cluster::start(extra).await;
        let report = scenario::run(&cluster, &[fault], timing).await;
        println!("{} for {secs} s:\n{}", fault.name(), report.summary());
        report.assert_correct();
    }
}
