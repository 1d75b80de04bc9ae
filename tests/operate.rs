//! Operating Shoal end to end: the control plane's `/metrics` and a node's, for the admin only,
//! counting what they serve, in an exposition `promtool check metrics` accepts and a real
//! Prometheus scrapes.

mod common;

use common::{ControlProcess, namespace};
use std::time::Duration;

use shoal_api::Name;
use shoal_api::token::TokenRequest;

/// `GET /metrics` with `token`: (status, body).
async fn scrape(control: &ControlProcess, token: Option<&str>) -> (u16, String) {
    let mut request = control.raw_http().get(format!("{}/metrics", control.api_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the sample `series` (its full name and labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Whether `tool` (from Debian's `prometheus` package, which CI installs) runs here.
fn have(tool: &str) -> bool {
    common::have(tool, "prometheus")
}

/// `promtool check metrics` on `text`, when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    if !have("promtool") {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool check metrics failed:\n{said}");
    assert!(said.trim().is_empty(), "promtool found problems:\n{said}");
}

#[tokio::test]
async fn the_control_plane_serves_metrics_to_the_admin_that_count_its_requests_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let admin_token = control.client_config().token;

    let (status, before) = scrape(&control, Some(&admin_token)).await;
    assert_eq!(status, 200, "{before}");
    for family in ["shoal_raft_term ", "shoal_raft_is_leader 1", "# TYPE shoal_raft_leader_changes_total counter"] {
        assert!(before.contains(family), "{family:?} missing:\n{before}");
    }
    let created = r#"shoal_api_requests_total{verb="create",kind="namespaces",code="201"}"#;
    let count_before = sample(&before, created).unwrap_or(0.0);
    admin.create(&namespace("metered")).await.unwrap();
    let (_, after) = scrape(&control, Some(&admin_token)).await;
    assert_eq!(sample(&after, created), Some(count_before + 1.0), "{after}");
    assert!(after.contains("shoal_api_request_duration_seconds_bucket{"), "{after}");
    let scrapes = r#"shoal_api_requests_total{verb="get",kind="other",code="200"}"#;
    assert!(sample(&after, scrapes).is_some_and(|n| n >= 1.0), "the scrape before is counted:\n{after}");
    assert!(sample(&after, "shoal_raft_applied_index").is_some_and(|i| i > 0.0), "{after}");
    let commits = sample(&after, "shoal_raft_commit_duration_seconds_count");
    assert!(commits.is_some_and(|n| n >= 1.0), "the namespace's create was a commit:\n{after}");
    assert!(sample(&after, "shoal_raft_log_entries").is_some_and(|n| n >= 1.0), "{after}");
    assert!(sample(&after, "shoal_store_file_bytes").is_some_and(|n| n > 0.0), "{after}");

    // Only the admin: a tenant gets 403, no token 401, and what they asked for is counted
    // under closed label values.
    let request = TokenRequest {
        name: Name::new("metered").unwrap(),
        namespaces: vec![Name::new("metered").unwrap()],
        node: false,
    };
    let tenant = admin.create_token(&request).await.unwrap().token;
    assert_eq!(scrape(&control, Some(&tenant)).await.0, 403);
    assert_eq!(scrape(&control, None).await.0, 401);
    let made_up = control.raw_http().get(format!("{}/api/v1/namespaces/metered/no-such-kind", control.api_url));
    made_up.bearer_auth(&tenant).send().await.unwrap();
    let (_, last) = scrape(&control, Some(&admin_token)).await;
    assert!(!last.contains("no-such-kind"), "a label value a caller made up:\n{last}");
    promtool_check(&last);
}

/// Runs `hello` on node n1 and has it answer `requests` requests; the HTTP client it used.
async fn serve_hello(control: &ControlProcess, node: &common::NodeProcess, requests: usize) -> reqwest::Client {
    common::workloads::apply(control, "hello", &common::workloads::workload_yaml("hello", "$HELLO", "  replicas: 1\n"));
    common::workloads::wait_running(&control.client(), "hello", 1, Some("n1"), Duration::from_secs(20)).await;
    let http = common::workloads::http();
    for _ in 0..requests {
        assert_eq!(common::workloads::get(&http, &node.ingress, "hello.default.localhost", "/").await.0, 200);
    }
    http
}

#[tokio::test]
async fn a_node_serves_its_workloads_metrics_through_the_control_plane_to_the_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = common::NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let admin_token = control.client_config().token;
    let http = serve_hello(&control, &node, 5).await;
    let url = format!("{}/api/v1/nodes/n1/metrics", control.api_url);
    let response = control.raw_http().get(&url).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let answered = r#"shoal_node_workload_requests_total{namespace="default",workload="hello",code="2xx"}"#;
    assert_eq!(sample(&text, answered), Some(5.0), "{text}");
    let seconds = r#"shoal_node_workload_request_seconds_total{namespace="default",workload="hello"}"#;
    assert!(sample(&text, seconds).is_some_and(|s| s > 0.0), "{text}");
    let series = |name: &str, workload: &str| format!(r#"{name}{{namespace="default",workload="{workload}"}}"#);
    assert_eq!(sample(&text, &series("shoal_node_workload_instances", "hello")), Some(1.0), "{text}");
    let idle = sample(&text, &series("shoal_node_workload_memory_bytes", "hello"));
    assert_eq!(idle, Some(0.0), "every request has a store of its own: nothing is held between them:\n{text}");
    let cpu = sample(&text, &series("shoal_node_workload_cpu_seconds_total", "hello"));
    assert!(cpu.is_some_and(|s| s > 0.0), "its requests' time on the threads:\n{text}");
    assert_eq!(sample(&text, &series("shoal_node_workload_restarts_total", "hello")), None, "http never restarts");

    // What a request holds is counted while it runs.
    common::workloads::apply(&control, "big", &common::workloads::workload_yaml("big", "$TROUBLE", "  replicas: 1\n"));
    common::workloads::wait_running(&admin, "big", 1, Some("n1"), std::time::Duration::from_secs(20)).await;
    let (client, ingress) = (http.clone(), node.ingress.clone());
    let holding = tokio::spawn(async move {
        common::workloads::get(&client, &ingress, "big.default.localhost", "/hold/16/5000").await.0
    });
    let memory = series("shoal_node_workload_memory_bytes", "big");
    common::wait_for(std::time::Duration::from_secs(20), "a request's 16 MiB counted", || async {
        let response = control.raw_http().get(&url).bearer_auth(&admin_token).send().await.ok()?;
        sample(&response.text().await.ok()?, &memory).filter(|m| *m >= 16.0 * 1024.0 * 1024.0)
    })
    .await;
    assert_eq!(holding.await.unwrap(), 200);

    // A command that exits restarts, and its restarts are counted.
    let crash = common::workloads::workload_yaml(
        "crash",
        "$CRASH",
        "  type: command\n  replicas: 1\n  env:\n  - name: CRASH_AFTER_MS\n    value: \"20\"\n",
    );
    common::workloads::apply(&control, "crash", &crash);
    let restarts = series("shoal_node_workload_restarts_total", "crash");
    let text = common::wait_for(std::time::Duration::from_secs(30), "the command's restarts counted", || async {
        let response = control.raw_http().get(&url).bearer_auth(&admin_token).send().await.ok()?;
        let text = response.text().await.ok()?;
        sample(&text, &restarts).is_some_and(|n| n >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "shoal_node_instances"), Some(3.0), "{text}");
    promtool_check(&text);
    let (_, control_text) = scrape(&control, Some(&admin_token)).await;
    let bound = sample(&control_text, "shoal_scheduler_bind_duration_seconds_count");
    assert!(bound.is_some_and(|n| n >= 3.0), "three instances bound:\n{control_text}");
    assert_eq!(sample(&control_text, "shoal_scheduler_pending_instances"), Some(0.0), "{control_text}");

    let request =
        TokenRequest { name: Name::new("t").unwrap(), namespaces: vec![Name::new("default").unwrap()], node: false };
    let tenant = admin.create_token(&request).await.unwrap().token;
    let refused = control.raw_http().get(&url).bearer_auth(&tenant).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let missing = control.raw_http().get(format!("{}/api/v1/nodes/n9/metrics", control.api_url));
    assert_eq!(missing.bearer_auth(&admin_token).send().await.unwrap().status(), 404);
}

/// A Prometheus server, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping every second the control plane's `/metrics` and,
    /// through it, `node`'s, with the admin's token.
    fn start(dir: &std::path::Path, control: &ControlProcess, node: &str) -> Prometheus {
        let config = control.client_config();
        std::fs::write(dir.join("ca.pem"), &config.ca).unwrap();
        std::fs::write(dir.join("token"), &config.token).unwrap();
        let target = control.api_url.trim_start_matches("https://");
        let job = |name: &str, path: &str| {
            format!(
                "  - job_name: {name}\n    scheme: https\n    metrics_path: {path}\n    tls_config: {{ca_file: {ca}}}\n    authorization: {{credentials_file: {token}}}\n    static_configs: [{{targets: ['{target}']}}]\n",
                ca = dir.join("ca.pem").display(),
                token = dir.join("token").display(),
            )
        };
        let yaml = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n{}{}",
            job("control", "/metrics"),
            job("node", &format!("/api/v1/nodes/{node}/metrics")),
        );
        std::fs::write(dir.join("prometheus.yml"), yaml).unwrap();
        let listen = common::fixed_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus { child, url: format!("http://{listen}") }
    }

    /// The samples of an instant `query`, as (labels, value).
    async fn query(&self, query: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.url), [("query", query)]).ok()?;
        let response = reqwest::Client::new().get(url).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let results = body["data"]["result"].as_array()?;
        results.iter().map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?))).collect()
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_control_plane_and_a_node_through_it() {
    if !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(&dir.path().join("control"), &[]);
    let node = common::NodeProcess::start(&control, "n1", &[]);
    serve_hello(&control, &node, 3).await;
    let prometheus = Prometheus::start(dir.path(), &control, "n1");
    let timeout = std::time::Duration::from_secs(60);
    let up = common::wait_for(timeout, "Prometheus to scrape both targets", || async {
        let up = prometheus.query("up").await?;
        (up.len() == 2 && up.iter().all(|(_, v)| *v == 1.0)).then_some(up)
    })
    .await;
    assert!(up.iter().any(|(m, _)| m["job"] == "node"), "{up:?}");
    let answered = r#"shoal_node_workload_requests_total{workload="hello",code="2xx"}"#;
    let requests = common::wait_for(timeout, "the node's request count in Prometheus", || async {
        prometheus.query(answered).await.filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(requests[0].1, 3.0, "{requests:?}");
    let leader = prometheus.query("shoal_raft_is_leader").await.unwrap();
    assert_eq!(leader.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [1.0], "{leader:?}");
}

/// The row of `output` (a `shoal top` table) whose cells include every one of `cells`.
fn row_with<'a>(output: &'a str, cells: &[&str]) -> Option<Vec<&'a str>> {
    output.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|row| cells.iter().all(|c| row.contains(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_top_shows_requests_cpu_and_memory_of_nodes_workloads_and_instances() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = common::NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    common::workloads::apply(&control, "big", &common::workloads::workload_yaml("big", "$TROUBLE", "  replicas: 1\n"));
    let instances = common::workloads::wait_running(&admin, "big", 1, Some("n1"), Duration::from_secs(20)).await;
    let instance = instances[0].metadata.name.to_string();
    // Requests all the while, each holding 8 MiB for 100 ms.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (http, ingress, stop) = (common::workloads::http(), node.ingress.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                common::workloads::get(&http, &ingress, "big.default.localhost", "/hold/8/100").await;
            }
        }
    });
    let top = |what: &'static str| {
        let control = &control;
        async move {
            let output = tokio::task::block_in_place(|| control.cli(&["top", what, "--interval", "1500ms"]));
            common::ok_stdout(&output)
        }
    };
    let requests_per_second = |cell: &str| cell.parse::<f64>().unwrap();

    let workloads = top("workloads").await;
    let row = row_with(&workloads, &["default", "big"]).unwrap_or_else(|| panic!("no row for big:\n{workloads}"));
    assert_eq!(row[2], "1", "one instance:\n{workloads}");
    let rate = requests_per_second(row[3]);
    assert!((2.0..=12.0).contains(&rate), "about 9 requests a second:\n{workloads}");
    assert!(row[4].ends_with('m'), "{workloads}");

    let listed = top("instances").await;
    let row =
        row_with(&listed, &[&instance, "big", "n1"]).unwrap_or_else(|| panic!("no row for {instance}:\n{listed}"));
    assert!(requests_per_second(row[4]) > 1.0, "{listed}");

    let nodes = top("nodes").await;
    let row = row_with(&nodes, &["n1"]).unwrap_or_else(|| panic!("no row for n1:\n{nodes}"));
    assert_eq!(row[1], "1", "{nodes}");
    assert!(requests_per_second(row[2]) > 1.0, "{nodes}");
    stop.cancel();
    load.await.unwrap();

    // Memory is what requests hold: one held long enough is seen.
    let (http, ingress) = (common::workloads::http(), node.ingress.clone());
    let holding = tokio::spawn(async move {
        common::workloads::get(&http, &ingress, "big.default.localhost", "/hold/32/4000").await.0
    });
    let listed = common::wait_for(Duration::from_secs(20), "top to see 32 MiB held", || async {
        let listed = top("instances").await;
        let row = row_with(&listed, &[&instance])?;
        let memory = row[6].strip_suffix("Mi")?.parse::<f64>().ok()?;
        (memory >= 32.0).then_some(listed.clone())
    })
    .await;
    assert!(listed.contains("n1"), "{listed}");
    assert_eq!(holding.await.unwrap(), 200);

    // A tenant cannot read the nodes' metrics, and is told so.
    let request =
        TokenRequest { name: Name::new("t").unwrap(), namespaces: vec![Name::new("default").unwrap()], node: false };
    let tenant = admin.create_token(&request).await.unwrap().token;
    let refused = tokio::task::block_in_place(|| {
        std::process::Command::new(common::shoal_bin())
            .args(["top", "workloads", "--token", &tenant])
            .env("SHOAL_CONFIG", &control.config_path)
            .output()
            .unwrap()
    });
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin"), "{refused:?}");
}

