//! One control node, end to end: the CLI and the typed client against a real `shoal control`
//! process over HTTPS.

mod common;

use std::time::Duration;

use common::{ControlProcess, EMPTY_MODULE, namespace, ok_stdout, service};
use futures::StreamExt;
use shoal_api::{AnyObject, EventType, Kind, Name, Reason};

const APP: &str = "\
apiVersion: shoal.dev/v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: shoal.dev/v1
kind: Workload
metadata:
  name: hello
  namespace: shop
  labels: {app: hello}
spec:
  module: ./hello.wasm
  replicas: 3
  resources: {memory: 64Mi, cpu: 250m}
";

#[test]
fn apply_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(&dir.path().join("control"), &[]);
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    std::fs::write(dir.path().join("hello.wasm"), EMPTY_MODULE).unwrap();
    let app = app.to_str().unwrap();

    let out = ok_stdout(&control.cli(&["apply", "-f", app]));
    assert_eq!(out, "namespaces/shop created\nworkloads/shop/hello created\n");
    let out = ok_stdout(&control.cli(&["apply", "-f", app]));
    assert_eq!(out, "namespaces/shop unchanged\nworkloads/shop/hello unchanged\n");

    let yaml = ok_stdout(&control.cli(&["get", "workloads", "-n", "shop", "-o", "yaml"]));
    let digest = shoal_api::digest::sha256_hex(EMPTY_MODULE);
    assert!(yaml.contains(&format!("module: sha256:{digest}")), "{yaml}");
    assert!(yaml.contains("resourceVersion: "), "{yaml}");
    assert!(yaml.contains("memory: 64Mi") && yaml.contains("cpu: 250m"), "{yaml}");
    let table = ok_stdout(&control.cli(&["get", "wl", "-A"]));
    assert!(table.lines().nth(1).unwrap().starts_with("shop        hello   http   0/3"), "{table}");

    // A changed spec is "configured" and bumps the generation.
    std::fs::write(dir.path().join("app.yaml"), APP.replace("replicas: 3", "replicas: 5")).unwrap();
    let out = ok_stdout(&control.cli(&["apply", "-f", app]));
    assert_eq!(out, "namespaces/shop unchanged\nworkloads/shop/hello configured\n");
    let json = ok_stdout(&control.cli(&["get", "workload", "hello", "-n", "shop", "-o", "json"]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["spec"]["replicas"], 5);
    assert_eq!(value["metadata"]["generation"], 2);

    let out = ok_stdout(&control.cli(&["delete", "-f", app]));
    assert_eq!(out, "workloads/shop/hello deleted\nnamespaces/shop deleted\n");
    let gone = control.cli(&["get", "workload", "hello", "-n", "shop"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("workloads \"shop/hello\" not found"));
}

#[tokio::test]
async fn stale_update_is_a_conflict_and_create_of_existing_too() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    let created = client.create(&namespace("team-a")).await.unwrap();
    let again = client.create(&namespace("team-a")).await.unwrap_err();
    assert_eq!(again.reason(), Some(Reason::Conflict), "{again}");

    let mut first = created.clone();
    first.meta_mut().labels.insert("tier".into(), "gold".into());
    let updated = client.put(&first).await.unwrap();
    assert!(updated.meta().resource_version > created.meta().resource_version);

    // `first` still carries the resourceVersion it read: now stale.
    let mut stale = first.clone();
    stale.meta_mut().labels.insert("tier".into(), "silver".into());
    let err = client.put(&stale).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Conflict), "{err}");
    let current = client.get(Kind::Namespace, None, "team-a").await.unwrap();
    assert_eq!(current.meta().labels["tier"], "gold", "the stale write must not land");
}

#[tokio::test]
async fn watch_sees_changes_in_order_and_resumes_from_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    let start = client.list(Kind::Namespace, None, None).await.unwrap().resource_version;
    let mut events = Box::pin(client.watch(Kind::Namespace, None, start).await.unwrap());

    let created = client.create(&namespace("watched")).await.unwrap();
    let mut changed = created.clone();
    changed.meta_mut().labels.insert("k".into(), "v".into());
    client.put(&changed).await.unwrap();
    client.delete(Kind::Namespace, None, "watched").await.unwrap();

    // A deleted namespace is Terminating first (a change), then gone once emptied.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("watch event within 10 s")
            .expect("stream open")
            .unwrap();
        assert_eq!(event.object.meta().name.as_str(), "watched");
        seen.push((event.type_, event.revision));
    }
    let types: Vec<_> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, [EventType::Added, EventType::Modified, EventType::Modified, EventType::Deleted]);
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "revisions increase: {seen:?}");

    // Resume from the first event's revision: the later ones come again, in order.
    let mut resumed = Box::pin(client.watch(Kind::Namespace, None, seen[0].1).await.unwrap());
    for want in &seen[1..] {
        let event = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((event.type_, event.revision), *want);
    }
}

