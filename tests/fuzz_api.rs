//! Garbage at every door of a real `shoal control`: mutated request bodies on every kind's
//! paths, random query strings on lists and watches, watches resumed from any revision, mutated
//! DNS queries, and random bodies on every raft RPC. The properties: no answer is a 500 (bad
//! input is the client's fault, and says so with a 4xx), an API error is a JSON Status, a
//! watch from beyond the current revision is refused, and afterwards the process is alive and
//! still reads, writes and answers DNS. `SHOAL_FUZZ_CASES` (default 400 per door) and
//! `SHOAL_FUZZ_SEED` change the run; a failure prints the seed and the request.

mod common;

use std::time::Duration;

use common::ControlProcess;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn cases() -> usize {
    std::env::var("SHOAL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
}

fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("SHOAL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("SHOAL_FUZZ_SEED={seed}");
    (seed, StdRng::seed_from_u64(seed))
}

/// Valid objects of most kinds, the seeds that mutations start from.
fn seeds() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| json!({"name": name, "namespace": "default", "labels": {"app": "x"}});
    vec![
        (
            "namespaces",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Namespace", "metadata": {"name": "fz"},
            "spec": {"quota": {"instances": 4, "memory": "64Mi", "cpu": "1", "moduleBytes": "10Mi"}}}),
        ),
        (
            "configs",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Config", "metadata": meta("c"),
            "spec": {"data": {"a": "1", "b.txt": "two"}}}),
        ),
        (
            "secrets",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Secret", "metadata": meta("s"),
            "spec": {"data": {"password": "hunter2"}}}),
        ),
        (
            "workloads",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Workload", "metadata": meta("w"),
            "spec": {"module": format!("sha256:{}", "ab".repeat(32)), "replicas": 2,
                "resources": {"memory": "32Mi", "cpu": "100m"}, "env": {"A": "b"},
                "rollout": {"maxSurge": 1, "maxUnavailable": 0}}}),
        ),
        (
            "services",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Service", "metadata": meta("svc"),
            "spec": {"selector": {"app": "x"}, "ingressHosts": ["svc.default.localhost"]}}),
        ),
        (
            "jobs",
            json!({"apiVersion": "shoal.dev/v1", "kind": "Job", "metadata": meta("j"),
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 2,
                "template": {"module": format!("sha256:{}", "cd".repeat(32))}}}),
        ),
        (
            "cronjobs",
            json!({"apiVersion": "shoal.dev/v1", "kind": "CronJob", "metadata": meta("cj"),
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"completions": 1,
                "template": {"module": format!("sha256:{}", "ef".repeat(32))}}}}),
        ),
    ]
}

/// A value of any JSON type, some of them hostile (deep, long, huge, odd).
fn random_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        3 => json!(u64::MAX),
        4 => json!(-1),
        5 => json!(rng.random::<f64>() * 1e300),
        6 => json!("x".repeat(rng.random_range(0..70_000))),
        7 => json!("\u{0}\u{202e}é😀../..\\%00"),
        8 => {
            let mut v = json!(1);
            for _ in 0..rng.random_range(1..200) {
                v = json!([v]);
            }
            v
        }
        9 => json!({"nested": {"a": [1, "b", null]}}),
        10 => json!(vec!["a"; 50]),
        _ => json!("64Mi"),
    }
}

/// `value` with one node somewhere in it replaced, removed or added to.
fn mutate_value(rng: &mut StdRng, value: &mut Value) {
    let descend = rng.random_bool(0.7);
    match value {
        Value::Object(map) if !map.is_empty() && descend => {
            let key = map.keys().nth(rng.random_range(0..map.len())).unwrap().clone();
            match rng.random_range(0..5) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("unknown{}", rng.random::<u8>()), random_value(rng));
                }
                _ => mutate_value(rng, map.get_mut(&key).unwrap()),
            }
        }
        Value::Array(items) if !items.is_empty() && descend => {
            let i = rng.random_range(0..items.len());
            mutate_value(rng, &mut items[i]);
        }
        _ => *value = random_value(rng),
    }
}

/// Bytes of `bytes` flipped, cut or repeated.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            bytes.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..bytes.len());
        match rng.random_range(0..4) {
            0 => bytes[i] = rng.random(),
            1 => bytes.truncate(i),
            2 => bytes.insert(i, b"{}[]\",:\\\x00\xff"[rng.random_range(0..10)]),
            _ => {
                let tail = bytes[i..].to_vec();
                bytes.extend_from_slice(&tail[..tail.len().min(64)]);
            }
        }
    }
}

