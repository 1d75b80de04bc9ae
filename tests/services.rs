//! Services across nodes, end to end: one control plane and three node processes on distinct
//! loopback addresses; the cluster DNS asked with a real resolver; requests through every
//! node's ingress; guests calling Services by name; a node killed under load.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::dns::{Answer, ask, resolver};
use common::workloads::{apply, get, http};
use common::{ControlProcess, NodeProcess, ok_stdout, wait_for};
use hickory_resolver::proto::rr::{RData, RecordType};
use shoal_api::resources::instance::{Instance, InstanceKind};
use shoal_api::{AnyObject, Client, Kind};

/// The shop example with its module paths pointing at the built guests.
fn shop_yaml() -> String {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop/app.yaml")).unwrap();
    example
        .replace("../guests/target/wasm32-wasip2/release/hello.wasm", "$HELLO")
        .replace("../guests/target/wasm32-wasip2/release/frontend.wasm", "$FRONTEND")
}

/// Starts three nodes on 127.0.0.2, .3 and .4, with `labels[i]` each.
fn three_nodes(control: &ControlProcess, labels: [&str; 3]) -> Vec<NodeProcess> {
    (0..3)
        .map(|i| {
            let listen = format!("127.0.0.{}:0", i + 2);
            let mut extra = vec!["--ingress-listen", listen.as_str()];
            if !labels[i].is_empty() {
                extra.extend(["--labels", labels[i]]);
            }
            NodeProcess::start(control, &format!("n{}", i + 1), &extra)
        })
        .collect()
}

/// The ready instances of `workload` in `namespace`, once there are exactly `n`.
async fn ready_instances(client: &Client, namespace: &str, workload: &str, n: usize) -> Vec<Instance> {
    wait_for(Duration::from_secs(30), &format!("{n} ready instances of {namespace}/{workload}"), || async {
        let list = client.list_of::<InstanceKind>(Some(namespace)).await.ok()?;
        let mine: Vec<Instance> = list
            .items
            .into_iter()
            .filter(|i| i.spec.workload.as_ref().is_some_and(|w| w.as_str() == workload))
            .collect();
        (mine.len() == n && mine.iter().all(Instance::is_ready)).then_some(mine)
    })
    .await
}

fn node_of<'n>(nodes: &'n [NodeProcess], instance: &Instance) -> &'n NodeProcess {
    let name = instance.spec.node.as_ref().expect("bound").as_str();
    nodes.iter().find(|n| n.name == name).expect("a node of the test")
}

fn ip_of(node: &NodeProcess) -> String {
    node.ingress.parse::<SocketAddr>().unwrap().ip().to_string()
}

/// Waits until DNS answers `name` A with exactly `addresses` (sorted).
async fn wait_addresses(dns: &hickory_resolver::TokioResolver, name: &str, addresses: &[String], within: Duration) {
    let what = format!("{name} A to be {addresses:?}");
    wait_for(within, &what, || async {
        let answer = ask(dns, name, RecordType::A).await;
        let ok = if addresses.is_empty() { answer == Answer::NoData } else { answer.addresses() == addresses };
        ok.then_some(())
    })
    .await;
}