#[tokio::test]
async fn a_watch_from_far_back_delivers_everything_without_further_writes() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    let start = client.list(Kind::Namespace, None, None).await.unwrap().resource_version;
    // More changes than one read of the history returns (512), then quiet.
    let n = 1200;
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let client = client.clone();
            async move { client.create(&namespace(&format!("far-{i}"))).await.map(drop).unwrap() }
        })
        .await;
    let mut events = Box::pin(client.watch(Kind::Namespace, None, start).await.unwrap());
    let mut last = 0;
    for seen in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen} of {n} events arrived"))
            .expect("stream open")
            .unwrap();
        assert!(event.revision >= last, "revisions never go back");
        last = event.revision;
    }
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--history-revisions", "10"]);
    let client = control.client();
    for i in 0..40 {
        client.create(&namespace(&format!("ns-{i}"))).await.unwrap();
    }
    // History is compacted when applied changes are written to the file, within 100 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.watch(Kind::Namespace, None, 1).await {
            Err(err) if err.reason() == Some(Reason::Gone) => break,
            Err(err) => panic!("a watch from a compacted revision must be Gone, got {err}"),
            Ok(_) => assert!(std::time::Instant::now() < deadline, "revision 1 is still watchable after 10 s"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From the list's revision it works.
    let rv = client.list(Kind::Namespace, None, None).await.unwrap().resource_version;
    let _events = client.watch(Kind::Namespace, None, rv).await.unwrap();
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    for token in ["", "not-the-token"] {
        let err = client.with_token(token).list(Kind::Namespace, None, None).await.unwrap_err();
        assert_eq!(err.reason(), Some(Reason::Unauthorized), "token {token:?}: {err}");
    }
    client.list(Kind::Namespace, None, None).await.unwrap();
}

#[tokio::test]
async fn label_selectors_filter_lists() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    for (name, tier) in [("a", "gold"), ("b", "silver"), ("c", "gold")] {
        let mut ns = namespace(name);
        ns.meta_mut().labels.insert("tier".into(), tier.into());
        client.create(&ns).await.unwrap();
    }
    let names =
        |list: shoal_api::List<AnyObject>| list.items.iter().map(|o| o.meta().name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(client.list(Kind::Namespace, None, Some("tier=gold")).await.unwrap()), ["a", "c"]);
    assert_eq!(names(client.list(Kind::Namespace, None, Some("tier!=gold")).await.unwrap()), ["b"]);
    let err = client.list(Kind::Namespace, None, Some("bad key=x")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::BadRequest));
}

