//! Faults beyond kill: three control members on hosts of their own (network namespaces),
//! partitioned, paused and made to lose packets under a Jepsen-style load, and every history
//! checked for linearizability, lost writes and broken watch promises. Short runs here; the
//! 60-second runs per fault are `cargo bench --bench faults`.
//!
//! Needs root, iproute2 and iptables (`.ci/run` installs iptables); skips with the reason
//! elsewhere, and fails with `CI=true`.

mod common;
#[path = "faults/history.rs"]
mod history;
#[path = "faults/scenario.rs"]
mod scenario;

use std::time::Duration;

use common::netns::Network;
use scenario::{Cluster, Fault, Timing};

const SHORT: Timing =
    Timing { healthy: Duration::from_secs(2), fault: Duration::from_secs(4), op_timeout: Duration::from_secs(2) };

async fn survives(faults: &[Fault]) {
    if !Network::available() {
        return;
    }
    let cluster = Cluster::start(&[]).await;
    let report = scenario::run(&cluster, faults, SHORT).await;
    eprintln!("{}", report.summary());
    report.assert_correct();
    for f in &report.faults {
        let (served, all) = f.majority_writes;
        assert!(served > 0, "{}: the majority served no write: {}", f.fault.name(), report.summary());
        assert!(all > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_of_the_leader_a_follower_and_in_turn_lose_nothing_and_stay_linearizable() {
    survives(&[Fault::LeaderPartitioned, Fault::MinorityPartitioned, Fault::Flapping]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_and_lost_packets_lose_nothing_and_stay_linearizable() {
    survives(&[Fault::LeaderPaused, Fault::Loss]).await;
}
