//! Workloads end to end: a real control plane and real node processes; workloads applied as
//! YAML, instances scheduled, started in wasmtime, answering through the node's ingress, kept
//! running through crashes, node deaths and rollouts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::workloads::{apply, get, http, instances_of, wait_running, workload_yaml};
use common::{ControlProcess, NodeProcess, ok_stdout, wait_for};
use shoal_api::resources::instance::{InstanceKind, Phase};
use shoal_api::resources::workload::WorkloadKind;
use shoal_api::{AnyObject, Reason};

#[tokio::test]
async fn examples_run_and_answer_through_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", "  replicas: 3\n  resources:\n    memory: 32Mi\n"));
    apply(
        &control,
        "p1",
        &workload_yaml("hello-p1", "$HELLO_P1", "  type: command\n  restartPolicy: Never\n  args: [a, b]\n"),
    );
    apply(
        &control,
        "worker",
        &workload_yaml("worker", "$WORKER", "  type: command\n  env:\n  - name: INTERVAL_MS\n    value: \"50\"\n"),
    );
    wait_running(&client, "hello", 3, Some("n1"), Duration::from_secs(20)).await;
    wait_running(&client, "worker", 1, Some("n1"), Duration::from_secs(20)).await;
    let http = http();
    let (status, body) = get(&http, &node.ingress, "hello.default.localhost", "/hi").await;
    assert_eq!((status, body.as_str()), (200, "hello from shoal (v1): GET /hi\n"));

    let (status, body) = get(&http, &node.ingress, "nope.default.localhost", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no service or workload \"nope\""), "{body}");
    let (status, body) = get(&http, &node.ingress, "localhost", "/").await;
    assert_eq!(status, 404, "{body}");

    let p1 = wait_for(Duration::from_secs(20), "hello-p1 to succeed", || async {
        instances_of(&client, "hello-p1").await.into_iter().find(|i| i.phase() == Phase::Succeeded)
    })
    .await;
    assert_eq!(p1.status.unwrap().last_exit.unwrap().code, Some(0));

    // Logs come back through the API server, and -f follows what is written next.
    let logs = wait_for(Duration::from_secs(10), "two ticks in the worker's log", || async {
        let out = ok_stdout(&control.cli(&["logs", "workload/worker"]));
        out.contains("tick 2\n").then_some(out)
    })
    .await;
    assert!(logs.starts_with("tick 1\n"), "{logs}");
    let ticks_now = logs.matches("tick ").count();
    let mut follow = std::process::Command::new(common::shoal_bin())
        .args(["logs", "workload/worker", "-f"])
        .env("SHOAL_CONFIG", &control.config_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let target = format!("tick {}", ticks_now + 5);
    let followed = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line == target => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(followed, "shoal logs -f did not show {target:?}");

    let workload = client.list_of::<WorkloadKind>(Some("default")).await.unwrap();
    let hello = workload.items.iter().find(|w| w.metadata.name.as_str() == "hello").unwrap();
    let status = hello.status.clone().unwrap();
    assert_eq!((status.replicas, status.ready_replicas, status.available_replicas), (3, 3, 3));

    // Scale down; delete: the instances follow.
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", "  replicas: 1\n  resources:\n    memory: 32Mi\n"));
    wait_running(&client, "hello", 1, None, Duration::from_secs(10)).await;
    ok_stdout(&control.cli(&["delete", "workload", "hello"]));
    wait_for(Duration::from_secs(10), "hello's instances to be deleted", || async {
        instances_of(&client, "hello").await.is_empty().then_some(())
    })
    .await;
    // The node hears of the deletes by its watch, a moment later.
    wait_for(Duration::from_secs(5), "the ingress to forget hello", || async {
        (get(&http, &node.ingress, "hello.default.localhost", "/").await.0 == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_crashing_guest_backs_off_with_growing_delays() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let env = "  type: command\n  env:\n  - name: CRASH_AFTER_MS\n    value: \"20\"\n";
    apply(&control, "crash", &workload_yaml("crash", "$CRASH", env));
    // Record when each restart is first seen; the gaps between them must grow.
    let mut seen: Vec<(u32, Instant)> = Vec::new();
    let mut backoff_seen = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last().is_none_or(|(r, _)| *r < 4) {
        assert!(Instant::now() < deadline, "no 4 restarts within 30 s: {seen:?}");
        let status = instances_of(&client, "crash").await.into_iter().next().and_then(|i| i.status);
        if let Some(status) = status {
            backoff_seen |= status.phase == Phase::CrashLoopBackOff;
            if seen.last().is_none_or(|(r, _)| *r < status.restarts) {
                seen.push((status.restarts, Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backoff_seen, "the phase never showed CrashLoopBackOff");
    let at = |restarts: u32| seen.iter().find(|(r, _)| *r >= restarts).unwrap().1;
    let (early, late) = (at(2) - at(1), at(4) - at(3));
    assert!(late > early * 2, "back-off did not grow: restart 1->2 took {early:?}, 3->4 took {late:?} ({seen:?})");
    let instance = instances_of(&client, "crash").await.remove(0);
    let exit = instance.status.unwrap().last_exit.unwrap();
    assert_eq!(exit.reason, "Trap", "{exit:?}");
    assert!(exit.message.contains("unreachable"), "{exit:?}");
}

#[tokio::test]
async fn a_killed_node_s_instances_come_up_elsewhere_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--node-grace", "3s"]);
    let mut doomed = NodeProcess::start(&control, "doomed", &[]);
    let survivor = NodeProcess::start(&control, "survivor", &[]);
    let client = control.client();
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", "  replicas: 2\n"));
    let running = wait_running(&client, "hello", 2, None, Duration::from_secs(20)).await;
    let nodes: std::collections::BTreeSet<String> =
        running.iter().map(|i| i.spec.node.as_ref().unwrap().to_string()).collect();
    assert_eq!(nodes.len(), 2, "replicas were not spread across the two nodes: {nodes:?}");

    doomed.kill();
    let killed = Instant::now();
    wait_running(&client, "hello", 2, Some("survivor"), Duration::from_secs(15)).await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(5), "instances took {took:?} to move (grace 3 s + 2 s allowed)");
    let (status, body) = get(&http(), &survivor.ingress, "hello.default.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    let node = ok_stdout(&control.cli(&["get", "nodes"]));
    assert!(node.lines().any(|l| l.starts_with("doomed") && l.contains("NotReady")), "{node}");
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_its_neighbours_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    apply(&control, "trouble", &workload_yaml("trouble", "$TROUBLE", "  requestTimeoutMs: 1000\n"));
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", ""));
    wait_running(&client, "trouble", 1, None, Duration::from_secs(20)).await;
    wait_running(&client, "hello", 1, None, Duration::from_secs(20)).await;
    let http = http();
    let spinning = {
        let (http, ingress) = (http.clone(), node.ingress.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (get(&http, &ingress, "trouble.default.localhost", "/spin").await, started.elapsed())
        })
    };
    // While it spins, the neighbour answers, and quickly.
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = get(&http, &node.ingress, "hello.default.localhost", "/").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_millis(500), "a neighbour took {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ((status, body), took) = spinning.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("Timeout"), "{body}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "the spin was stopped after {took:?}");
    // The workload itself still serves.
    assert_eq!(get(&http, &node.ingress, "trouble.default.localhost", "/").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn a_memory_bomb_in_a_request_is_stopped_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    apply(&control, "trouble", &workload_yaml("trouble", "$TROUBLE", "  resources:\n    memory: 16Mi\n"));
    wait_running(&client, "trouble", 1, None, Duration::from_secs(20)).await;
    let http = http();
    let (status, body) = get(&http, &node.ingress, "trouble.default.localhost", "/membomb").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("OutOfMemory") && body.contains("limit 16777216"), "{body}");
    let (status, body) = get(&http, &node.ingress, "trouble.default.localhost", "/stack").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("StackOverflow"), "{body}");
    let (status, body) = get(&http, &node.ingress, "trouble.default.localhost", "/file").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("open denied"), "{body}");
    assert_eq!(get(&http, &node.ingress, "trouble.default.localhost", "/").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn a_rollout_with_max_unavailable_0_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let spec = |version: &str| {
        format!(
            "  replicas: 2\n  rollout:\n    maxSurge: 1\n    maxUnavailable: 0\n  env:\n  - name: VERSION\n    value: {version}\n"
        )
    };
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", &spec("v1")));
    wait_running(&client, "hello", 2, None, Duration::from_secs(20)).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (http, ingress, stop) = (http(), node.ingress.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut v2) = (0u32, Vec::new(), 0u32);
            while !stop.is_cancelled() {
                let (status, body) = get(&http, &ingress, "hello.default.localhost", "/").await;
                match status {
                    200 => ok += 1,
                    _ => failed.push(format!("{status}: {body}")),
                }
                v2 += u32::from(body.contains("(v2)"));
            }
            (ok, failed, v2)
        })
    };
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", &spec("v2")));
    let rollout = tokio::task::spawn_blocking({
        let config = control.config_path.clone();
        move || {
            std::process::Command::new(common::shoal_bin())
                .args(["rollout", "status", "workload/hello", "--timeout", "30s"])
                .env("SHOAL_CONFIG", config)
                .output()
                .unwrap()
        }
    });
    let out = rollout.await.unwrap();
    assert!(ok_stdout(&out).contains("workload/hello successfully rolled out (2 replicas)"));
    wait_for(Duration::from_secs(30), "the rollout to complete", || async {
        let all = instances_of(&client, "hello").await;
        let done = all.len() == 2 && all.iter().all(|i| i.is_ready() && i.spec.env.iter().any(|e| e.value == "v2"));
        done.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (ok, failed, v2) = load.await.unwrap();
    assert!(failed.is_empty(), "{} requests failed during the rollout: {failed:?}", failed.len());
    assert!(ok > 20 && v2 > 0, "too little load to tell: {ok} ok, {v2} answered by v2");
}

#[tokio::test]
async fn unschedulable_instances_stay_pending_with_a_reason_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _small = NodeProcess::start(&control, "small", &["--capacity-memory", "64Mi", "--labels", "zone=a"]);
    let _other = NodeProcess::start(&control, "other", &["--labels", "zone=b"]);
    let client = control.client();
    let extra = "  resources:\n    memory: 128Mi\n  placement:\n    nodeSelector:\n      zone: a\n";
    apply(&control, "big", &workload_yaml("big", "$HELLO", extra));
    let message = wait_for(Duration::from_secs(20), "a FailedScheduling event", || async {
        let events = ok_stdout(&control.cli(&["get", "events"]));
        events.lines().find(|l| l.contains("FailedScheduling")).map(str::to_owned)
    })
    .await;
    assert!(message.contains("0/2 nodes available: 1 node selector mismatch, 1 insufficient memory"), "{message}");
    let pending = instances_of(&client, "big").await;
    assert!(pending.len() == 1 && pending[0].spec.node.is_none() && pending[0].phase() == Phase::Pending);
}

#[tokio::test]
async fn a_node_token_reaches_only_its_own_node_and_instances() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _n1 = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", "  placement:\n    nodeSelector:\n      none: none\n"));
    let token = ok_stdout(&control.cli(&["token", "create", "n2", "--node"])).trim().to_owned();
    let n2 = admin.with_token(&token);
    let Ok(shoal_api::token::Identity::Node { name }) = n2.whoami().await else { panic!("not a node identity") };
    assert_eq!(name, "n2");
    let pending = wait_for(Duration::from_secs(10), "a pending instance", || async {
        instances_of(&admin, "hello").await.into_iter().next()
    })
    .await;
    // Not bound to n2: invisible in its list, and its status is not n2's to write.
    assert!(n2.list_of::<InstanceKind>(None).await.unwrap().items.is_empty());
    let err = n2.put_status_of(&pending).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    let err = n2.get(shoal_api::Kind::Node, None, "n1").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    // It reads Workloads (to hold requests for autoscaled ones at zero), and writes none.
    let workloads = n2.list(shoal_api::Kind::Workload, None, None).await.unwrap();
    let AnyObject::Workload(mut hello) = workloads.items.into_iter().next().expect("the workload") else {
        panic!("not a workload")
    };
    hello.spec.replicas = 5;
    let err = n2.put_of(&hello).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    let err = n2.delete(shoal_api::Kind::Instance, Some("default"), pending.metadata.name.as_str()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    let err = n2.logs("default", pending.metadata.name.as_str(), &Default::default()).await.err().unwrap();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    let err = n2.node_credentials("n1", &shoal_api::agent::CredentialsRequest { hosts: vec![] }).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");

    // n1's agent API answers only the control plane (its own certificate of the node CA).
    let shoal_api::AnyObject::Node(n1) = admin.get(shoal_api::Kind::Node, None, "n1").await.unwrap() else { panic!() };
    let url = format!("https://{}/logs/default/{}", n1.spec.agent_address, pending.metadata.name);
    // A node's certificate comes from the node CA: whoever trusts the cluster CA (the API
    // server's and raft's) does not take it.
    let cluster_ca = reqwest::Certificate::from_pem(control.client_config().ca.as_bytes()).unwrap();
    let cluster_only = reqwest::Client::builder().tls_certs_only([cluster_ca]).build().unwrap();
    assert!(cluster_only.get(&url).send().await.is_err(), "a node certificate passed for the cluster CA's");
    let node_ca = std::fs::read(control.data_dir.join("pki/node-ca.pem")).unwrap();
    let ca = reqwest::Certificate::from_pem(&node_ca).unwrap();
    let direct = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    for token in [Some(token.as_str()), None] {
        let mut request = direct.get(&url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }
}

#[tokio::test]
async fn rollout_status_reports_a_crashing_rollout_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    apply(&control, "flaky", &workload_yaml("flaky", "$CRASH", "  type: command\n"));
    let out = control.cli(&["rollout", "status", "workload/flaky", "--timeout", "30s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rollout of workload/flaky failed") && stderr.contains("CrashLoopBackOff"), "{stderr}");
    assert!(stderr.contains("Trap"), "{stderr}");
}

#[tokio::test]
async fn an_instance_whose_readiness_probe_fails_gets_no_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let probe = |path: &str| format!("  probes:\n    readiness:\n      path: {path}\n      period: 100ms\n");
    apply(&control, "trouble", &workload_yaml("trouble", "$TROUBLE", &probe("/unready")));
    let running = wait_for(Duration::from_secs(20), "the instance to run", || async {
        instances_of(&client, "trouble").await.into_iter().find(|i| i.phase() == Phase::Running)
    })
    .await;
    // Several probe periods later it is still not ready, and the ingress sends nothing to it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let now = instances_of(&client, "trouble").await;
    assert!(now.len() == 1 && !now[0].is_ready(), "{now:?}");
    assert_eq!(now[0].metadata.name, running.metadata.name);
    let (status, body) = get(&http(), &node.ingress, "trouble.default.localhost", "/").await;
    assert_eq!(status, 503, "{body}");
    // A probe that passes: the rollout's new instance becomes ready and serves.
    apply(&control, "trouble", &workload_yaml("trouble", "$TROUBLE", &probe("/")));
    wait_running(&client, "trouble", 1, None, Duration::from_secs(20)).await;
    assert_eq!(get(&http(), &node.ingress, "trouble.default.localhost", "/").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn a_node_keeps_serving_while_the_control_plane_is_down_and_reconciles_after() {
    let dir = tempfile::tempdir().unwrap();
    let (api, raft) = (common::fixed_addr(), common::fixed_addr());
    let flags = ["--api-listen", api.as_str(), "--raft-listen", raft.as_str()];
    let mut control = ControlProcess::start(dir.path(), &flags);
    let node = NodeProcess::start(&control, "n1", &[]);
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", ""));
    wait_running(&control.client(), "hello", 1, None, Duration::from_secs(20)).await;

    control.kill();
    let http = http();
    for _ in 0..10 {
        assert_eq!(get(&http, &node.ingress, "hello.default.localhost", "/").await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back on the same addresses: the node's watch resumes, and a delete made now reaches it.
    let control = ControlProcess::start(dir.path(), &flags);
    ok_stdout(&control.cli(&["delete", "workload", "hello"]));
    wait_for(Duration::from_secs(15), "the node to stop hello", || async {
        (get(&http, &node.ingress, "hello.default.localhost", "/").await.0 == 404).then_some(())
    })
    .await;
    let nodes = ok_stdout(&control.cli(&["get", "nodes"]));
    assert!(nodes.lines().any(|l| l.starts_with("n1") && l.contains(" Ready")), "{nodes}");
}

#[tokio::test]
async fn a_new_module_serves_from_baseline_code_then_moves_to_optimized_code_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    apply(&control, "hello", &workload_yaml("hello", "$HELLO", ""));
    wait_running(&client, "hello", 1, Some("n1"), Duration::from_secs(20)).await;

    // The node says which code serves: baseline first, then optimized (its log is the witness
    // that does not depend on timing). Requests keep going while the endpoint is swapped.
    let modules = control.data_dir.join("node-n1/modules");
    let optimized = || {
        std::fs::read_dir(&modules)
            .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "optimized")))
            .unwrap_or(false)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let requests = tokio::spawn({
        let (stop, made, ingress) = (stop.clone(), made.clone(), node.ingress.clone());
        async move {
            let (http, mut answers) = (http(), Vec::new());
            while !stop.load(Ordering::Acquire) {
                answers.push(get(&http, &ingress, "hello.default.localhost", "/tier").await);
                made.fetch_add(1, Ordering::AcqRel);
            }
            answers
        }
    });
    let log = wait_for(Duration::from_secs(30), "the optimized code to be ready", || async {
        let log = node.log();
        (optimized() && log.contains("optimized code ready")).then_some(log)
    })
    .await;
    let baseline = log.find("serving baseline code").expect("the node never served baseline code");
    assert!(baseline < log.find("optimized code ready").unwrap(), "{log}");
    // Twenty more requests after the tier-up, on whichever endpoint serves by then.
    let target = made.load(Ordering::Acquire) + 20;
    wait_for(Duration::from_secs(10), "requests after the tier-up", || async {
        (made.load(Ordering::Acquire) >= target).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let answers = requests.await.unwrap();
    assert!(answers.len() > 10, "only {} requests were made", answers.len());
    let failed: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), answers.len(), failed.first());
    assert!(answers.iter().all(|(_, body)| body == "hello from shoal (v1): GET /tier\n"), "{:?}", answers.last());
}
