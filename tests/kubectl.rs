//! kubectl's habits, end to end against a real control plane through the `shoal` binary:
//! naming objects (`KIND NAME...`, `KIND/NAME`), output (`-o name|jsonpath=...`,
//! `--show-labels`, `--no-headers`), `get -w`, `delete -l|--all|--ignore-not-found`, `scale`,
//! `events`, contexts and a default namespace, `version`, `completion`.

mod common;

use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ControlProcess, ok_stdout};

/// A Workload named `name` with label `tier`, in `namespace`, and no node to run on.
fn workload(control: &ControlProcess, name: &str, namespace: &str, tier: &str) {
    let yaml = format!(
        "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    tier: {tier}\nspec:\n  module: $HELLO\n  replicas: 1\n"
    );
    common::workloads::apply(control, name, &yaml);
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn objects_are_named_printed_and_deleted_as_kubectl_does() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    for (name, tier) in [("web", "front"), ("api", "back"), ("db", "back")] {
        workload(&control, name, "default", tier);
    }

    // Several names, KIND/NAME, -o name, --no-headers, --show-labels.
    let names = ok_stdout(&control.cli(&["get", "workloads", "web", "api", "-o", "name"]));
    assert_eq!(names, "workload/web\nworkload/api\n");
    control.client().create(&common::namespace("alpha")).await.unwrap();
    let mixed = ok_stdout(&control.cli(&["get", "workload/db", "namespace/alpha", "-o", "name"]));
    assert_eq!(mixed, "workload/db\nnamespace/alpha\n");
    let table = ok_stdout(&control.cli(&["get", "wl", "--no-headers", "--show-labels"]));
    assert!(!table.contains("NAME"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("default") && l.contains("web") && l.ends_with("tier=front")),
        "{table}"
    );
    let missing = control.cli(&["get", "workloads", "web", "nope"]);
    assert!(failed(&missing).contains("nope"), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stdout).contains("web"), "what was found is still shown");

    // jsonpath on one object and on a list.
    let one = ok_stdout(&control.cli(&["get", "workload", "web", "-o", "jsonpath={.spec.replicas}"]));
    assert_eq!(one, "1");
    let path = "jsonpath={.items[*].metadata.name}";
    let all = ok_stdout(&control.cli(&["get", "workloads", "-l", "tier=back", "-o", path]));
    assert_eq!(all, "api db");
    assert!(failed(&control.cli(&["get", "workloads", "-o", "jsonpath={range .items[*]}"])).contains("not supported"));
    assert!(failed(&control.cli(&["get", "workloads", "-o", "xml"])).contains("expected table"));

    // scale, and an autoscaled workload refused with the reason.
    assert_eq!(ok_stdout(&control.cli(&["scale", "workload/web", "--replicas", "3"])), "workload/web scaled to 3\n");
    let replicas = ok_stdout(&control.cli(&["get", "workload/web", "-o", "jsonpath={.spec.replicas}"]));
    assert_eq!(replicas, "3");
    let autoscaled = "  autoscale:\n    min: 0\n    max: 4\n    targetConcurrency: 1\n";
    common::workloads::apply(&control, "auto", &common::workloads::workload_yaml("auto", "$HELLO", autoscaled));
    let refused = failed(&control.cli(&["scale", "workload", "auto", "--replicas", "2"]));
    assert!(refused.contains("autoscaled") && refused.contains("spec.autoscale"), "{refused}");
    assert!(failed(&control.cli(&["scale", "service/web", "--replicas", "2"])).contains("only workloads"));

    // delete: by selector, a missing one with and without --ignore-not-found, then --all.
    let deleted = ok_stdout(&control.cli(&["delete", "workloads", "-l", "tier=back"]));
    assert_eq!(deleted.lines().count(), 2, "{deleted}");
    let left = ok_stdout(&control.cli(&["get", "workloads", "-o", "name"]));
    assert_eq!(left, "workload/auto\nworkload/web\n");
    assert!(!control.cli(&["delete", "workload", "api"]).status.success());
    ok_stdout(&control.cli(&["delete", "workload", "api", "--ignore-not-found"]));
    assert!(failed(&control.cli(&["delete", "workloads"])).contains("--all"), "deleting everything is asked for");
    ok_stdout(&control.cli(&["delete", "workloads", "--all"]));
    assert_eq!(ok_stdout(&control.cli(&["get", "workloads", "-o", "name"])), "");
}