/// Whether an answer keeps the promises: no 5xx, and an error says why in a JSON Status.
async fn check_answer(what: &str, response: reqwest::Response) {
    let code = response.status();
    let body = response.bytes().await.unwrap_or_default();
    assert!(code.as_u16() < 500, "{what}: {code}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
    // 414 and 431 are the HTTP server's own limits on a request's head, answered before any
    // route sees it.
    if !code.is_success() && !matches!(code.as_u16(), 414 | 431) {
        let status: Result<shoal_api::Status, _> = serde_json::from_slice(&body);
        assert!(status.is_ok(), "{what}: {code} without a JSON Status: {}", String::from_utf8_lossy(&body));
    }
}

/// The control plane still reads and writes.
async fn still_serves(control: &mut ControlProcess) {
    assert!(control.exited().is_none(), "the control plane ended: {:?}", control.exited());
    let client = control.client();
    let name = format!("alive-{}", rand::random::<u32>());
    let object = shoal_api::AnyObject::from_json(
        shoal_api::Kind::Config,
        &json!({"apiVersion": "shoal.dev/v1", "kind": "Config", "metadata": {"name": name, "namespace": "default"},
            "spec": {"data": {"k": "v"}}}),
    )
    .unwrap();
    client.create(&object).await.expect("a write after the fuzzing");
    client.get(shoal_api::Kind::Config, Some("default"), &name).await.expect("a read after the fuzzing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_bodies_on_every_kind_get_4xx_never_5xx() {
    let (_, mut rng) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), &[]);
    let http = control.raw_http();
    let token = control.client_config().token;
    let seeds = seeds();
    for case in 0..cases() {
        let (plural, seed) = &seeds[rng.random_range(0..seeds.len())];
        let bytes = if rng.random_bool(0.6) {
            let mut value = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate_value(&mut rng, &mut value);
            }
            serde_json::to_vec(&value).unwrap()
        } else {
            let mut bytes = serde_json::to_vec(seed).unwrap();
            mutate_bytes(&mut rng, &mut bytes);
            bytes
        };
        let name = seed["metadata"]["name"].as_str().unwrap();
        let (method, url) = match (rng.random_range(0..3), *plural) {
            (0, "namespaces") => (reqwest::Method::POST, format!("{}/api/v1/namespaces", control.api_url)),
            (0, p) => (reqwest::Method::POST, format!("{}/api/v1/namespaces/default/{p}", control.api_url)),
            (1, "namespaces") => (reqwest::Method::PUT, format!("{}/api/v1/namespaces/{name}", control.api_url)),
            (1, p) => (reqwest::Method::PUT, format!("{}/api/v1/namespaces/default/{p}/{name}", control.api_url)),
            (_, "namespaces") => (reqwest::Method::PUT, format!("{}/api/v1/namespaces/{name}/status", control.api_url)),
            (_, p) => {
                (reqwest::Method::PUT, format!("{}/api/v1/namespaces/default/{p}/{name}/status", control.api_url))
            }
        };
        let what = format!("case {case}: {method} {url} {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]));
        let response = http.request(method, &url).bearer_auth(&token).body(bytes).send().await.unwrap();
        check_answer(&what, response).await;
    }
    still_serves(&mut control).await;
}