fn object_json(kind: shoal_api::Kind, yaml: serde_json::Value) -> shoal_api::AnyObject {
    shoal_api::AnyObject::from_json(kind, &yaml).unwrap()
}

/// Every object the admin lists of `kinds`: (kind, namespace/name, resourceVersion).
async fn inventory(client: &shoal_api::Client) -> Vec<(String, String, u64)> {
    use shoal_api::Kind;
    let mut all = Vec::new();
    // Not Workloads: their status is the controllers', who may write it again on the new cluster.
    for kind in [Kind::Namespace, Kind::Config, Kind::Secret] {
        for object in client.list(kind, None, None).await.unwrap().items {
            let meta = object.meta();
            let ns = meta.namespace.as_ref().map_or(String::new(), |n| n.to_string());
            all.push((format!("{kind:?}"), format!("{ns}/{}", meta.name), meta.resource_version.unwrap_or_default()));
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_fresh_cluster_has_every_object_module_secret_and_token() {
    use shoal_api::Kind;
    let dir = tempfile::tempdir().unwrap();
    let old = ControlProcess::start(&dir.path().join("old"), &[]);
    let admin = old.client();
    admin.create(&namespace("shop")).await.unwrap();
    let module = common::with_custom_section(common::EMPTY_MODULE, "pad", &common::noise(20 << 20, 5));
    let reference = admin.put_module("shop", module.clone()).await.unwrap();
    let spec = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 1, "module": reference}});
    admin.create(&object_json(Kind::Workload, spec)).await.unwrap();
    let config = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Config",
        "metadata": {"name": "settings", "namespace": "shop"}, "spec": {"data": {"mode": "fast"}}});
    admin.create(&object_json(Kind::Config, config)).await.unwrap();
    let secret = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"}, "spec": {"data": {"password": "hunter2"}}});
    admin.create(&object_json(Kind::Secret, secret)).await.unwrap();
    let request =
        TokenRequest { name: Name::new("shop").unwrap(), namespaces: vec![Name::new("shop").unwrap()], node: false };
    let tenant_token = admin.create_token(&request).await.unwrap().token;

    let backup = dir.path().join("cluster.backup");
    let saved = common::ok_stdout(&old.cli(&["snapshot", "save", backup.to_str().unwrap()]));
    assert!(saved.contains(" 1 modules,"), "{saved}");
    let status = common::ok_stdout(&old.cli(&["snapshot", "status", backup.to_str().unwrap()]));
    let before = inventory(&admin).await;
    let revision = admin.cluster_status().await.unwrap().revision;
    assert!(
        status.contains(&format!("revision {revision},")),
        "the backup is at the last revision {revision}: {status}"
    );
    assert!(!std::fs::read(&backup).unwrap().windows(7).any(|w| w == b"hunter2"), "a Secret in the clear");

    // A damaged copy, a PKI that is not the cluster's, and a used data directory are refused.
    let bytes = std::fs::read(&backup).unwrap();
    let cut = dir.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert!(!old.cli(&["snapshot", "status", cut.to_str().unwrap()]).status.success());
    let wrong_pki = dir.path().join("wrong-pki");
    std::fs::create_dir(&wrong_pki).unwrap();
    for entry in std::fs::read_dir(&old.pki_dir).unwrap().flatten() {
        std::fs::copy(entry.path(), wrong_pki.join(entry.file_name())).unwrap();
    }
    std::fs::write(wrong_pki.join("secrets.key"), "ab".repeat(32)).unwrap();
    let restore = |into: &std::path::Path, pki: &std::path::Path, raft: &str| {
        old.cli(&[
            "snapshot",
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            into.to_str().unwrap(),
            "--pki-from",
            pki.to_str().unwrap(),
            "--raft-address",
            raft,
        ])
    };
    let raft = common::fixed_addr();
    let refused = restore(&dir.path().join("wrong"), &wrong_pki, &raft);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("secrets.key does not open"), "{refused:?}");
    let refused = restore(&old.data_dir, &old.pki_dir, &raft);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds a store already"), "{refused:?}");

    // The restore, started as a new cluster: the same objects at the same resourceVersions.
    let restored_dir = dir.path().join("new");
    common::ok_stdout(&restore(&restored_dir, &old.pki_dir, &raft));
    drop(old);
    let new = ControlProcess::start(&restored_dir, &["--raft-listen", &raft]);
    let admin = new.client();
    assert_eq!(inventory(&admin).await, before);
    let shown = admin.get_secret_shown("shop", "db").await.unwrap();
    assert_eq!(serde_json::to_value(&shown).unwrap()["spec"]["data"]["password"], "hunter2");
    admin.get(Kind::Workload, Some("shop"), "web").await.unwrap();
    let hex = reference.strip_prefix("sha256:").unwrap();
    assert!(admin.has_module("shop", hex).await.unwrap());
    assert_eq!(std::fs::read(restored_dir.join("modules").join(hex)).unwrap(), module);
    let tenant = admin.with_token(&tenant_token);
    tenant.get(Kind::Config, Some("shop"), "settings").await.unwrap();

    // Revisions continue after the backup's: an update with the resourceVersion read before it
    // is taken, and a watch from that revision sees only what came after.
    let settings = admin.get(Kind::Config, Some("shop"), "settings").await.unwrap();
    let mut changed = serde_json::to_value(&settings).unwrap();
    changed["spec"]["data"]["mode"] = "slow".into();
    let updated = admin.put(&object_json(Kind::Config, changed)).await.unwrap();
    let written = updated.meta().resource_version.unwrap();
    assert!(written > revision, "revision {written} after the backup's {revision}");
    assert!(admin.cluster_status().await.unwrap().revision >= written);
}
