//! Hollow nodes end to end: `shoal node --hollow 20` against a real control plane registers 20
//! nodes with their own node tokens, keeps them Ready, and reports the instances the scheduler
//! spreads over them Running, without writing them again while nothing changes. And among 200
//! hollow nodes, one killed (the only node of a process of its own) is marked NotReady after the
//! grace period, its instance is replaced elsewhere within grace + 2 s, and no live node is ever
//! marked NotReady meanwhile.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::workloads::{apply, instances_of, wait_running, workload_yaml};
use common::{ControlProcess, spawn_announcing, wait_for};
use futures::StreamExt;
use shoal_api::Client;
use shoal_api::resources::instance::Instance;
use shoal_api::resources::node::NodeKind;
use tokio::task::JoinHandle;

const NODES: usize = 20;
const REPLICAS: usize = 40;

/// The `shoal node --hollow` process; killed on drop, its log printed if the test failed.
struct Hollow {
    child: Child,
    log_path: PathBuf,
}

impl Hollow {
    /// Starts `count` hollow nodes `<prefix>-0`, ... beating every `heartbeat`, with `extra`
    /// flags; waits until they are all registered.
    fn start(control: &ControlProcess, count: usize, prefix: &str, heartbeat: &str, extra: &[&str]) -> Hollow {
        Hollow::start_via(control, &control.api_url, count, prefix, heartbeat, extra)
    }

    /// Like [`Hollow::start`], joined through the API server at `api_url` (another member of
    /// `control`'s cluster).
    fn start_via(
        control: &ControlProcess,
        api_url: &str,
        count: usize,
        prefix: &str,
        heartbeat: &str,
        extra: &[&str],
    ) -> Hollow {
        let admin_token = control.client_config().token;
        let ca = control.data_dir.join("pki/ca.pem");
        let log_path = control.data_dir.join(format!("{prefix}.log"));
        let count = count.to_string();
        let mut args = vec![
            "node",
            "--hollow",
            &count,
            "--hollow-prefix",
            prefix,
            "--join",
            api_url,
            "--token",
            &admin_token,
            "--ca",
            ca.to_str().unwrap(),
            "--heartbeat",
            heartbeat,
        ];
        args.extend(extra);
        let (child, announced) = spawn_announcing(&args, &control.config_path, &log_path, &["hollow nodes running: "]);
        assert_eq!(announced[0], count);
        Hollow { child, log_path }
    }

    /// Kills it with SIGKILL (its nodes stop beating at once, without a word) and waits for it to
    /// be gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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
    let hollow = Hollow::start(&control, NODES, "hollow", "200ms", &[]);

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

/// Hollow nodes that stay up in the dead-node test, besides the one that dies.
const SURVIVORS: usize = 200;
/// The one node of the dead-node test that is killed: the only node of its own process.
const DOOMED: &str = "doomed-0";
/// `--node-grace` of the dead-node test's control plane.
const GRACE: Duration = Duration::from_secs(2);

/// A node seen with its Ready condition other than True: its name, that condition's status, and
/// when the watch saw it.
#[derive(Debug, Clone)]
struct NotReady {
    node: String,
    status: String,
    seen: Instant,
}

/// Follows every change of a Node from now on (a list, then a watch from its revision), recording
/// each node seen not Ready. The task runs until the watch ends, and then says why.
async fn record_not_ready(admin: &Client) -> (Arc<Mutex<Vec<NotReady>>>, JoinHandle<String>) {
    let list = admin.list_of::<NodeKind>(None).await.unwrap();
    let mut changes = Box::pin(admin.watch_of::<NodeKind>(None, list.resource_version).await.unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match changes.next().await {
                Some(Ok(change)) => {
                    let ready = change.object.status.as_ref().and_then(|s| s.ready());
                    let status = ready.map_or("(no Ready condition)", |c| c.status.as_str());
                    if status != "True" {
                        let (node, status) = (change.object.metadata.name.to_string(), status.to_owned());
                        record.lock().unwrap().push(NotReady { node, status, seen: Instant::now() });
                    }
                }
                Some(Err(e)) => return format!("the watch of Nodes failed: {e}"),
                None => return "the watch of Nodes ended".to_owned(),
            }
        }
    });
    (seen, task)
}

