//! The app platform end to end: Secrets and Configs (sealed at rest, redacted on read, given to
//! guests as env, files and `wasi:config`, rolled out on change).

mod common;

use std::time::Duration;

use common::workloads::{apply, get, http, instances_of, wait_running};
use common::{ControlProcess, NodeProcess, namespace, ok_stdout, wait_for};
use shoal_api::resources::event::EventKind;
use shoal_api::resources::secret::REDACTED;
use shoal_api::token::TokenRequest;
use shoal_api::{AnyObject, Client, Kind, Name, Reason};

fn secret(ns: &str, name: &str, data: serde_json::Value) -> AnyObject {
    AnyObject::from_json(
        Kind::Secret,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns}, "spec": {"data": data}}),
    )
    .unwrap()
}

fn data_of(object: &AnyObject) -> std::collections::BTreeMap<String, String> {
    match object {
        AnyObject::Secret(s) => s.spec.data.clone(),
        AnyObject::Config(c) => c.spec.data.clone(),
        other => panic!("not a secret or config: {other:?}"),
    }
}

/// A tenant client of `ns`, which it makes.
async fn tenant(admin: &Client, ns: &str) -> Client {
    admin.create(&namespace(ns)).await.unwrap();
    let request = TokenRequest { name: Name::new(ns).unwrap(), namespaces: vec![Name::new(ns).unwrap()], node: false };
    admin.with_token(&admin.create_token(&request).await.unwrap().token)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_redacted_on_read_and_opened_only_for_their_namespace_or_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let (alpha, beta) = (tenant(&admin, "alpha").await, tenant(&admin, "beta").await);
    let plaintext = format!("pw-{}", std::process::id() as u64 * 7919);
    let written =
        alpha.create(&secret("alpha", "db", serde_json::json!({"password": plaintext, "user": "app"}))).await.unwrap();
    assert_eq!(data_of(&written)["password"], REDACTED, "a write answers without the values");

    // Reads redact unless asked, and only a token for the namespace may ask.
    let read = alpha.get(Kind::Secret, Some("alpha"), "db").await.unwrap();
    assert_eq!(data_of(&read), [("password".into(), REDACTED.into()), ("user".into(), REDACTED.into())].into());
    assert_eq!(data_of(&alpha.get_secret_shown("alpha", "db").await.unwrap())["password"], plaintext);
    assert_eq!(data_of(&admin.get_secret_shown("alpha", "db").await.unwrap())["user"], "app");
    let refused = beta.get_secret_shown("alpha", "db").await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    let listed = alpha.list(Kind::Secret, Some("alpha"), None).await.unwrap();
    assert_eq!(data_of(&listed.items[0])["password"], REDACTED);
    let yaml = ok_stdout(&control.cli(&["get", "secret", "db", "-n", "alpha", "-o", "yaml"]));
    assert!(yaml.contains(REDACTED) && !yaml.contains(&plaintext), "{yaml}");
    let shown = ok_stdout(&control.cli(&["get", "secret", "db", "-n", "alpha", "-o", "yaml", "--show-secrets"]));
    assert!(shown.contains(&plaintext), "{shown}");
    let table = ok_stdout(&control.cli(&["get", "secrets", "-n", "alpha"]));
    assert!(table.contains("db") && table.contains('2') && !table.contains(&plaintext), "{table}");

    // A watch shows no value either, not even sealed.
    use futures::StreamExt;
    let mut watch = Box::pin(alpha.watch(Kind::Secret, Some("alpha"), 0).await.unwrap());
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(data_of(&event.object)["password"], REDACTED);

    // A redacted read applied back is refused, not taken as the value; a Secret has no status.
    let refused = alpha.put(&read).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    assert!(refused.to_string().contains("spec.data.password"), "{refused}");
    let refused = admin.put_status(&read).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::NotFound), "{refused}");
    assert_eq!(data_of(&alpha.get_secret_shown("alpha", "db").await.unwrap())["password"], plaintext, "unharmed");

    // Writing the same values again stores nothing new (so it rolls nothing out).
    let again =
        alpha.put(&secret("alpha", "db", serde_json::json!({"password": plaintext, "user": "app"}))).await.unwrap();
    assert_eq!(again.meta().resource_version, written.meta().resource_version);

    // An instance's values go to the node it is bound to, and to no other node or tenant.
    let module = format!("sha256:{}", "0".repeat(64));
    let instance = |name: &str, env: serde_json::Value| {
        AnyObject::from_json(
            Kind::Instance,
            &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Instance",
                "metadata": {"name": name, "namespace": "alpha"},
                "spec": {"module": module, "node": "n2", "env": env}}),
        )
        .unwrap()
    };
    let from = |key: &str| serde_json::json!([{"name": "PASSWORD", "valueFrom": {"secret": "db", "key": key}}]);
    admin.create(&instance("web-1", from("password"))).await.unwrap();
    admin.create(&instance("web-2", from("pasword"))).await.unwrap();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let request = TokenRequest { name: Name::new(name).unwrap(), namespaces: Vec::new(), node: true };
        nodes.push(admin.with_token(&admin.create_token(&request).await.unwrap().token));
    }
    let values = nodes[1].instance_values("alpha", "web-1").await.unwrap();
    assert_eq!(values.env, vec![("PASSWORD".to_owned(), plaintext.clone())]);
    assert!(!format!("{values:?}").contains(&plaintext), "values are never printed in debug output");
    for (who, client) in [("another node", &nodes[0]), ("the tenant", &alpha)] {
        let refused = client.instance_values("alpha", "web-1").await.unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::Forbidden), "{who}: {refused}");
    }
    // Values are bounded however many places name one large key, and end with the instance.
    let large = "x".repeat(600 * 1024);
    alpha.create(&secret("alpha", "large", serde_json::json!({"blob": large}))).await.unwrap();
    let twice = serde_json::json!([{"name": "A", "valueFrom": {"secret": "large", "key": "blob"}},
        {"name": "B", "valueFrom": {"secret": "large", "key": "blob"}}]);
    admin.create(&instance("web-3", twice)).await.unwrap();
    let refused = nodes[1].instance_values("alpha", "web-3").await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    assert!(refused.to_string().contains("at most 1048576"), "{refused}");
    let mut ended = admin.get(Kind::Instance, Some("alpha"), "web-1").await.unwrap();
    let AnyObject::Instance(i) = &mut ended else { unreachable!() };
    i.status = Some(shoal_api::resources::instance::InstanceStatus {
        phase: shoal_api::resources::instance::Phase::Succeeded,
        ..Default::default()
    });
    nodes[1].put_status(&ended).await.unwrap();
    let refused = nodes[1].instance_values("alpha", "web-1").await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Conflict), "{refused}");
    let missing = nodes[1].instance_values("alpha", "web-2").await.unwrap_err();
    assert_eq!(missing.reason(), Some(Reason::Invalid), "{missing}");
    assert!(missing.to_string().contains(r#"secret "db" in namespace "alpha" has no key "pasword""#), "{missing}");

    // Nothing on disk holds the value in the clear: not the raft log, the state machine, a
    // snapshot, nor a log line.
    let needle = plaintext.as_bytes();
    for file in files_under(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the secret in the clear", file.display());
    }
    assert!(!control.log().contains(&plaintext));
}

#[tokio::test]
async fn a_workload_takes_values_as_env_files_and_wasi_config_and_rolls_out_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/settings/app.yaml");
    ok_stdout(&control.cli(&["apply", "-f", example]));
    let first = wait_running(&admin, "settings", 1, None, Duration::from_secs(30)).await;
    let http = http();
    let host = "settings.default.localhost";
    for (path, want) in [
        ("/env/DB_USER", "app"),
        ("/env/COLOR", "teal"),
        ("/env/MODE", "demo"),
        ("/config/greeting", "hello from a Config"),
        ("/config/region", "local"),
        ("/file/etc/db/password", "correct-horse-battery-staple"),
        ("/file/etc/db/user", "app"),
    ] {
        assert_eq!(get(&http, &node.ingress, host, path).await, (200, want.to_owned()), "{path}");
    }
    // Nothing else: no host variable, no file beside the granted ones, no write.
    assert_eq!(get(&http, &node.ingress, host, "/env/HOME").await.0, 404);
    assert_eq!(get(&http, &node.ingress, host, "/file/etc/passwd").await.0, 404);
    let prefix = format!("default.{}.", first[0].metadata.name);
    let files = std::fs::read_dir(dir.path().join("node-n1/values"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .expect("the instance's files are on the node while it runs");
    assert!(files.join("0/password").exists());

    // Re-applying changes nothing and rolls nothing out; a changed Secret rolls it out.
    let again = ok_stdout(&control.cli(&["apply", "-f", example]));
    assert!(again.contains("secrets/default/db unchanged"), "{again}");
    let mut changed = admin.get_secret_shown("default", "db").await.unwrap();
    let AnyObject::Secret(s) = &mut changed else { unreachable!() };
    s.spec.data.insert("password".into(), "tr0ub4dor".into());
    s.metadata.resource_version = None;
    admin.put(&changed).await.unwrap();
    wait_for(Duration::from_secs(30), "the new password to be served", || async {
        (get(&http, &node.ingress, host, "/file/etc/db/password").await.1 == "tr0ub4dor").then_some(())
    })
    .await;
    let now = wait_running(&admin, "settings", 1, None, Duration::from_secs(30)).await;
    assert_ne!(now[0].metadata.name, first[0].metadata.name, "a new instance, not the old one edited");
    wait_for(Duration::from_secs(10), "the old instance's files to be removed", || async {
        (!files.exists()).then_some(())
    })
    .await;

    // A Secret that is not there holds the instance back, says why, and is waited for.
    apply(
        &control,
        "late",
        "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: late\n  namespace: default\nspec:\n  module: $SETTINGS\n  env:\n  - name: TOKEN\n    valueFrom: {secret: late, key: token}\n",
    );
    let held = wait_for(Duration::from_secs(30), "the instance to say its values are missing", || async {
        let all = instances_of(&admin, "late").await;
        all.into_iter().find(|i| i.status.as_ref().is_some_and(|s| s.reason == "ValuesUnavailable"))
    })
    .await;
    let status = held.status.clone().unwrap();
    assert!(status.message.contains(r#"secret "late" not found in namespace "default""#), "{status:?}");
    let table = ok_stdout(&control.cli(&["get", "instances"]));
    assert!(table.contains("ValuesUnavailable"), "{table}");
    wait_for(Duration::from_secs(10), "a ValuesUnavailable event", || async {
        let events = admin.list_of::<EventKind>(Some("default")).await.unwrap().items;
        events.iter().any(|e| e.spec.reason == "ValuesUnavailable" && e.spec.message.contains("late")).then_some(())
    })
    .await;
    admin.create(&secret("default", "late", serde_json::json!({"token": "t0k3n"}))).await.unwrap();
    wait_running(&admin, "late", 1, None, Duration::from_secs(30)).await;
    let (code, body) = get(&http, &node.ingress, "late.default.localhost", "/env/TOKEN").await;
    assert_eq!((code, body.as_str()), (200, "t0k3n"));
    assert!(!node.log().contains("t0k3n") && !control.log().contains("tr0ub4dor"), "values are never logged");
}

/// The names of every instance of `workload` seen while waiting for `until` of them.
async fn distinct_instances(client: &Client, workload: &str, until: usize) -> std::collections::BTreeSet<String> {
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait_for(Duration::from_secs(30), &format!("{until} different instances of {workload}"), || async {
        let found = instances_of(client, workload).await;
        let mut seen = seen.lock().unwrap();
        seen.extend(found.into_iter().map(|i| i.metadata.name.to_string()));
        (seen.len() >= until).then(|| seen.clone())
    })
    .await
}

async fn event_saying(client: &Client, reason: &str, words: &str) {
    wait_for(Duration::from_secs(15), &format!("a {reason} event saying {words:?}"), || async {
        let events = client.list_of::<EventKind>(Some("default")).await.unwrap().items;
        events.iter().any(|e| e.spec.reason == reason && e.spec.message.contains(words)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn failed_liveness_and_startup_probes_replace_an_instance_and_a_silent_command_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let http_probe = |kind: &str, path: &str| {
        format!("  probes:\n    {kind}:\n      path: {path}\n      period: 100ms\n      failureThreshold: 2\n")
    };
    let command = |extra: &str| format!("  type: command\n  probes:\n    livenessTimeout: 400ms\n{extra}");
    let workload = |name: &str, module: &str, extra: &str| common::workloads::workload_yaml(name, module, extra);
    let yaml = [
        workload("healthy", "$TROUBLE", &http_probe("liveness", "/")),
        workload("sick", "$TROUBLE", &http_probe("liveness", "/unready")),
        workload("stuck", "$TROUBLE", &http_probe("startup", "/unready")),
        workload("chatty", "$WORKER", &command("  env:\n  - name: INTERVAL_MS\n    value: \"50\"\n")),
        workload("quiet", "$WORKER", &command("  env:\n  - name: INTERVAL_MS\n    value: \"600000\"\n")),
        workload("spin", "$MISBEHAVE", &command("  args: [spin]\n")),
    ]
    .join("---\n");
    apply(&control, "probes", &yaml);
    let healthy = wait_running(&admin, "healthy", 1, None, Duration::from_secs(30)).await;

    // Failing liveness (or never passing startup) ends the instance, and a new one replaces it.
    distinct_instances(&admin, "sick", 2).await;
    event_saying(&admin, "Unhealthy", "liveness probe GET /unready failed 2 times in a row").await;
    distinct_instances(&admin, "stuck", 2).await;
    event_saying(&admin, "Unhealthy", "startup probe GET /unready failed 2 times in a row").await;

    // A command that writes nothing for its liveness timeout is stopped and restarted, even one
    // that spins without yielding.
    for name in ["quiet", "spin"] {
        wait_for(Duration::from_secs(30), &format!("{name} to be restarted for its silence"), || async {
            let all = instances_of(&admin, name).await;
            all.into_iter().find(|i| {
                i.status.as_ref().is_some_and(|s| {
                    s.restarts >= 1 && s.last_exit.as_ref().is_some_and(|e| e.reason == "LivenessTimeout")
                })
            })
        })
        .await;
    }
    event_saying(&admin, "Unhealthy", "wrote no output for 400ms").await;

    // Their neighbours, healthy and talkative, were left alone all along.
    let still = wait_running(&admin, "healthy", 1, None, Duration::from_secs(5)).await;
    assert_eq!(still[0].metadata.name, healthy[0].metadata.name);
    let chatty = instances_of(&admin, "chatty").await;
    assert_eq!(chatty.len(), 1);
    assert_eq!(chatty[0].status.as_ref().map(|s| s.restarts), Some(0), "{chatty:?}");
}

fn job_yaml(name: &str, module: &str, spec: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  template:\n    module: {module}\n{spec}"
    )
}

async fn job_status(client: &Client, name: &str) -> Option<shoal_api::resources::job::JobStatus> {
    match client.get(Kind::Job, Some("default"), name).await {
        Ok(AnyObject::Job(job)) => job.status,
        _ => None,
    }
}

async fn runs_of(client: &Client, job: &str) -> usize {
    let selector = format!("{}={job}", shoal_api::resources::job::JOB_LABEL);
    client.list(Kind::Instance, Some("default"), Some(&selector)).await.unwrap().items.len()
}

#[tokio::test]
async fn jobs_run_to_completion_retry_failures_within_their_limit_and_deadline_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--job-backoff", "100ms"]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let worker = |count: &str| {
        format!("    env:\n    - name: COUNT\n      value: \"{count}\"\n    - name: INTERVAL_MS\n      value: \"10\"\n")
    };
    let yaml = [
        job_yaml("done", "$WORKER", &format!("{}  completions: 3\n  parallelism: 2\n", worker("2"))),
        job_yaml("brief", "$WORKER", &format!("{}  ttlAfterFinished: 500ms\n", worker("1"))),
        job_yaml("fails", "$MISBEHAVE", "    args: [exit, \"3\"]\n  backoffLimit: 2\n"),
        job_yaml(
            "late",
            "$WORKER",
            &format!("{}  activeDeadline: 1s\n  parallelism: 2\n  completions: 2\n", worker("100000")),
        ),
    ]
    .join("---\n");
    apply(&control, "jobs", &yaml);

    let finished = |name: &'static str, type_: &'static str| {
        let admin = admin.clone();
        async move {
            wait_for(Duration::from_secs(30), &format!("job {name} to be {type_}"), || async {
                let status = job_status(&admin, name).await?;
                status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True").then_some(status)
            })
            .await
        }
    };
    let done = finished("done", "Complete").await;
    assert_eq!((done.succeeded, done.failed), (3, 0), "{done:?}");
    let logs = ok_stdout(&control.cli(&["logs", "job/done"]));
    assert_eq!(logs.matches("INFO worker tick 2").count(), 3, "three runs, each to its end:\n{logs}");
    let table = ok_stdout(&control.cli(&["get", "jobs"]));
    assert!(table.lines().any(|l| l.contains("done") && l.contains("Complete") && l.contains("3/3")), "{table}");

    let fails = finished("fails", "Failed").await;
    assert_eq!(fails.failed, 3, "backoffLimit 2: the third failure ends it: {fails:?}");
    assert_eq!(fails.conditions[0].reason, "BackoffLimitExceeded");
    assert_eq!(runs_of(&admin, "fails").await, 3, "failed runs stay, with their logs");

    let late = finished("late", "Failed").await;
    assert_eq!(late.conditions[0].reason, "DeadlineExceeded");
    wait_for(Duration::from_secs(15), "the late job's runs to be stopped", || async {
        (runs_of(&admin, "late").await == 0).then_some(())
    })
    .await;
    event_saying(&admin, "DeadlineExceeded", "activeDeadline").await;

    wait_for(Duration::from_secs(15), "the brief job to be deleted after its ttl", || async {
        let gone =
            admin.get(Kind::Job, Some("default"), "brief").await.is_err_and(|e| e.reason() == Some(Reason::NotFound));
        (gone && runs_of(&admin, "brief").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cronjob_makes_jobs_on_a_per_second_schedule_never_two_at_once_under_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    // Each run takes about 1.5 s, on a schedule of every second.
    let yaml = "apiVersion: shoal.dev/v1\nkind: CronJob\nmetadata:\n  name: tick\n  namespace: default\nspec:\n  schedule: \"* * * * * *\"\n  timeZone: Europe/Paris\n  concurrencyPolicy: Forbid\n  successfulJobsHistoryLimit: 2\n  jobTemplate:\n    template:\n      module: $WORKER\n      env:\n      - name: COUNT\n        value: \"2\"\n      - name: INTERVAL_MS\n        value: \"750\"\n";
    apply(&control, "cron", yaml);
    let mut seen = std::collections::BTreeSet::new();
    let mut most_active = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 {
        assert!(std::time::Instant::now() < deadline, "only {} jobs made in 30 s: {seen:?}", seen.len());
        let jobs = admin.list_of::<shoal_api::resources::job::JobKind>(Some("default")).await.unwrap().items;
        seen.extend(jobs.iter().map(|j| j.metadata.name.to_string()));
        let running = jobs.iter().filter(|j| j.finished().is_none()).count();
        most_active = most_active.max(running);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most_active, 1, "Forbid: never two of its jobs at once");
    // Completed ones beyond the history limit are deleted.
    wait_for(Duration::from_secs(15), "at most 2 completed jobs kept", || async {
        let jobs = admin.list_of::<shoal_api::resources::job::JobKind>(Some("default")).await.unwrap().items;
        let complete = jobs.iter().filter(|j| j.finished().is_some_and(|c| c.type_ == "Complete")).count();
        (complete <= 2 && seen.len() >= 4).then_some(())
    })
    .await;
    let table = ok_stdout(&control.cli(&["get", "cronjobs"]));
    assert!(table.contains("tick") && table.contains("* * * * * *"), "{table}");
    // Deleting the CronJob deletes its Jobs.
    admin.delete(Kind::CronJob, Some("default"), "tick").await.unwrap();
    wait_for(Duration::from_secs(15), "its jobs to go with it", || async {
        admin
            .list_of::<shoal_api::resources::job::JobKind>(Some("default"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The autoscaler's last decision for `name` in `default`.
async fn desired_replicas(client: &Client, name: &str) -> Option<u32> {
    match client.get(Kind::Workload, Some("default"), name).await.unwrap() {
        AnyObject::Workload(w) => w.status.and_then(|s| s.desired_replicas),
        other => panic!("not a workload: {other:?}"),
    }
}

#[tokio::test]
async fn an_autoscaled_workload_scales_from_zero_on_a_request_up_under_load_and_back_to_zero_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &["--heartbeat", "250ms"]);
    let admin = control.client();
    let spec = "  replicas: 0\n  concurrency: 4\n  autoscale:\n    min: 0\n    max: 3\n    targetConcurrency: 1\n    stableWindow: 1s\n";
    apply(&control, "web", &common::workloads::workload_yaml("web", "$TROUBLE", spec));
    wait_for(Duration::from_secs(10), "the autoscaler to decide 0 replicas", || async {
        (desired_replicas(&admin, "web").await == Some(0)).then_some(())
    })
    .await;
    assert!(instances_of(&admin, "web").await.is_empty(), "it starts at zero");
    let table = ok_stdout(&control.cli(&["get", "workloads"]));
    assert!(table.contains("0/0"), "{table}");

    // The first request waits at the node while an instance starts, and is answered.
    let client = http();
    let started = std::time::Instant::now();
    let (status, body) = get(&client, &node.ingress, "web.default.localhost", "/").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "answered after {:?}", started.elapsed());
    wait_running(&admin, "web", 1, Some("n1"), Duration::from_secs(10)).await;

    // Three clients each with a request always in flight, at a target of one per instance:
    // three instances (the most allowed), though the first request left only one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (client, ingress, stop) = (client.clone(), node.ingress.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = get(&client, &ingress, "web.default.localhost", "/hold/0/300").await;
                assert_eq!(status, 200);
                answered += 1;
            }
            answered
        }));
    }
    wait_for(Duration::from_secs(20), "3 instances under load", || async {
        let running = instances_of(&admin, "web").await.iter().filter(|i| i.is_ready()).count();
        (running == 3 && desired_replicas(&admin, "web").await == Some(3)).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        assert!(task.await.unwrap() > 0);
    }

    // Idle for the stable window (and a beat or two to report it): back to zero.
    let idle = std::time::Instant::now();
    wait_for(Duration::from_secs(20), "back to zero instances when idle", || async {
        (instances_of(&admin, "web").await.is_empty() && desired_replicas(&admin, "web").await == Some(0)).then_some(())
    })
    .await;
    // The window counts from the end of the last request at the node, a moment before its
    // client saw the answer.
    assert!(idle.elapsed() >= Duration::from_millis(900), "not before the stable window: {:?}", idle.elapsed());

    // At zero again, a request is held and answered again; a workload that is not autoscaled
    // and has no instance is still a 404 at once.
    let (status, body) = get(&client, &node.ingress, "web.default.localhost", "/").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = get(&client, &node.ingress, "nothing.default.localhost", "/").await;
    assert_eq!(status, 404);
}
