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

const SHORT: Timing = Timing {
    healthy: Duration::from_secs(2),
    fault: Duration::from_secs(4),
    op_timeout: Duration::from_secs(2),
    delay: (Duration::from_millis(20), Duration::from_millis(40)),
};

/// Runs the scenario under `faults` and checks it; `None` where the harness cannot run.
async fn survives(faults: &[Fault], extra: &[&str]) -> Option<scenario::Report> {
    if !Network::available() {
        return None;
    }
    let cluster = Cluster::start(extra).await;
    let report = scenario::run(&cluster, faults, SHORT).await;
    if std::env::var("SHOAL_DEBUG_LOGS").is_ok() {
        for m in &cluster.members {
            for l in m.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(15) {
                eprintln!("LOG {l}");
            }
        }
    }
    eprintln!("{}", report.summary());
    report.assert_correct();
    for f in &report.faults {
        let (served, all) = f.majority_writes;
        assert!(served > 0, "{}: the majority served no write: {}", f.fault.name(), report.summary());
        assert!(all > 0);
    }
    Some(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_of_the_leader_a_follower_and_in_turn_lose_nothing_and_stay_linearizable() {
    survives(&[Fault::LeaderPartitioned, Fault::MinorityPartitioned, Fault::Flapping], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_and_lost_packets_lose_nothing_and_stay_linearizable() {
    survives(&[Fault::LeaderPaused, Fault::Loss], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_packets_and_a_membership_change_in_a_partition_lose_nothing_and_stay_linearizable() {
    // Round trips of 40–120 ms need a heartbeat longer than that (see `--raft-heartbeat`).
    let Some(report) = survives(&[Fault::Delay, Fault::MembershipChanged], &["--raft-heartbeat", "150ms"]).await else {
        return;
    };
    // Before raft's timed-out requests were let finish, one timeout cost the connection and
    // every request after it timed out in TLS's handshake: 2 writes of 3 answered in 4 s.
    let (served, all) = report.faults[0].majority_writes;
    assert!(served >= 10 && served * 10 >= all * 9, "writes answered under delay: {served} of {all}");
}

/// Waits until `shoal get nodes` shows node `name` Ready.
async fn node_ready(control: &common::ControlProcess, name: &str) {
    common::wait_for(Duration::from_secs(20), &format!("node {name} Ready"), || async {
        let nodes = common::ok_stdout(&control.cli(&["get", "nodes"]));
        nodes.lines().any(|l| l.starts_with(&format!("{name} ")) && l.contains(" Ready")).then_some(())
    })
    .await;
}

/// What the test saw of one workload on one node's ingress, polled.
#[derive(Default)]
struct Served {
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

/// Polls `host` on `ingress` until `stop`; returns when it answered 200 first and last.
async fn watch_serving(ingress: String, host: &'static str, stop: tokio_util::sync::CancellationToken) -> Served {
    shoal_api::client::install_crypto_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let mut served = Served::default();
    while !stop.is_cancelled() {
        let asked = std::time::Instant::now();
        let ok = http
            .get(format!("http://{ingress}/"))
            .header("host", host)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            served.first.get_or_insert(asked);
            served.last = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served
}

/// The names of the Instances bound to `node`.
async fn bound_to(client: &shoal_api::Client, node: &str) -> std::collections::BTreeSet<String> {
    let list = client.list_of::<shoal_api::resources::instance::InstanceKind>(Some("default")).await.unwrap();
    let here = list.items.into_iter().filter(|i| i.spec.node.as_ref().is_some_and(|n| n.as_str() == node));
    here.map(|i| i.metadata.name.to_string()).collect()
}

/// The names of the instances node `node` runs, from its per-instance metrics; `None` while the
/// control plane cannot reach it.
async fn hosted_on(client: &shoal_api::Client, node: &str) -> Option<std::collections::BTreeSet<String>> {
    let metrics = client.node_metrics(node, true).await.ok()?;
    let lines = metrics.lines().filter(|l| l.starts_with("shoal_node_instance_memory_bytes{"));
    let name = |l: &str| l.split("instance=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
    Some(lines.filter_map(name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_node_stops_its_singleton_before_the_replacement_starts_and_keeps_serving_the_rest() {
    use common::workloads::{apply, wait_running, workload_yaml};
    use common::{ControlProcess, NodeProcess};
    if !Network::available() {
        return;
    }
    let net = Network::new();
    let (c, a, b) = (net.host(), net.host(), net.host());
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start_on(Some(&c), dir.path(), &["--node-grace", "2s"]);
    let client = control.client();
    let node_a = NodeProcess::start_on(&control, Some(&a), "a", &["--heartbeat", "200ms"]);
    let singleton = "  singleton: true\n  rollout: {maxSurge: 0, maxUnavailable: 1}\n";
    apply(&control, "solo", &workload_yaml("solo", "$HELLO", singleton));
    apply(&control, "web", &workload_yaml("web", "$HELLO", ""));
    wait_running(&client, "solo", 1, Some("a"), Duration::from_secs(30)).await;
    wait_running(&client, "web", 1, Some("a"), Duration::from_secs(30)).await;
    let node_b = NodeProcess::start_on(&control, Some(&b), "b", &["--heartbeat", "200ms"]);
    node_ready(&control, "b").await;

    let stop = tokio_util::sync::CancellationToken::new();
    let solo_a = tokio::spawn(watch_serving(node_a.ingress.clone(), "solo.default.localhost", stop.clone()));
    let solo_b = tokio::spawn(watch_serving(node_b.ingress.clone(), "solo.default.localhost", stop.clone()));
    let web_a = tokio::spawn(watch_serving(node_a.ingress.clone(), "web.default.localhost", stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    net.partition(&[&a], &[&c]);
    let cut = std::time::Instant::now();
    wait_running(&client, "solo", 1, Some("b"), Duration::from_secs(30)).await;
    // Serving on b, seen through its ingress, and a's web still answering well after the cut.
    let http = common::workloads::http();
    common::wait_for(Duration::from_secs(10), "solo served on b", || async {
        let r = http.get(format!("http://{}/", node_b.ingress)).header("host", "solo.default.localhost").send().await;
        r.is_ok_and(|r| r.status().as_u16() == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (solo_a, solo_b, web_a) = (solo_a.await.unwrap(), solo_b.await.unwrap(), web_a.await.unwrap());

    let stopped_on_a = solo_a.last.expect("solo served on a before the cut");
    let started_on_b = solo_b.first.expect("solo served on b after the cut");
    assert!(
        stopped_on_a < started_on_b,
        "solo answered on a until {:?} after the cut, and on b from {:?}: it ran twice",
        stopped_on_a.duration_since(cut),
        started_on_b.duration_since(cut)
    );
    eprintln!(
        "solo: last served on a {:?} after the cut, first on b {:?} after it",
        stopped_on_a.saturating_duration_since(cut),
        started_on_b.duration_since(cut)
    );
    let web_last = web_a.last.expect("web served on a");
    assert!(
        web_last >= started_on_b,
        "web (not a singleton) stopped answering on the cut-off node {:?} after the cut",
        web_last.saturating_duration_since(cut)
    );

    // Healed, node a is Ready again and does not start the instance it held: no lease names it.
    net.heal(&[&a, &c]);
    let healed = std::time::Instant::now();
    let converged = common::wait_for(Duration::from_secs(20), "every node running what is bound to it", || async {
        for node in ["a", "b"] {
            let (bound, hosted) = (bound_to(&client, node).await, hosted_on(&client, node).await?);
            if bound != hosted {
                return None;
            }
        }
        Some(healed.elapsed())
    })
    .await;
    eprintln!("heal to converged (every node running exactly the instances bound to it): {converged:?}");
    node_ready(&control, "a").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let after = tokio::spawn(watch_serving(node_a.ingress.clone(), "solo.default.localhost", stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    assert!(after.await.unwrap().first.is_none(), "the healed node served the singleton it had let go");
    common::wait_for(Duration::from_secs(15), "a FenceLapsed event about solo", || async {
        let events = common::ok_stdout(&control.cli(&["events"]));
        events.lines().any(|l| l.contains("FenceLapsed") && l.contains("solo")).then_some(())
    })
    .await;
}

fn config(name: &str) -> shoal_api::AnyObject {
    let json = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Config",
        "metadata": {"name": name, "namespace": "default"}, "spec": {"data": {"v": name}}});
    shoal_api::AnyObject::from_json(shoal_api::Kind::Config, &json).unwrap()
}

async fn configs(client: &shoal_api::Client) -> std::collections::BTreeSet<String> {
    common::names(&client.list(shoal_api::Kind::Config, Some("default"), None).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_refuses_writes_loses_nothing_and_writes_again_when_space_returns() {
    let Some(disk) = common::Tmpfs::mount("96m") else { return };
    let data = disk.path.join("control");
    let mut control = common::ControlProcess::start(&data, &["--disk-reserve", "24Mi"]);
    let client = control.client();
    let mut acked = std::collections::BTreeSet::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        client.create(&config(&name)).await.unwrap();
        acked.insert(name);
    }

    // Filled to 8 MiB free, below the reserve of 24 MiB.
    let filler_path = disk.fill(8 << 20);
    // The free space is read at most every 200 ms: a write or two may still land, acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let name = format!("filling-{}", acked.len());
        match client.create(&config(&name)).await {
            Ok(_) => acked.insert(name),
            Err(e) => break e,
        };
        assert!(std::time::Instant::now() < deadline, "writes were still taken with the disk full");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.reason(), Some(shoal_api::Reason::InsufficientStorage), "{refused}");
    let message = refused.to_string();
    assert!(message.contains("--disk-reserve") && message.contains(&data.display().to_string()), "{message}");
    // The CLI says so too, and reads go on.
    let cli = control.cli(&["delete", "config", "before-0"]);
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success() && stderr.contains("insufficient storage"), "{stderr}");
    assert_eq!(configs(&client).await, acked, "every acknowledged write is read back while the disk is full");
    let module = std::fs::read(shoal_guest_artifacts::HELLO).unwrap();
    let upload = client.put_module("default", module).await.unwrap_err();
    assert_eq!(upload.reason(), Some(shoal_api::Reason::InsufficientStorage), "a module upload: {upload}");

    // Space returns: writes are taken again, without a restart.
    std::fs::remove_file(&filler_path).unwrap();
    common::wait_for(Duration::from_secs(10), "a write taken once space returned", || async {
        client.create(&config("after")).await.ok()
    })
    .await;
    acked.insert("after".to_owned());
    control.kill();
    let control = common::ControlProcess::start(&data, &["--disk-reserve", "24Mi"]);
    let client = control.client();
    let after_restart = common::wait_for(Duration::from_secs(20), "the store read back after a restart", || async {
        client.list(shoal_api::Kind::Config, Some("default"), None).await.ok()
    })
    .await;
    assert_eq!(common::names(&after_restart), acked, "nothing acknowledged was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_module_cache_fills_says_so_on_the_instance_and_runs_it_once_there_is_room() {
    use common::workloads::{apply, wait_running, workload_yaml};
    let Some(disk) = common::Tmpfs::mount("4m") else { return };
    let dir = tempfile::tempdir().unwrap();
    let control = common::ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    let data = disk.path.join("node");
    let _node = common::NodeProcess::start(&control, "n1", &["--data-dir", data.to_str().unwrap()]);
    // hello with 6 MiB of custom section: more than the node's disk holds.
    let hello = std::fs::read(shoal_guest_artifacts::HELLO).unwrap();
    let big = common::with_custom_section(&hello, "padding", &common::noise(6 << 20, 17));
    let big_path = dir.path().join("big.wasm");
    std::fs::write(&big_path, big).unwrap();
    apply(&control, "big", &workload_yaml("big", big_path.to_str().unwrap(), ""));
    let waiting = common::wait_for(Duration::from_secs(30), "the instance reporting a full module cache", || async {
        let all = common::workloads::instances_of(&client, "big").await;
        all.into_iter().find(|i| i.status.as_ref().is_some_and(|s| s.reason == "ModuleCacheFull"))
    })
    .await;
    let message = &waiting.status.as_ref().unwrap().message;
    assert!(message.contains("module cache is full"), "{message}");
    disk.resize("64m");
    wait_running(&client, "big", 1, Some("n1"), Duration::from_secs(60)).await;
}