#[tokio::test]
async fn get_watch_prints_each_change_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    workload(&control, "web", "default", "front");
    let mut watcher = Command::new(common::shoal_bin())
        .args(["get", "workloads", "-w", "-o", "jsonpath={.metadata.name}={.spec.replicas}{\"\\n\"}"])
        .env("SHOAL_CONFIG", &control.config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next = || seen.recv_timeout(Duration::from_secs(20)).expect("a line from the watch within 20 s");
    assert_eq!(next(), "web=1", "the list first");
    ok_stdout(&control.cli(&["scale", "workload/web", "--replicas", "2"]));
    // The change comes as it happens (the controller may also write the workload's status).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while next() != "web=2" {
        assert!(std::time::Instant::now() < deadline, "the scale never showed");
    }
    workload(&control, "api", "default", "back");
    while next() != "api=1" {
        assert!(std::time::Instant::now() < deadline, "the new workload never showed");
    }
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}

#[tokio::test]
async fn contexts_choose_the_connection_and_the_namespace_commands_use() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    admin.create(&common::namespace("alpha")).await.unwrap();
    workload(&control, "in-alpha", "alpha", "front");
    workload(&control, "in-default", "default", "front");

    // A tenant context for alpha, with alpha as its namespace.
    let request = shoal_api::token::TokenRequest {
        name: shoal_api::Name::new("alpha").unwrap(),
        namespaces: vec![shoal_api::Name::new("alpha").unwrap()],
        node: false,
    };
    let token_file = dir.path().join("alpha.token");
    std::fs::write(&token_file, admin.create_token(&request).await.unwrap().token).unwrap();
    let token = token_file.to_str().unwrap();
    ok_stdout(&control.cli(&["config", "set-context", "tenant", "--token-file", token, "--namespace", "alpha"]));
    let contexts = ok_stdout(&control.cli(&["config", "get-contexts"]));
    assert!(contexts.lines().any(|l| l.starts_with('*') && l.contains("default")), "{contexts}");
    assert!(contexts.lines().any(|l| l.contains("tenant") && l.ends_with("alpha")), "{contexts}");
    assert!(!std::fs::read_to_string(&control.config_path).unwrap().is_empty());
    assert!(!contexts.contains(&std::fs::read_to_string(&token_file).unwrap()), "a token is never printed");

    ok_stdout(&control.cli(&["config", "use-context", "tenant"]));
    assert_eq!(ok_stdout(&control.cli(&["config", "current-context"])), "tenant\n");
    assert_eq!(ok_stdout(&control.cli(&["get", "workloads", "-o", "name"])), "workload/in-alpha\n");
    assert!(!control.cli(&["get", "workloads", "-n", "default"]).status.success(), "the tenant's token is used");
    // --context picks another for one command.
    let other = ok_stdout(&control.cli(&["get", "workloads", "-o", "name", "--context", "default"]));
    assert_eq!(other, "workload/in-default\n");
    assert!(failed(&control.cli(&["config", "use-context", "nowhere"])).contains("no context"));

    // The admin's own default namespace, and the control plane's rewrite keeps the contexts.
    ok_stdout(&control.cli(&["config", "use-context", "default"]));
    ok_stdout(&control.cli(&["config", "set-namespace", "alpha"]));
    assert_eq!(ok_stdout(&control.cli(&["get", "workloads", "-o", "name"])), "workload/in-alpha\n");
    // A manifest that names no namespace goes to the context's.
    let module = shoal_guest_artifacts::HELLO;
    let yaml = format!("apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: ctx\nspec:\n  module: {module}\n");
    assert_eq!(ok_stdout(&cli_with_stdin(&control, &["apply", "-f", "-"], &yaml)), "workloads/alpha/ctx created\n");
    let written = shoal_api::config::ConfigFile::load(&control.config_path).unwrap();
    shoal_api::ClientConfig { server: written.server.clone(), ca: written.ca.clone(), token: written.token.clone() }
        .save(&control.config_path)
        .unwrap();
    let kept = shoal_api::config::ConfigFile::load(&control.config_path).unwrap();
    assert!(kept.contexts.contains_key("tenant"), "{kept:?}");
    assert!(failed(&control.cli(&["config", "delete-context", "default"])).contains("cannot be deleted"));
    ok_stdout(&control.cli(&["config", "delete-context", "tenant"]));
}