#[tokio::test]
async fn invalid_objects_and_modules_are_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();

    // A body with a bad field, straight over HTTP: 422 naming it.
    let config = control.client_config();
    let http = control.raw_http();
    let body = serde_json::json!({
        "apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": "w"}, "spec": {"module": "sha256:00", "replicas": "three"}
    });
    let resp = http
        .post(format!("{}/api/v1/namespaces/default/workloads", config.server))
        .bearer_auth(&config.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let status: shoal_api::Status = resp.json().await.unwrap();
    assert_eq!(status.field.as_deref(), Some("spec.replicas"), "{status:?}");

    // Namespaced objects need their namespace to exist.
    let err = client.create(&service("nowhere")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotFound), "{err}");

    // Modules: wasm only, the digest must match, and a Workload runs only one uploaded to its
    // own namespace.
    let digest = client.put_module("default", EMPTY_MODULE.to_vec()).await.unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(client.has_module("default", hex).await.unwrap());
    assert_eq!(&client.get_module(Some("default"), hex).await.unwrap()[..], EMPTY_MODULE);
    assert_eq!(&client.get_module(None, hex).await.unwrap()[..], EMPTY_MODULE);
    let listed = client.list_modules("default").await.unwrap();
    assert_eq!((listed.len(), listed[0].digest.as_str(), listed[0].size), (1, hex, EMPTY_MODULE.len() as u64));
    let err = client.put_module("default", b"#!/bin/sh\necho hi\n".to_vec()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Invalid), "{err}");
    let mismatched = http
        .put(format!("{}/api/v1/namespaces/default/modules/{}", config.server, shoal_api::digest::sha256_hex(b"other")))
        .bearer_auth(&config.token)
        .body(EMPTY_MODULE.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status().as_u16(), 422);
    assert!(!client.has_module("default", &shoal_api::digest::sha256_hex(b"absent")).await.unwrap());
    let absent = format!("sha256:{}", shoal_api::digest::sha256_hex(b"absent"));
    let body = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": "w"}, "spec": {"module": absent}});
    let err = client.create(&shoal_api::AnyObject::from_json(Kind::Workload, &body).unwrap()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Invalid), "{err}");
    assert!(err.to_string().contains("is not uploaded to namespace default"), "{err}");
    let body = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": "w"}, "spec": {"module": digest}});
    client.create(&shoal_api::AnyObject::from_json(Kind::Workload, &body).unwrap()).await.unwrap();
    let err = client.delete_module("default", hex).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Conflict), "{err}");
    assert!(err.to_string().contains("used by workload default/w"), "{err}");
    client.delete(Kind::Workload, Some("default"), "w").await.unwrap();
    // So does a Job's template, and a CronJob's.
    let users = [
        (Kind::Job, "job", serde_json::json!({"template": {"module": digest}})),
        (
            Kind::CronJob,
            "cronjob",
            serde_json::json!({"schedule": "0 0 1 1 *", "jobTemplate": {"template": {"module": digest}}}),
        ),
    ];
    for (kind, what, spec) in users {
        let body = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": kind.as_str(),
            "metadata": {"name": "user"}, "spec": spec});
        client.create(&shoal_api::AnyObject::from_json(kind, &body).unwrap()).await.unwrap();
        let err = client.delete_module("default", hex).await.unwrap_err();
        assert_eq!(err.reason(), Some(Reason::Conflict), "{err}");
        assert!(err.to_string().contains(&format!("used by {what} default/user")), "{err}");
        client.delete(kind, Some("default"), "user").await.unwrap();
    }
    assert_eq!(client.delete_module("default", hex).await.unwrap().digest, hex);
    assert!(!client.has_module("default", hex).await.unwrap());
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), &[]);
    // Killed right after the writes are acknowledged: applied state that was not written to
    // the file yet is re-applied from the raft log, to the very same objects.
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let created = control.client().create(&namespace(&format!("durable-{i}"))).await.unwrap();
        acknowledged.push(created);
    }
    control.kill();
    let control = ControlProcess::start(dir.path(), &[]);
    for created in acknowledged {
        let got = control.client().get(Kind::Namespace, None, created.meta().name.as_str()).await.unwrap();
        assert_eq!(got.meta().resource_version, created.meta().resource_version, "{}", created.meta().name);
        assert_eq!(got.meta().uid, created.meta().uid);
    }
}

#[tokio::test]
async fn a_tenant_token_reaches_only_its_namespaces() {
    use shoal_api::token::TokenRequest;
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    for ns in ["team-a", "team-b"] {
        admin.create(&namespace(ns)).await.unwrap();
    }
    let issued = admin
        .create_token(&TokenRequest {
            name: Name::new("a").unwrap(),
            namespaces: vec![Name::new("team-a").unwrap()],
            node: false,
        })
        .await
        .unwrap();
    let tenant = admin.with_token(&issued.token);
    tenant.create(&service("team-a")).await.unwrap();
    tenant.get(Kind::Service, Some("team-a"), "s").await.unwrap();
    let forbidden = [
        tenant.create(&service("team-b")).await.unwrap_err(),
        tenant.list(Kind::Service, Some("team-b"), None).await.unwrap_err(),
        tenant.list(Kind::Service, None, None).await.unwrap_err(),
        tenant.delete(Kind::Namespace, None, "team-a").await.unwrap_err(),
        tenant.list(Kind::Node, None, None).await.unwrap_err(),
        tenant.list_tokens().await.unwrap_err(),
    ];
    for err in forbidden {
        assert_eq!(err.reason(), Some(Reason::Forbidden), "{err}");
    }
    let visible = tenant.list(Kind::Namespace, None, None).await.unwrap();
    let names: Vec<_> = visible.items.iter().map(|o| o.meta().name.to_string()).collect();
    assert_eq!(names, ["team-a"]);

    // Revoked: the token no longer works at all.
    admin.delete_token("a").await.unwrap();
    let err = tenant.get(Kind::Service, Some("team-a"), "s").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Unauthorized), "{err}");
}

