//! Hollow nodes end to end: `shoal node --hollow 20` against a real control plane registers 20
//! nodes with their own node tokens, keeps them Ready, and reports the instances the scheduler
//! spreads over them Running, without writing them again while nothing changes.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::workloads::{apply, wait_running, workload_yaml};
use common::{ControlProcess, spawn_announcing, wait_for};
use shoal_api::Client;
use shoal_api::resources::node::NodeKind;

const NODES: usize = 20;
const REPLICAS: usize = 40;

/// The `shoal node --hollow` process; killed on drop, its log printed if the test failed.
struct Hollow {
    child: Child,
    log_path: PathBuf,
}

impl Hollow {
    fn start(control: &ControlProcess) -> Hollow {
        let admin_token = control.client_config().token;
        let ca = control.data_dir.join("pki/ca.pem");
        let log_path = control.data_dir.join("hollow.log");
        let count = NODES.to_string();
        let args = [
            "node",
            "--hollow",
            &count,
            "--join",
            &control.api_url,
            "--token",
            &admin_token,
            "--ca",
            ca.to_str().unwrap(),
            "--heartbeat",
            "200ms",
        ];
        let (child, announced) = spawn_announcing(&args, &control.config_path, &log_path, &["hollow nodes running: "]);
        assert_eq!(announced[0], count);
        Hollow { child, log_path }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let status = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "shoal node --hollow exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "shoal node --hollow did not exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            eprintln!("---- log of shoal node --hollow ----\n{log}");
        }
    }
}

/// The Ready hollow nodes' names.
async fn ready_hollow_nodes(client: &Client) -> Vec<String> {
    let nodes = client.list_of::<NodeKind>(None).await.unwrap().items;
    nodes
        .into_iter()
        .filter(|n| n.metadata.labels.get("shoal.dev/hollow").is_some_and(|v| v == "true"))
        .filter(|n| n.status.as_ref().and_then(|s| s.ready()).is_some_and(|c| c.status == "True"))
        .map(|n| n.metadata.name.to_string())
        .collect()
}

#[tokio::test]
async fn hollow_nodes_register_heartbeat_and_run_a_spread_workload() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    let hollow = Hollow::start(&control);

    // Each has a node token of its own, issued with the admin token.
    let tokens = client.list_tokens().await.unwrap();
    let node_tokens = tokens.iter().filter(|t| t.node && t.name.as_str().starts_with("hollow-")).count();
    assert_eq!(node_tokens, NODES, "{tokens:?}");
    // Their first status write follows registration within a heartbeat interval.
    wait_for(Duration::from_secs(10), "20 Ready hollow nodes", || async {
        (ready_hollow_nodes(&client).await.len() == NODES).then_some(())
    })
    .await;

    let spec = format!("  replicas: {REPLICAS}\n");
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", &spec));
    let instances = wait_running(&client, "hello", REPLICAS, None, Duration::from_secs(20)).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for instance in &instances {
        *per_node.entry(instance.spec.node.as_ref().unwrap().to_string()).or_default() += 1;
    }
    // Identical nodes, spread: every node within one of even, i.e. exactly two each.
    let expected: BTreeMap<String, usize> = (0..NODES).map(|i| (format!("hollow-{i}"), REPLICAS / NODES)).collect();
    assert_eq!(per_node, expected);

    // Nothing changes, so the instances are not written again, over several heartbeats; the
    // nodes stay Ready meanwhile.
    let versions = |items: Vec<(String, Option<u64>)>| items.into_iter().collect::<BTreeMap<_, _>>();
    let before =
        versions(instances.iter().map(|i| (i.metadata.name.to_string(), i.metadata.resource_version)).collect());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = wait_running(&client, "hello", REPLICAS, None, Duration::from_secs(1)).await;
    let after = versions(after.iter().map(|i| (i.metadata.name.to_string(), i.metadata.resource_version)).collect());
    assert_eq!(before, after, "instance statuses were written again");
    assert_eq!(ready_hollow_nodes(&client).await.len(), NODES, "a hollow node went NotReady");

    hollow.terminate();
}