/// Waits for an OutboundDenied Event in `shop` whose message has `text` (repeats of one reason
/// on one instance are one Event, with a count and the latest message).
async fn wait_event(control: &ControlProcess, text: &str) {
    wait_for(Duration::from_secs(10), &format!("an OutboundDenied event saying {text:?}"), || async {
        let events = ok_stdout(&control.cli(&["get", "events", "-n", "shop", "-o", "yaml"]));
        (events.contains("reason: OutboundDenied") && events.contains(text)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_shop_example_is_found_by_dns_and_routed_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let nodes = three_nodes(&control, ["", "", ""]);
    let client = control.client();
    apply(&control, "shop", &shop_yaml());
    let api = ready_instances(&client, "shop", "api", 2).await;
    ready_instances(&client, "shop", "frontend", 1).await;
    let api_nodes: Vec<&NodeProcess> = api.iter().map(|i| node_of(&nodes, i)).collect();
    assert_ne!(api_nodes[0].name, api_nodes[1].name, "api replicas were not spread");
    let mut api_ips: Vec<String> = api_nodes.iter().map(|n| ip_of(n)).collect();
    api_ips.sort();

    // DNS: addresses, SRV, NXDOMAIN, NODATA, case, refusal, TCP.
    let dns = resolver(control.dns_addr);
    wait_addresses(&dns, "api.shop.svc.cluster.local.", &api_ips, Duration::from_secs(5)).await;
    assert_eq!(ask(&dns, "API.Shop.SVC.cluster.local.", RecordType::A).await.addresses(), api_ips);
    let Answer::Records(srv) = ask(&dns, "_http._tcp.api.shop.svc.cluster.local.", RecordType::SRV).await else {
        panic!("no SRV records for the api Service")
    };
    let mut targets: Vec<(String, u16)> = srv
        .iter()
        .map(|r| match r {
            RData::SRV(srv) => (srv.target.to_string(), srv.port),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    targets.sort();
    let mut expected: Vec<(String, u16)> = api_nodes
        .iter()
        .map(|n| (format!("{}.node.cluster.local.", n.name), n.ingress.parse::<SocketAddr>().unwrap().port()))
        .collect();
    expected.sort();
    assert_eq!(targets, expected);
    assert_eq!(ask(&dns, "n1.node.cluster.local.", RecordType::A).await.addresses().len(), 1);
    assert_eq!(ask(&dns, "nope.shop.svc.cluster.local.", RecordType::A).await, Answer::NxDomain);
    assert_eq!(ask(&dns, "api.shop.svc.cluster.local.", RecordType::AAAA).await, Answer::NoData);
    assert_eq!(ask(&dns, "shop.svc.cluster.local.", RecordType::A).await, Answer::NoData);
    assert!(matches!(ask(&dns, "example.com.", RecordType::A).await, Answer::Error(_)));
    let tcp_only = common::dns::tcp_resolver(control.dns_addr);
    assert_eq!(ask(&tcp_only, "api.shop.svc.cluster.local.", RecordType::A).await.addresses(), api_ips);

    // The proxy: every node answers for the api Service, the one without an instance through
    // another node.
    let http = http();
    let lonely = nodes.iter().find(|n| api_nodes.iter().all(|a| a.name != n.name)).unwrap();
    for host in ["api.shop.localhost", "api.shop.svc.cluster.local"] {
        for node in &nodes {
            let (status, body) = get(&http, &node.ingress, host, "/x").await;
            assert_eq!((status, body.as_str()), (200, "api from shoal (v1): GET /x\n"), "{host} via {}", node.name);
        }
    }
    // A Service that is not `public` is not reached by its cluster-internal name from outside.
    let (status, body) = get(&http, &nodes[0].ingress, "frontend.shop.svc.cluster.local", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("is not public"), "{body}");

    // Node-to-node traffic needs a node certificate of this cluster: a caller that trusts the
    // node CA but presents none is turned away, bearer token or not.
    let AnyObject::Node(n1) = client.get(Kind::Node, None, "n1").await.unwrap() else { panic!("n1 is not a Node") };
    let node_ca = std::fs::read(control.data_dir.join("pki/node-ca.pem")).unwrap();
    let ca = reqwest::Certificate::from_pem(&node_ca).unwrap();
    let outsider = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let response = outsider
        .get(format!("https://{}/", n1.spec.agent_address))
        .header("x-shoal-service", "shop/api")
        .bearer_auth(&control.client_config().token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "{}", response.text().await.unwrap());

    // Where `dig` is installed, it agrees.
    if let Ok(out) = std::process::Command::new("dig")
        .args([&format!("@{}", control.dns_addr.ip()), "-p", &control.dns_addr.port().to_string()])
        .args(["+short", "api.shop.svc.cluster.local", "A"])
        .output()
    {
        let mut dug: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        dug.sort();
        assert_eq!(dug, api_ips, "dig disagrees");
    }

    // Guest to guest: the frontend calls the api Service by name, from every node's ingress.
    for node in &nodes {
        let (status, body) = get(&http, &node.ingress, "shop.localhost", "/").await;
        assert_eq!((status, body.as_str()), (200, "frontend got: api from shoal (v1): GET /\n"), "via {}", node.name);
    }

    // A host outside the cluster, and a Service of another namespace, are refused.
    let (status, body) = get(&http, &lonely.ingress, "shop.localhost", "/fetch/example.com/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("denied"), "{body}");
    wait_event(&control, "example.com").await;
    let other = "apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: other\n---\n\
        apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: secret\n  namespace: other\nspec:\n  module: $HELLO\n---\n\
        apiVersion: shoal.dev/v1\nkind: Service\nmetadata:\n  name: secret\n  namespace: other\nspec:\n  selector:\n    workload: secret\n";
    apply(&control, "other", other);
    ready_instances(&client, "other", "secret", 1).await;
    let (status, body) = get(&http, &lonely.ingress, "shop.localhost", "/fetch/secret.other.svc.cluster.local/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("denied"), "{body}");
    wait_event(&control, "does not admit callers from namespace \"shop\"").await;
    apply(&control, "other-open", &format!("{other}  allowFromNamespaces:\n  - shop\n"));
    wait_for(Duration::from_secs(5), "the secret Service to admit shop", || async {
        let (status, body) =
            get(&http, &lonely.ingress, "shop.localhost", "/fetch/secret.other.svc.cluster.local/").await;
        (status == 200).then_some(body)
    })
    .await;

    // Scale to zero and back: DNS and routing follow.
    let scaled = |n: u32| shop_yaml().replace("  replicas: 2\n", &format!("  replicas: {n}\n"));
    apply(&control, "shop0", &scaled(0));
    wait_addresses(&dns, "api.shop.svc.cluster.local.", &[], Duration::from_secs(10)).await;
    for node in &nodes {
        let (status, body) = get(&http, &node.ingress, "api.shop.localhost", "/").await;
        assert_eq!(status, 503, "via {}: {body}", node.name);
    }
    apply(&control, "shop2", &scaled(2));
    let api = ready_instances(&client, "shop", "api", 2).await;
    let mut api_ips: Vec<String> = api.iter().map(|i| ip_of(node_of(&nodes, i))).collect();
    api_ips.sort();
    wait_addresses(&dns, "api.shop.svc.cluster.local.", &api_ips, Duration::from_secs(5)).await;
    let (status, _) = get(&http, &lonely.ingress, "api.shop.localhost", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_killed_node_leaves_dns_and_the_proxy_with_no_failed_gets() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--node-grace", "3s"]);
    let mut nodes = three_nodes(&control, ["role=api", "role=api", ""]);
    let client = control.client();
    let yaml =
        shop_yaml().replace("    value: api\n", "    value: api\n  placement:\n    nodeSelector:\n      role: api\n");
    apply(&control, "shop", &yaml);
    ready_instances(&client, "shop", "api", 2).await;
    let dns = resolver(control.dns_addr);
    let both = vec![ip_of(&nodes[0]), ip_of(&nodes[1])];
    wait_addresses(&dns, "api.shop.svc.cluster.local.", &both, Duration::from_secs(5)).await;

    // Steady GETs through the node without an instance, while n1 dies.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let ingress = nodes[2].ingress.clone();
        tokio::spawn(async move {
            let http = http();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = http.get(format!("http://{ingress}/")).header("host", "api.shop.localhost").send().await;
                sent.fetch_add(1, Ordering::Relaxed);
                match response {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => failures.push(e.to_string()),
                }
                failed.store(failures.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    };
    wait_for(Duration::from_secs(5), "load to start", || async { (sent.load(Ordering::Relaxed) > 20).then_some(()) })
        .await;
    let killed = Instant::now();
    nodes[0].kill();
    let survivor = vec![ip_of(&nodes[1])];
    wait_addresses(&dns, "api.shop.svc.cluster.local.", &survivor, Duration::from_secs(10)).await;
    let gone_after = killed.elapsed();
    // A little more load after the change, then stop.
    let at = sent.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(5), "more load", || async { (sent.load(Ordering::Relaxed) > at + 20).then_some(()) })
        .await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "{} of {} GETs failed: {failures:?}", failures.len(), sent.load(Ordering::Relaxed));
    // Grace period (3 s) + 1 s.
    assert!(gone_after <= Duration::from_secs(4), "the dead node left DNS only after {gone_after:?}");
}