/// A random value for a query parameter.
fn query_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => String::new(),
        1 => rng.random::<u64>().to_string(),
        2 => "-1".into(),
        3 => "18446744073709551616".into(),
        4 => "%ff%fe%00".into(),
        5 => "app%3Dx,tier!%3Dweb".into(),
        6 => "a".repeat(rng.random_range(1..20_000)),
        7 => "true".into(),
        8 => "app in (a,b),!c".into(),
        _ => rng.random_range(0..100u32).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_query_strings_and_watch_revisions_get_4xx_never_5xx() {
    let (_, mut rng) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), &[]);
    let http = control.raw_http();
    let token = control.client_config().token;
    let client = control.client();
    const PARAMS: [&str; 10] = [
        "limit",
        "continue",
        "labelSelector",
        "fieldSelector",
        "resourceVersion",
        "watch",
        "dryRun",
        "showSecrets",
        "timeoutSeconds",
        "unknown",
    ];
    let plurals = ["namespaces", "configs", "workloads", "instances", "events", "nodes", "services", "secrets"];
    for case in 0..cases() {
        let plural = plurals[rng.random_range(0..plurals.len())];
        let mut query: Vec<String> = (0..rng.random_range(0..5))
            .map(|_| format!("{}={}", PARAMS[rng.random_range(0..PARAMS.len())], query_value(&mut rng)))
            .collect();
        // Watches resumed from anywhere: before the start, now, just past now, far past.
        let current = client.cluster_status().await.unwrap().revision;
        let watch_from = match rng.random_range(0..5) {
            0 => Some(0),
            1 => Some(current),
            2 => Some(current + 1 + rng.random_range(0..1000)),
            3 => Some(u64::MAX),
            _ => None,
        };
        if let Some(from) = watch_from {
            query.push(format!("watch=true&resourceVersion={from}"));
        }
        let scope =
            if plural == "namespaces" || plural == "nodes" { String::new() } else { "/namespaces/default".into() };
        let url = format!("{}/api/v1{scope}/{plural}?{}", control.api_url, query.join("&"));
        let what = format!("case {case}: GET {}", &url[..url.len().min(400)]);
        let response = tokio::time::timeout(Duration::from_secs(10), http.get(&url).bearer_auth(&token).send())
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer in 10 s"))
            .unwrap();
        let code = response.status();
        if let Some(from) = watch_from
            && from > current
            && !query.iter().any(|q| q.contains("resourceVersion=") && !q.ends_with(&format!("={from}")))
        {
            assert!(code.is_client_error(), "{what}: a watch from beyond revision {current} got {code}");
        }
        if code.is_success() && url.contains("watch=true") {
            // A stream: its head is enough; dropping it closes the watch.
            drop(response);
            continue;
        }
        check_answer(&what, response).await;
    }
    still_serves(&mut control).await;
}

/// A well-formed DNS query for `name`, type A.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_dns_queries_and_raft_bodies_do_not_stop_the_control_plane() {
    let (_, mut rng) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), &[]);

    // DNS: mutated queries over UDP; a good one is still answered after each hundred.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(control.dns_addr).await.unwrap();
    for case in 0..cases() {
        let mut query = dns_query(case as u16, "hello.default.svc.cluster.local");
        mutate_bytes(&mut rng, &mut query);
        socket.send(&query).await.unwrap();
        if case % 100 == 99 {
            let mut buf = [0u8; 4096];
            while tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await.is_ok() {}
            let id = 0xbeef;
            socket.send(&dns_query(id, "hello.default.svc.cluster.local")).await.unwrap();
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let n = socket.recv(&mut buf).await.unwrap();
                    if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        return;
                    }
                }
            })
            .await;
            assert!(answered.is_ok(), "case {case}: the DNS server stopped answering");
        }
    }

    // Raft: random bodies, with the cluster token, on every RPC. A peer holding the token is
    // trusted with what it says, but garbage must be refused, not crash the member.
    shoal_api::client::install_crypto_provider();
    let ca = std::fs::read(control.pki_dir.join("ca.pem")).unwrap();
    let token = std::fs::read_to_string(control.pki_dir.join("cluster.token")).unwrap();
    let http =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]).build().unwrap();
    // Append, vote and snapshot are left out, and so are join, members and leave: a body that
    // decodes there is an order from a leader of a higher term or a membership change, which
    // a member must follow (the token makes the sender a peer).
    let paths = ["/raft/write", "/raft/read-index", "/raft/heartbeat", "/raft/activate"];
    for path in paths {
        let url = format!("https://{}{path}", control.raft_addr);
        let response = http.post(&url).body(vec![1, 2, 3]).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} without the cluster token");
    }
    for case in 0..cases() {
        let path = paths[rng.random_range(0..paths.len())];
        let mut body: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        if rng.random_bool(0.3) {
            mutate_bytes(&mut rng, &mut body);
        }
        let url = format!("https://{}{path}", control.raft_addr);
        let response = http.post(&url).bearer_auth(token.trim()).body(body.clone()).send().await.unwrap();
        let code = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(code.as_u16() < 500 || code.as_u16() == 503, "case {case}: POST {path} {body:?}: {code}: {text}");
    }
    still_serves(&mut control).await;
}