#[tokio::test]
async fn a_dead_node_among_hundreds_is_noticed_and_its_instances_replaced_within_grace() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--node-grace", "2s"]);
    let client = control.client();
    let started = Instant::now();
    let hollow = Hollow::start(&control, SURVIVORS, "hollow", "200ms", &[]);
    let mut doomed = Hollow::start(&control, 1, "doomed", "200ms", &[]);
    let nodes = SURVIVORS + 1;
    wait_for(Duration::from_secs(30), &format!("{nodes} Ready hollow nodes"), || async {
        (ready_hollow_nodes(&client).await.len() == nodes).then_some(())
    })
    .await;
    println!("{nodes} hollow nodes Ready {:.2} s after start", started.elapsed().as_secs_f64());
    let (not_ready, watch) = record_not_ready(&client).await;

    // One replica per node, spread: one on the doomed node for sure, and room for its
    // replacement on any other.
    let spec = format!("  replicas: {nodes}\n");
    apply(&control, "spread", &workload_yaml("spread", "$HELLO", &spec));
    let applied = Instant::now();
    let before = wait_running(&client, "spread", nodes, None, Duration::from_secs(30)).await;
    println!("{nodes} replicas Running {:.2} s after apply", applied.elapsed().as_secs_f64());
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for instance in &before {
        *per_node.entry(instance.spec.node.as_ref().unwrap().to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (0..SURVIVORS)
        .map(|i| format!("hollow-{i}"))
        .chain(std::iter::once(DOOMED.to_owned()))
        .map(|name| (name, 1))
        .collect();
    assert_eq!(per_node, expected, "not one replica per node");

    let killed = Instant::now();
    doomed.kill();
    // Measured to the first look that finds every replacement Running: a little late, never
    // early. The timeout is far beyond the bound, so that a miss says by how much.
    let after = wait_for(Duration::from_secs(20), &format!("{nodes} Running instances, none on {DOOMED}"), || async {
        let all = instances_of(&client, "spread").await;
        let done = all.len() == nodes
            && all.iter().all(|i| i.is_ready() && i.spec.node.as_ref().is_some_and(|n| n.as_str() != DOOMED));
        done.then(|| (all, Instant::now()))
    })
    .await;
    let (after, replaced) = after;
    let took = replaced - killed;
    println!("replacements Running {:.2} s after the kill", took.as_secs_f64());
    assert!(
        took <= GRACE + Duration::from_secs(2),
        "the replacements took {took:?} after the kill, more than grace {GRACE:?} + 2 s"
    );
    // Only the dead node's instance was replaced: every other one is the one there was before.
    let uids = |instances: &[Instance], skip: Option<&str>| {
        instances
            .iter()
            .filter(|i| skip.is_none_or(|skip| i.spec.node.as_ref().is_none_or(|n| n.as_str() != skip)))
            .map(|i| i.metadata.uid.clone().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (survivors, now) = (uids(&before, Some(DOOMED)), uids(&after, None));
    assert_eq!(survivors.len(), SURVIVORS);
    assert_eq!(now.difference(&survivors).count(), 1, "not exactly one replacement");
    assert!(survivors.is_subset(&now), "instances on live nodes were replaced too");

    // The watch saw the dead node marked NotReady, after the kill and no earlier than its grace
    // allows (its last beat was at most a heartbeat before the kill; a second of slack for a
    // late one), and it was still watching: no other node was ever marked.
    let marked = wait_for(Duration::from_secs(2), &format!("the watch to see {DOOMED} NotReady"), || async {
        not_ready.lock().unwrap().iter().find(|n| n.node == DOOMED).cloned()
    })
    .await;
    assert!(!watch.is_finished(), "{}", watch.await.unwrap());
    assert_eq!(marked.status, "Unknown", "{marked:?}");
    let marked_after = marked.seen.checked_duration_since(killed).expect("doomed-0 marked NotReady before the kill");
    println!("{DOOMED} seen NotReady {:.2} s after the kill", marked_after.as_secs_f64());
    assert!(marked_after >= GRACE / 2, "{DOOMED} marked NotReady {marked_after:?} after the kill, grace {GRACE:?}");
    let others: Vec<String> = not_ready
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.node != DOOMED)
        .map(|n| {
            let at = n.seen.checked_duration_since(killed).map_or_else(
                || format!("{:.2} s before", (killed - n.seen).as_secs_f64()),
                |d| format!("{:.2} s after", d.as_secs_f64()),
            );
            format!("{} ({}) {at} the kill", n.node, n.status)
        })
        .collect();
    assert!(others.is_empty(), "{} live nodes marked NotReady: {}", others.len(), others.join(", "));

    hollow.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beats_sent_to_a_follower_reach_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let grace = "--node-grace";
    let first = ControlProcess::start(&dir.path().join("m1"), &["--id", "1", grace, "2s"]);
    let pki = dir.path().join("m1/pki");
    let mut members = vec![first];
    for id in ["2", "3"] {
        let join = members[0].raft_addr.clone();
        let data = dir.path().join(format!("m{id}"));
        let extra = ["--id", id, "--join", &join, "--pki-dir", pki.to_str().unwrap(), grace, "2s"];
        members.push(ControlProcess::start(&data, &extra));
    }
    let admin = members[0].client();
    let leader = wait_for(Duration::from_secs(30), "three members and a leader", || async {
        let status = admin.cluster_status().await.ok()?;
        (status.members.len() == 3).then_some(status.leader?)
    })
    .await;
    let follower = members.iter().find(|m| !m.data_dir.ends_with(format!("m{leader}"))).unwrap();
    // The nodes talk only to a follower: every beat must be forwarded to the leader.
    let mut hollow = Hollow::start_via(&members[0], &follower.api_url, 5, "far", "200ms", &[]);
    let leader_client = members[(leader - 1) as usize].client();
    wait_for(Duration::from_secs(10), "5 Ready nodes", || async {
        (ready_hollow_nodes(&leader_client).await.len() == 5).then_some(())
    })
    .await;
    let (not_ready, _watch) = record_not_ready(&leader_client).await;
    // Three grace periods of forwarded beats: nobody may be marked NotReady meanwhile.
    tokio::time::sleep(GRACE * 3).await;
    assert!(not_ready.lock().unwrap().is_empty(), "marked NotReady while beating: {:?}", not_ready.lock().unwrap());
    // And the leader does notice when they stop.
    hollow.kill();
    let killed = Instant::now();
    wait_for(Duration::from_secs(10), "the silent nodes to be marked NotReady", || async {
        let mut marked: Vec<String> = not_ready.lock().unwrap().iter().map(|n| n.node.clone()).collect();
        marked.sort();
        marked.dedup();
        (marked.len() == 5).then_some(())
    })
    .await;
    assert!(killed.elapsed() <= GRACE + Duration::from_secs(2), "noticed only after {:?}", killed.elapsed());
}