#[tokio::test]
async fn events_version_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    // An instance with no node to go to is reported by the scheduler.
    workload(&control, "stuck", "default", "front");
    let events = common::wait_for(Duration::from_secs(20), "an Event about the stuck instance", || async {
        let out = control.cli(&["events"]);
        let text = ok_stdout(&out);
        text.contains("FailedScheduling").then_some(text)
    })
    .await;
    assert!(events.starts_with("NAMESPACE"), "{events}");
    let about = ok_stdout(&control.cli(&["events", "--for", "workload/stuck", "--no-headers"]));
    assert!(!about.contains("FailedScheduling"), "only Events about the workload itself:\n{about}");

    let version = ok_stdout(&control.cli(&["version"]));
    let release = env!("CARGO_PKG_VERSION");
    assert_eq!(version, format!("client: {release}\nserver: {release}\n"));
    let bash = ok_stdout(&control.cli(&["completion", "bash"]));
    assert!(bash.contains("complete") && bash.contains("shoal"), "{bash}");
    assert!(!control.cli(&["completion", "cmd.exe"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_instances_off_a_node_and_never_below_max_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let _n1 = common::NodeProcess::start(&control, "n1", &[]);
    // maxSurge 1, maxUnavailable 0 (the defaults): both replicas must serve throughout.
    common::workloads::apply(&control, "web", &common::workloads::workload_yaml("web", "$HELLO", "  replicas: 2\n"));
    common::workloads::wait_running(&admin, "web", 2, Some("n1"), Duration::from_secs(30)).await;
    let _n2 = common::NodeProcess::start(&control, "n2", &[]);
    common::wait_for(Duration::from_secs(20), "n2 ready", || async {
        let nodes = ok_stdout(&control.cli(&["get", "nodes", "--no-headers"]));
        nodes.lines().any(|l| l.starts_with("n2") && l.contains(" Ready")).then_some(())
    })
    .await;

    // Watch how many serve while the drain runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (admin, stop) = (admin.clone(), stop.clone());
        async move {
            let (mut least, mut looks) = (usize::MAX, 0);
            while !stop.is_cancelled() || looks == 0 {
                looks += 1;
                let instances = common::workloads::instances_of(&admin, "web").await;
                least = least.min(instances.iter().filter(|i| i.is_ready()).count());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (least, looks)
        }
    });
    let drained = tokio::task::block_in_place(|| control.cli(&["drain", "n1", "--timeout", "60s"]));
    let said = ok_stdout(&drained);
    assert!(said.contains("node/n1 drained"), "{said}");
    stop.cancel();
    let (least, looks) = watcher.await.unwrap();
    assert!(least >= 2, "{least} served at one look of {looks} during the drain (maxUnavailable 0)");
    common::workloads::wait_running(&admin, "web", 2, Some("n2"), Duration::from_secs(30)).await;
    let spec = ok_stdout(&control.cli(&["get", "node/n1", "-o", "jsonpath={.spec.unschedulable} {.spec.draining}"]));
    assert_eq!(spec, "true true");

    // Cordoned, a node takes nothing new; uncordoned, it does again.
    ok_stdout(&control.cli(&["uncordon", "n1"]));
    ok_stdout(&control.cli(&["cordon", "n2"]));
    let spec = ok_stdout(&control.cli(&["get", "node/n1", "node/n2", "-o", "jsonpath={.items[*].spec.unschedulable}"]));
    assert_eq!(spec, "false true", "several objects are a list");
    common::workloads::apply(&control, "more", &common::workloads::workload_yaml("more", "$HELLO", "  replicas: 1\n"));
    common::workloads::wait_running(&admin, "more", 1, Some("n1"), Duration::from_secs(30)).await;
    assert_eq!(common::workloads::instances_of(&admin, "web").await.len(), 2, "a cordon moves nothing");
}

#[tokio::test]
async fn rollout_history_undo_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let _node = common::NodeProcess::start(&control, "n1", &[]);
    let v1 = common::workloads::workload_yaml("web", "$HELLO", "  replicas: 1\n");
    common::workloads::apply(&control, "web", &v1);
    let first = common::workloads::wait_running(&admin, "web", 1, Some("n1"), Duration::from_secs(30)).await;
    let v2 = common::workloads::workload_yaml("web", "$HELLO", "  replicas: 1\n  args: [v2]\n");
    common::workloads::apply(&control, "web", &v2);
    ok_stdout(&control.cli(&["rollout", "status", "workload/web", "--timeout", "60s"]));
    let history = common::wait_for(Duration::from_secs(20), "two revisions", || async {
        let history = ok_stdout(&control.cli(&["rollout", "history", "workload/web"]));
        (history.lines().count() == 3).then_some(history)
    })
    .await;
    assert!(history.lines().nth(1).unwrap().contains("created"), "{history}");
    assert!(history.lines().nth(2).unwrap().starts_with('2') && history.contains("spec changed"), "{history}");
    let shown = ok_stdout(&control.cli(&["rollout", "history", "web", "--revision", "2"]));
    assert!(shown.contains("- v2"), "{shown}");

    // Undo: revision 1's spec comes back, as revision 3.
    assert_eq!(
        ok_stdout(&control.cli(&["rollout", "undo", "workload/web"])),
        "workload/web rolled back to revision 1\n"
    );
    let args = ok_stdout(&control.cli(&["get", "workload/web", "-o", "jsonpath={.spec.args}"]));
    assert_eq!(args, "", "no args, as in revision 1");
    ok_stdout(&control.cli(&["rollout", "status", "workload/web", "--timeout", "60s"]));
    let history = common::wait_for(Duration::from_secs(20), "revision 3", || async {
        let history = ok_stdout(&control.cli(&["rollout", "history", "workload/web"]));
        let numbers: Vec<&str> = history.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        (numbers == ["2", "3"]).then_some(history)
    })
    .await;
    assert!(history.contains("spec changed"), "{history}");
    let stale = control.cli(&["rollout", "undo", "web", "--to-revision", "1"]);
    assert!(failed(&stale).contains("no revision 1"), "revision 1 is now 3");

    // Restart: every instance replaced, nothing else changed.
    let before = common::workloads::wait_running(&admin, "web", 1, Some("n1"), Duration::from_secs(30)).await;
    assert_ne!(before[0].metadata.name, first[0].metadata.name, "the undo replaced the instance");
    assert_eq!(ok_stdout(&control.cli(&["rollout", "restart", "workload/web"])), "workload/web restarted\n");
    ok_stdout(&control.cli(&["rollout", "status", "workload/web", "--timeout", "60s"]));
    let after = common::workloads::wait_running(&admin, "web", 1, Some("n1"), Duration::from_secs(30)).await;
    assert_ne!(after[0].metadata.name, before[0].metadata.name, "a new instance");
    assert!(after[0].spec.args.is_empty());
    let history = ok_stdout(&control.cli(&["rollout", "history", "workload/web"]));
    assert!(history.lines().last().unwrap().contains("restarted at"), "{history}");
    let bad = "  replicas: 1\n  restartedAt: yesterday\n";
    let yaml = common::workloads::workload_yaml("web", "$HELLO", bad).replace("$HELLO", shoal_guest_artifacts::HELLO);
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    assert!(failed(&control.cli(&["apply", "-f", path.to_str().unwrap()])).contains("spec.restartedAt"));
}