#[tokio::test]
async fn a_module_nothing_uses_is_collected_after_the_grace_and_a_used_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--module-grace", "1s"]);
    let client = control.client();
    let used = client.put_module("default", EMPTY_MODULE.to_vec()).await.unwrap();
    let unused = common::with_custom_section(EMPTY_MODULE, "pad", b"unused");
    let unused_hex = shoal_api::digest::sha256_hex(&unused);
    client.put_module("default", unused).await.unwrap();
    let body = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
        "metadata": {"name": "w"}, "spec": {"module": used, "replicas": 0}});
    client.create(&AnyObject::from_json(Kind::Workload, &body).unwrap()).await.unwrap();
    let file = control.data_dir.join("modules").join(&unused_hex);
    assert!(file.exists());
    common::wait_for(Duration::from_secs(20), "the unused module's record and bytes to go", || async {
        let gone = !client.has_module("default", &unused_hex).await.unwrap() && !file.exists();
        gone.then_some(())
    })
    .await;
    let used_hex = used.strip_prefix("sha256:").unwrap();
    assert!(client.has_module("default", used_hex).await.unwrap(), "a module a Workload uses is kept");
    assert!(control.data_dir.join("modules").join(used_hex).exists());
}

#[tokio::test]
async fn data_directories_and_the_store_file_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(&dir.path().join("control"), &[]);
    control.client().put_module("default", EMPTY_MODULE.to_vec()).await.unwrap();
    let node = common::NodeProcess::start(&control, "n1", &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = &control.data_dir;
    for private_dir in [data.clone(), data.join("pki"), data.join("modules"), data.join("snapshots")] {
        assert_eq!(mode(&private_dir), 0o700, "{}", private_dir.display());
    }
    assert_eq!(mode(&data.join("shoal.redb")), 0o600);
    let hex = shoal_api::digest::sha256_hex(EMPTY_MODULE);
    assert_eq!(mode(&data.join("modules").join(hex)), 0o600);
    let node_dir = data.join(format!("node-{}", node.name));
    common::wait_for(Duration::from_secs(10), "the node's data directory to be private", || async {
        (mode(&node_dir) == 0o700).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_quiet_watch_gets_bookmarks_and_a_client_sees_through_them() {
    let dir = tempfile::tempdir().unwrap();
    shoal_api::client::install_crypto_provider();
    let control = ControlProcess::start(dir.path(), &["--watch-bookmark-interval", "100ms"]);
    let config = control.client_config();
    let http = control.raw_http();
    let response = http
        .get(format!("{}/api/v1/namespaces?watch=true", config.server))
        .bearer_auth(&config.token)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let line = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("a line within 5 s");
    let line: serde_json::Value = serde_json::from_slice(&line.unwrap().unwrap()).unwrap();
    assert_eq!(line["type"], "BOOKMARK", "{line}");
    assert!(line["revision"].as_u64().is_some(), "{line}");

    // The client skips them, and is not taken in by them: a change still comes through.
    let client = control.client().with_watch_silence(Duration::from_secs(1));
    let start = client.list(Kind::Namespace, None, None).await.unwrap().resource_version;
    let mut events = Box::pin(client.watch(Kind::Namespace, None, start).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.create(&namespace("after-quiet")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        event.object.meta().name.as_str(),
        "after-quiet",
        "the bookmarks kept the watch alive past its silence limit"
    );
}

fn config(name: &str, value: usize) -> AnyObject {
    let json = serde_json::json!({
        "apiVersion": "shoal.dev/v1",
        "kind": "Config",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"data": {"v": value.to_string()}},
    });
    AnyObject::from_json(Kind::Config, &json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_object_each_get_a_revision_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let client = control.client();
    // Writes that arrive together share raft entries (and so revisions), but never two changes
    // to one object: else a resourceVersion would name two states of it, and a
    // compare-and-set from one write's answer could overwrite the next.
    let same = futures::future::join_all((0..64).map(|i| {
        let client = client.clone();
        async move { client.put(&config("one", i)).await.unwrap().meta().resource_version.unwrap() }
    }));
    let apart = futures::future::join_all((0..64).map(|i| {
        let client = client.clone();
        async move { client.put(&config(&format!("k{i}"), i)).await.unwrap().meta().resource_version.unwrap() }
    }));
    let (same, apart) = tokio::join!(same, apart);
    let distinct: std::collections::BTreeSet<u64> = same.iter().copied().collect();
    assert_eq!(distinct.len(), same.len(), "writes to one object shared a revision: {same:?}");
    let entries: std::collections::BTreeSet<u64> = same.iter().chain(&apart).copied().collect();
    assert!(entries.len() < same.len() + apart.len(), "no two writes shared an entry: nothing was batched");
    // A compare-and-set from the first write's answer is refused: the object moved on.
    let first = *same.iter().min().unwrap();
    let mut stale = config("one", 999);
    stale.meta_mut().resource_version = Some(first);
    let refused = client.put(&stale).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Conflict), "{refused}");
}
