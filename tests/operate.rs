//! Operating Shoal end to end: the control plane's `/metrics`, for the admin only, counting what
//! it serves, in an exposition `promtool check metrics` accepts.

mod common;

use common::{ControlProcess, namespace};
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

/// `promtool check metrics` on `text`, when promtool is installed (CI installs it; with
/// `CI=true` its absence fails the test).
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("promtool is needed in CI: {e}"),
        Err(e) => return eprintln!("skipping promtool check metrics: {e} (apt-get install prometheus)"),
    };
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

#[tokio::test]
async fn a_node_serves_its_workloads_metrics_through_the_control_plane_to_the_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = common::NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let admin_token = control.client_config().token;
    common::workloads::apply(
        &control,
        "hello",
        &common::workloads::workload_yaml("hello", "$HELLO", "  replicas: 1\n"),
    );
    common::workloads::wait_running(&admin, "hello", 1, Some("n1"), std::time::Duration::from_secs(20)).await;
    let http = common::workloads::http();
    for _ in 0..5 {
        let (status, _) = common::workloads::get(&http, &node.ingress, "hello.default.localhost", "/").await;
        assert_eq!(status, 200);
    }
    let url = format!("{}/api/v1/nodes/n1/metrics", control.api_url);
    let response = control.raw_http().get(&url).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let answered = r#"shoal_node_workload_requests_total{namespace="default",workload="hello",code="2xx"}"#;
    assert_eq!(sample(&text, answered), Some(5.0), "{text}");
    let seconds = r#"shoal_node_workload_request_seconds_total{namespace="default",workload="hello"}"#;
    assert!(sample(&text, seconds).is_some_and(|s| s > 0.0), "{text}");
    assert_eq!(sample(&text, "shoal_node_instances"), Some(1.0), "{text}");
    promtool_check(&text);

    let request =
        TokenRequest { name: Name::new("t").unwrap(), namespaces: vec![Name::new("default").unwrap()], node: false };
    let tenant = admin.create_token(&request).await.unwrap().token;
    let refused = control.raw_http().get(&url).bearer_auth(&tenant).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let missing = control.raw_http().get(format!("{}/api/v1/nodes/n9/metrics", control.api_url));
    assert_eq!(missing.bearer_auth(&admin_token).send().await.unwrap().status(), 404);
}