/// Runs `shoal ARGS` against `control` with `input` on its stdin.
fn cli_with_stdin(control: &ControlProcess, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(common::shoal_bin())
        .args(args)
        .env("SHOAL_CONFIG", &control.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn apply_from_stdin_a_server_dry_run_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let manifest = |replicas: u32| {
        common::workloads::workload_yaml("web", shoal_guest_artifacts::HELLO, &format!("  replicas: {replicas}\n"))
    };
    let replicas = || ok_stdout(&control.cli(&["get", "workload/web", "-o", "jsonpath={.spec.replicas}"]));

    // A server dry run of something new writes nothing.
    let said = ok_stdout(&cli_with_stdin(&control, &["apply", "--dry-run=server", "-f", "-"], &manifest(1)));
    assert_eq!(said, "workloads/default/web created (server dry run)\n");
    assert!(!control.cli(&["get", "workload/web"]).status.success(), "nothing was written");
    // From stdin, for real.
    let said = ok_stdout(&cli_with_stdin(&control, &["apply", "-f", "-"], &manifest(1)));
    assert_eq!(said, "workloads/default/web created\n");
    assert_eq!(replicas(), "1");

    // A change, dry run: what it would be, and nothing changed; the server's checks apply.
    let said = ok_stdout(&cli_with_stdin(&control, &["apply", "--dry-run=server", "-f", "-"], &manifest(3)));
    assert_eq!(said, "workloads/default/web configured (server dry run)\n");
    let said = ok_stdout(&cli_with_stdin(&control, &["apply", "--dry-run=server", "-f", "-"], &manifest(1)));
    assert_eq!(said, "workloads/default/web unchanged (server dry run)\n");
    assert_eq!(replicas(), "1");
    let refused = cli_with_stdin(&control, &["apply", "--dry-run=server", "-f", "-"], &manifest(1_000_000));
    assert!(failed(&refused).contains("spec.replicas"), "{refused:?}");
    let bad =
        control.raw_http().put(format!("{}/api/v1/namespaces/default/workloads/web?dryRun=Some", control.api_url));
    let bad = bad.bearer_auth(control.client_config().token).body("{}").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // Where no dry run is done, asking for one is refused, not taken for a real write.
    let url = format!("{}/api/v1/namespaces/default/workloads/web?dryRun=All", control.api_url);
    let delete = control.raw_http().delete(url).bearer_auth(control.client_config().token).send().await.unwrap();
    assert_eq!(delete.status(), 400);
    assert_eq!(replicas(), "1", "still there");

    // diff: exit 1 with the change, 0 once applied.
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, manifest(3)).unwrap();
    let path = path.to_str().unwrap();
    let diff = control.cli(&["diff", "-f", path]);
    assert_eq!(diff.status.code(), Some(1), "{diff:?}");
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(text.contains("-  replicas: 1") && text.contains("+  replicas: 3"), "{text}");
    assert!(!text.contains("resourceVersion") && !text.contains("status"), "{text}");
    ok_stdout(&control.cli(&["apply", "-f", path]));
    let same = control.cli(&["diff", "-f", path]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(same.stdout.is_empty());
    let broken = control.cli(&["diff", "-f", "/nonexistent.yaml"]);
    assert_eq!(broken.status.code(), Some(2), "{broken:?}");
}

#[tokio::test]
async fn logs_tail_since_timestamps_and_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let _node = common::NodeProcess::start(&control, "n1", &[]);
    let env = "  type: command\n  replicas: 1\n  env:\n  - name: COUNT\n    value: \"3\"\n  - name: INTERVAL_MS\n    value: \"10\"\n";
    common::workloads::apply(&control, "ticker", &common::workloads::workload_yaml("ticker", "$WORKER", env));
    let instance = common::wait_for(Duration::from_secs(30), "the ticker restarted", || async {
        let instances = common::workloads::instances_of(&admin, "ticker").await;
        let restarted = instances.into_iter().find(|i| i.status.as_ref().is_some_and(|s| s.restarts >= 1))?;
        Some(restarted.metadata.name.to_string())
    })
    .await;
    let logs = |args: &[&str]| {
        let mut all = vec!["logs", instance.as_str()];
        all.extend(args);
        control.cli(&all)
    };
    let previous = ok_stdout(&logs(&["--previous"]));
    let ticks: Vec<&str> = previous.lines().filter(|l| l.starts_with("tick")).collect();
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3"], "one whole run:\n{previous}");
    let tail = ok_stdout(&logs(&["--previous", "--tail", "2"]));
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(previous.ends_with(&tail), "the last two lines:\n{previous}\n--\n{tail}");
    let stamped = ok_stdout(&logs(&["--previous", "--timestamps"]));
    for line in stamped.lines() {
        let (at, rest) = line.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{line:?}");
        assert!(previous.contains(rest), "{line:?}");
    }
    assert!(!ok_stdout(&logs(&["--since", "1h"])).is_empty());
    assert!(failed(&logs(&["--previous", "-f"])).contains("cannot be used with"));

    // An HTTP instance never restarts: it has no previous run, and says so.
    common::workloads::apply(&control, "web", &common::workloads::workload_yaml("web", "$HELLO", "  replicas: 1\n"));
    let web = common::workloads::wait_running(&admin, "web", 1, Some("n1"), Duration::from_secs(30)).await;
    let none = control.cli(&["logs", web[0].metadata.name.as_str(), "--previous"]);
    assert!(failed(&none).contains("no previous run"), "{none:?}");
}
