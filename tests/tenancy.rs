//! Fences between tenants, and between nodes, attacked end to end against a real `shoal control`:
//! each test makes the attack, asserts the documented refusal, and checks that the victim is
//! unaffected.

mod common;

use std::time::Duration;

use common::{ControlProcess, EMPTY_MODULE, NodeProcess, wait_for};
use shoal_api::agent::{CredentialsRequest, InstanceReport, InstanceReports, MAX_INSTANCE_REPORTS, ReportOutcome};
use shoal_api::resources::event::EventKind;
use shoal_api::resources::instance::{InstanceKind, InstanceStatus, Phase};
use shoal_api::resources::workload::Resources;
use shoal_api::token::TokenRequest;
use shoal_api::{AnyObject, Client, Kind, Name, Reason};

fn instance_on(name: &str, node: &str) -> AnyObject {
    AnyObject::from_json(
        Kind::Instance,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Instance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"module": format!("sha256:{}", "0".repeat(64)), "node": node}}),
    )
    .unwrap()
}

#[tokio::test]
async fn a_node_cannot_report_on_an_instance_bound_to_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let request = TokenRequest { name: Name::new(name).unwrap(), namespaces: Vec::new(), node: true };
        nodes.push(admin.with_token(&admin.create_token(&request).await.unwrap().token));
    }
    let victim = admin.create(&instance_on("victim", "n2")).await.unwrap();

    let mut forged = victim.clone();
    let AnyObject::Instance(i) = &mut forged else { unreachable!() };
    i.status = Some(InstanceStatus { phase: Phase::Failed, ..Default::default() });
    let refused = nodes[0].put_status(&forged).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    assert!(refused.to_string().contains("bound elsewhere"), "{refused}");

    // The instance is as it was, and its own node still reports on it.
    let now = admin.get(Kind::Instance, Some("default"), "victim").await.unwrap();
    assert_eq!(now, victim, "the refused report changed the instance");
    let AnyObject::Instance(i) = &mut forged else { unreachable!() };
    i.status = Some(InstanceStatus { phase: Phase::Running, ..Default::default() });
    let AnyObject::Instance(reported) = nodes[1].put_status(&forged).await.unwrap() else { unreachable!() };
    assert_eq!(reported.status.unwrap().phase, Phase::Running);

    // The same through the reports a node sends together: each is judged on its own.
    admin.create(&instance_on("own", "n1")).await.unwrap();
    let report = |name: &str, phase| InstanceReport {
        namespace: "default".into(),
        name: name.into(),
        status: InstanceStatus { phase, ..Default::default() },
    };
    let reports = InstanceReports {
        reports: vec![
            report("victim", Phase::Failed),
            report("own", Phase::Running),
            report("missing", Phase::Running),
        ],
    };
    let answer = nodes[0].report_instances("n1", &reports).await.unwrap();
    let [refused, written, gone] = <[ReportOutcome; 3]>::try_from(answer.outcomes).unwrap();
    assert!(
        matches!(&refused, ReportOutcome::Refused(s) if s.reason == Reason::Forbidden && s.message.contains("bound elsewhere")),
        "{refused:?}"
    );
    assert_eq!((written, gone), (ReportOutcome::Written, ReportOutcome::Gone));
    let AnyObject::Instance(victim_now) = admin.get(Kind::Instance, Some("default"), "victim").await.unwrap() else {
        unreachable!()
    };
    assert_eq!(victim_now.status.unwrap().phase, Phase::Running, "the refused report changed the instance");
    let AnyObject::Instance(own) = admin.get(Kind::Instance, Some("default"), "own").await.unwrap() else {
        unreachable!()
    };
    assert_eq!(own.status.unwrap().phase, Phase::Running);
    // Not for another node, and not more than the documented maximum at once.
    let refused = nodes[0].report_instances("n2", &reports).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    let flood = InstanceReports { reports: vec![report("own", Phase::Running); MAX_INSTANCE_REPORTS + 1] };
    let refused = nodes[0].report_instances("n1", &flood).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    assert!(refused.to_string().contains("at most 512"), "{refused}");
}

/// A namespace with a quota, and a client holding a tenant token for it.
async fn tenant_with_quota(control: &ControlProcess, ns: &str, quota: serde_json::Value) -> Client {
    tenant_and_token(control, ns, quota).await.0
}

/// Like [`tenant_with_quota`], with the tenant's bearer token too.
async fn tenant_and_token(control: &ControlProcess, ns: &str, quota: serde_json::Value) -> (Client, String) {
    let admin = control.client();
    let namespace = AnyObject::from_json(
        Kind::Namespace,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Namespace",
            "metadata": {"name": ns}, "spec": {"quota": quota}}),
    )
    .unwrap();
    admin.create(&namespace).await.unwrap();
    let request = TokenRequest { name: Name::new(ns).unwrap(), namespaces: vec![Name::new(ns).unwrap()], node: false };
    let token = admin.create_token(&request).await.unwrap().token;
    let tenant = admin.with_token(&token);
    tenant.put_module(ns, EMPTY_MODULE.to_vec()).await.unwrap();
    (tenant, token)
}

fn workload(ns: &str, name: &str, replicas: u32, memory: Option<&str>) -> AnyObject {
    let module = format!("sha256:{}", shoal_api::digest::sha256_hex(EMPTY_MODULE));
    let mut spec = serde_json::json!({"module": module, "replicas": replicas});
    if let Some(memory) = memory {
        spec["resources"] = serde_json::json!({"memory": memory});
    }
    AnyObject::from_json(
        Kind::Workload,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .unwrap()
}

async fn instances_in(client: &Client, ns: &str) -> usize {
    client.list_of::<InstanceKind>(Some(ns)).await.unwrap().items.len()
}

#[tokio::test]
async fn a_quota_stops_the_workload_controller_and_says_which_limit() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let beta = tenant_with_quota(&control, "beta", serde_json::json!({"instances": 2, "memory": "64Mi"})).await;
    let alpha = tenant_with_quota(&control, "alpha", serde_json::json!({"instances": 100})).await;
    beta.create(&workload("beta", "greedy", 5, Some("32Mi"))).await.unwrap();
    alpha.create(&workload("alpha", "neighbour", 3, None)).await.unwrap();

    let condition = wait_for(Duration::from_secs(10), "the ReplicaFailure condition on beta/greedy", || async {
        let w = beta.get(Kind::Workload, Some("beta"), "greedy").await.unwrap();
        let AnyObject::Workload(w) = w else { unreachable!() };
        w.status?.conditions.into_iter().find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert_eq!(condition.reason, "FailedCreate");
    assert_eq!(condition.message, "quota exceeded: instances 2/2");
    let event = wait_for(Duration::from_secs(10), "a FailedCreate event", || async {
        let events = beta.list_of::<EventKind>(Some("beta")).await.unwrap().items;
        events.into_iter().find(|e| e.spec.reason == "FailedCreate")
    })
    .await;
    assert_eq!(event.spec.message, "quota exceeded: instances 2/2");
    assert_eq!(event.spec.involved_object.name.as_str(), "greedy");
    // Usage is reported on the Namespace, and the namespace holds exactly its quota.
    let usage = wait_for(Duration::from_secs(10), "beta's usage", || async {
        let AnyObject::Namespace(n) = beta.get(Kind::Namespace, None, "beta").await.unwrap() else { unreachable!() };
        n.status.map(|s| s.usage).filter(|u| u.instances == Some(2))
    })
    .await;
    assert_eq!(usage.memory.map(|m| m.0), Some(64 << 20));
    assert_eq!(instances_in(&beta, "beta").await, 2);
    // The neighbour is unaffected.
    wait_for(Duration::from_secs(10), "alpha's three instances", || async {
        (instances_in(&alpha, "alpha").await == 3).then_some(())
    })
    .await;

    // Deleting an instance frees room the workload takes again; never more than the quota.
    let taken = beta.list_of::<InstanceKind>(Some("beta")).await.unwrap().items;
    beta.delete(Kind::Instance, Some("beta"), taken[0].metadata.name.as_str()).await.unwrap();
    wait_for(Duration::from_secs(10), "a replacement", || async {
        let now = beta.list_of::<InstanceKind>(Some("beta")).await.unwrap().items;
        (now.len() == 2 && now.iter().all(|i| i.metadata.name != taken[0].metadata.name)).then_some(())
    })
    .await;
    assert_eq!(instances_in(&beta, "beta").await, 2);
}

#[tokio::test]
async fn requests_left_out_get_the_namespace_defaults_or_are_refused_under_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let bare = tenant_with_quota(&control, "bare", serde_json::json!({"memory": "128Mi"})).await;
    bare.create(&workload("bare", "sly", 3, None)).await.unwrap();
    let condition = wait_for(Duration::from_secs(10), "the refusal of a workload without requests", || async {
        let AnyObject::Workload(w) = bare.get(Kind::Workload, Some("bare"), "sly").await.unwrap() else {
            unreachable!()
        };
        w.status?.conditions.into_iter().find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert!(condition.message.contains("spec.resources.memory"), "{}", condition.message);
    assert_eq!(instances_in(&bare, "bare").await, 0);

    // With defaults, the same workload gets its requests when written, and the quota counts them.
    let AnyObject::Namespace(mut ns) = admin.get(Kind::Namespace, None, "bare").await.unwrap() else { unreachable!() };
    ns.spec.default_requests = Some(Resources { memory: Some(shoal_api::quantity::Memory(64 << 20)), cpu: None });
    admin.put(&AnyObject::Namespace(ns)).await.unwrap();
    let AnyObject::Workload(w) = bare.put(&workload("bare", "sly", 3, None)).await.unwrap() else { unreachable!() };
    assert_eq!(w.spec.resources.memory.map(|m| m.0), Some(64 << 20));
    wait_for(Duration::from_secs(10), "two instances of 64Mi in a 128Mi quota", || async {
        (instances_in(&bare, "bare").await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tenants_cannot_make_instances_write_status_or_ask_for_a_million_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let beta = tenant_with_quota(&control, "beta", serde_json::json!({"instances": 2})).await;
    let mut direct = instance_on("pinned", "n1");
    direct.meta_mut().namespace = Some(Name::new("beta").unwrap());
    let refused = beta.create(&direct).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");

    let AnyObject::Namespace(mut ns) = beta.get(Kind::Namespace, None, "beta").await.unwrap() else { unreachable!() };
    ns.status = Some(Default::default());
    let refused = beta.put_status(&AnyObject::Namespace(ns)).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");

    let refused = beta.create(&workload("beta", "bomb", 1_000_000, None)).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    assert!(refused.to_string().contains("spec.replicas"), "{refused}");
    assert_eq!(instances_in(&beta, "beta").await, 0);

    // A status in what a tenant creates is dropped (here, endpoints that would send traffic
    // somewhere): only the controllers write it.
    let forged = AnyObject::from_json(
        Kind::Service,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Service",
            "metadata": {"name": "forged", "namespace": "beta"},
            "spec": {"selector": {"workload": "nothing"}},
            "status": {"endpoints": [{"node": "n9", "address": "10.9.9.9", "port": 80, "peer": "10.9.9.9:443"}]}}),
    )
    .unwrap();
    for made in [beta.create(&forged).await.unwrap(), beta.get(Kind::Service, Some("beta"), "forged").await.unwrap()] {
        let AnyObject::Service(service) = made else { unreachable!() };
        assert!(service.status.is_none_or(|s| s.endpoints.is_empty()), "a tenant wrote a status");
    }
}

#[tokio::test]
async fn oversized_bodies_and_future_resource_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let config = control.client_config();
    let http = control.raw_http();
    let url = |path: &str| format!("{}{path}", config.server);
    let huge = format!(
        r#"{{"apiVersion":"shoal.dev/v1","kind":"Namespace","metadata":{{"name":"big","annotations":{{"a":"{}"}}}}}}"#,
        "x".repeat(2 << 20)
    );
    let response = http.post(url("/api/v1/namespaces")).bearer_auth(&config.token).body(huge).send().await.unwrap();
    assert_eq!(response.status(), 413);
    // A watch or list from a revision the store has not reached would skip every change until then.
    for path in
        ["/api/v1/workloads?watch=true&resourceVersion=999999999", "/api/v1/workloads?resourceVersion=999999999"]
    {
        let response = http.get(url(path)).bearer_auth(&config.token).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("beyond the store's current revision"), "{path}: {body}");
    }
    // The store took nothing from any of it, and still answers.
    assert!(control.client().get(Kind::Namespace, None, "big").await.is_err());
}

fn service(ns: &str, name: &str, hosts: &[&str]) -> AnyObject {
    AnyObject::from_json(
        Kind::Service,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"workload": name}, "ingressHosts": hosts}}),
    )
    .unwrap()
}

#[tokio::test]
async fn a_tenant_cannot_claim_another_namespaces_hosts_or_cluster_names() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let alpha = tenant_with_quota(&control, "alpha", serde_json::json!({})).await;
    let beta = tenant_with_quota(&control, "beta", serde_json::json!({})).await;
    // Both are granted *.example.com; alpha claims pay.example.com first.
    for ns in ["alpha", "beta"] {
        let AnyObject::Namespace(mut n) = admin.get(Kind::Namespace, None, ns).await.unwrap() else { unreachable!() };
        n.spec.ingress_hosts = vec!["*.example.com".into()];
        admin.put(&AnyObject::Namespace(n)).await.unwrap();
    }
    alpha.create(&service("alpha", "pay", &["pay.example.com", "www.alpha.localhost"])).await.unwrap();

    let attacks = [
        (vec!["pay.alpha.svc.cluster.local"], Reason::Invalid, "cluster-internal name"),
        (vec!["pay.alpha.localhost"], Reason::Forbidden, "may not claim pay.alpha.localhost"),
        (vec!["api.bank.com"], Reason::Forbidden, "may not claim api.bank.com"),
        (vec!["ok.beta.localhost", "pay.example.com"], Reason::Conflict, "claimed by service alpha/pay"),
    ];
    for (hosts, reason, says) in attacks {
        let refused = beta.create(&service("beta", "thief", &hosts)).await.unwrap_err();
        assert_eq!(refused.reason(), Some(reason), "{hosts:?}: {refused}");
        assert!(refused.to_string().contains(says), "{hosts:?}: {refused}");
    }
    // What beta owns or was granted is its own; alpha's claim is untouched.
    beta.create(&service("beta", "shop", &["www.beta.localhost", "shop.example.com"])).await.unwrap();
    let AnyObject::Service(pay) = alpha.get(Kind::Service, Some("alpha"), "pay").await.unwrap() else { unreachable!() };
    assert_eq!(pay.spec.ingress_hosts, ["pay.example.com", "www.alpha.localhost"]);
    // Updating a Service keeps its own claims.
    alpha.put(&service("alpha", "pay", &["pay.example.com"])).await.unwrap();
}

#[tokio::test]
async fn a_node_token_gets_a_short_lived_certificate_for_its_own_host_only() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let request = TokenRequest { name: Name::new("n1").unwrap(), namespaces: Vec::new(), node: true };
    let n1 = admin.with_token(&admin.create_token(&request).await.unwrap().token);
    let ask = |hosts: &[&str]| CredentialsRequest { hosts: hosts.iter().map(|h| h.to_string()).collect() };

    let refused = n1.node_credentials("n1", &ask(&["api.example.com", "127.0.0.1"])).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    let issued = n1.node_credentials("n1", &ask(&["127.0.0.1"])).await.unwrap();
    let pem = x509_parser::pem::Pem::iter_from_buffer(issued.cert.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let validity = cert.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert!(lifetime <= 13 * 3600, "valid for {lifetime} s");
    assert!(issued.renew_after_secs > 0 && (issued.renew_after_secs as i64) < lifetime);
    let names: Vec<String> =
        cert.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["IPAddress(7f:00:00:01)", "URI(spiffe://shoal/node/n1/0)"], "127.0.0.1, its name, nothing else");
    assert!(cert.issuer().to_string().contains("shoal node CA"), "{}", cert.issuer());

    // The host is fixed at the first request: another is refused, the same one renewed.
    let refused = n1.node_credentials("n1", &ask(&["api.example.com"])).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    assert!(refused.to_string().contains("joined as 127.0.0.1"), "{refused}");
    n1.node_credentials("n1", &ask(&["127.0.0.1"])).await.unwrap();

    // Its Node keeps that host and, once registered, the operator's labels and cordon.
    let node = |address: &str, labels: serde_json::Value, unschedulable: bool| {
        AnyObject::from_json(
            Kind::Node,
            &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": labels},
                "spec": {"address": address, "agentAddress": address, "unschedulable": unschedulable}}),
        )
        .unwrap()
    };
    let refused = n1.put(&node("10.0.0.9:8080", serde_json::json!({}), false)).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    n1.put(&node("127.0.0.1:8080", serde_json::json!({"zone": "a"}), false)).await.unwrap();
    admin.put(&node("127.0.0.1:8080", serde_json::json!({"zone": "a"}), true)).await.unwrap();
    for (labels, unschedulable) in [(serde_json::json!({"zone": "b"}), true), (serde_json::json!({"zone": "a"}), false)]
    {
        let refused = n1.put(&node("127.0.0.1:9090", labels, unschedulable)).await.unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    }
    // Another port on the same host is fine (an agent restarted on a free port).
    n1.put(&node("127.0.0.1:9090", serde_json::json!({"zone": "a"}), true)).await.unwrap();

    // The capacity of its first report is a ceiling: lower is fine, higher only for an admin.
    let status = |instances: u32| {
        let mut node = node("127.0.0.1:9090", serde_json::json!({"zone": "a"}), true);
        let AnyObject::Node(n) = &mut node else { unreachable!() };
        let capacity = shoal_api::resources::node::Capacity { instances, ..Default::default() };
        n.status = Some(shoal_api::resources::node::NodeStatus {
            allocatable: capacity.clone(),
            capacity,
            ..Default::default()
        });
        node
    };
    n1.put_status(&status(10)).await.unwrap();
    n1.put_status(&status(5)).await.unwrap();
    // Reporting nothing first does not reset the ceiling.
    n1.put_status(&status(0)).await.unwrap();
    let refused = n1.put_status(&status(1_000_000)).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    assert!(refused.to_string().contains("status.capacity.instances"), "{refused}");
    admin.put_status(&status(20)).await.unwrap();
    let AnyObject::Node(stored) = admin.get(Kind::Node, None, "n1").await.unwrap() else { unreachable!() };
    assert_eq!(stored.status.unwrap().capacity.instances, 20, "what the admin set");
}

/// A client of node agents presenting `credentials` (a node's) and trusting the node CA.
fn agent_client_as(credentials: &shoal_api::agent::NodeCredentials) -> reqwest::Client {
    shoal_api::client::install_crypto_provider();
    let chain: Vec<&str> = credentials.cert.split_inclusive("-----END CERTIFICATE-----\n").collect();
    let ca = reqwest::Certificate::from_pem(chain.last().unwrap().as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(format!("{}{}", credentials.key, credentials.cert).as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).identity(identity).build().unwrap()
}

#[tokio::test]
async fn a_revoked_node_is_refused_by_its_peers_and_a_node_certificate_reads_no_logs() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--watch-bookmark-interval", "1s"]);
    let admin = control.client();
    let _victim = NodeProcess::start(&control, "n2", &[]);
    let agent = wait_for(Duration::from_secs(10), "node n2 registered with its agent address", || async {
        match admin.get(Kind::Node, None, "n2").await {
            Ok(AnyObject::Node(n)) if !n.spec.agent_address.is_empty() => Some(n.spec.agent_address),
            _ => None,
        }
    })
    .await;
    let join = |token: String| {
        let n1 = admin.with_token(&token);
        async move { n1.node_credentials("n1", &CredentialsRequest { hosts: vec!["127.0.0.1".into()] }).await }
    };
    let request = TokenRequest { name: Name::new("n1").unwrap(), namespaces: Vec::new(), node: true };
    let token = admin.create_token(&request).await.unwrap().token;
    let as_n1 = agent_client_as(&join(token.clone()).await.unwrap());
    let forward = |client: reqwest::Client| {
        let url = format!("https://{agent}/");
        async move {
            let response = client
                .get(url)
                .header("x-shoal-service", "default/none")
                .header("x-shoal-caller", "outside")
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // A node's certificate is taken for forwarded Service traffic, never for the control plane's
    // calls (logs).
    let (status, body) = forward(as_n1.clone()).await;
    assert_eq!(status, 404, "a node is let in (there is no such service): {body}");
    let logs = as_n1.get(format!("https://{agent}/logs/default/anything")).send().await.unwrap();
    assert_eq!(logs.status().as_u16(), 401, "{}", logs.text().await.unwrap());

    // Revoked: the token is refused at once, its open watch ends, and n2 refuses n1's
    // certificate, still within its validity, at its next heartbeat (well within 60 s), on the
    // connection n1 keeps open too.
    let watch = admin.with_token(&token).watch(Kind::Service, None, 0).await.unwrap();
    admin.delete_token("n1").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        let mut watch = std::pin::pin!(watch);
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's watch is still open after 10 s");
    let refused = join(token).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Unauthorized), "{refused}");
    let body = wait_for(Duration::from_secs(10), "n2 refusing the revoked node's certificate", || {
        let client = as_n1.clone();
        async move {
            let (status, body) = forward(client).await;
            (status == 401).then_some(body)
        }
    })
    .await;
    assert!(body.contains("node n1's credentials were revoked"), "{body}");

    // A node of that name joined anew (a new token) is taken again; its old certificate is not.
    let token = admin.create_token(&request).await.unwrap().token;
    let (status, body) = forward(agent_client_as(&join(token).await.unwrap())).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(forward(as_n1).await.0, 401);
}

#[tokio::test]
async fn idle_connections_cannot_exhaust_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &["--ingress-max-connections", "20", "--ingress-idle-timeout", "1s"]);
    // A hostile client takes every slot and more, and sends nothing (or half a request).
    let mut hogs = Vec::new();
    for i in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&node.ingress).await.unwrap();
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x.default.localhost\r\n").await.unwrap();
        }
        hogs.push(stream);
    }
    // A real request still gets its answer once the hogs' idle time is up, and the node stays
    // Ready throughout (its heartbeats are not the ingress's to starve).
    let started = std::time::Instant::now();
    let (status, body) =
        common::workloads::get(&common::workloads::http(), &node.ingress, "nothing.default.localhost", "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    let AnyObject::Node(n1) = control.client().get(Kind::Node, None, "n1").await.unwrap() else { unreachable!() };
    assert_eq!(n1.status.and_then(|s| s.ready().map(|c| c.status.clone())).as_deref(), Some("True"));
    // The hogs were closed by the ingress.
    assert_all_closed(&mut hogs).await;

    // An HTTP/2 client that says hello and then nothing is closed too: the ingress's own
    // frames (its settings, acknowledgements) do not keep an idle connection alive.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h2 = tokio::net::TcpStream::connect(&node.ingress).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match h2.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection to the ingress was still open after 5 s");
}

/// Asserts that the listener ended every one of `hogs` (a read finishes: end of stream, a
/// reset, or a last response).
async fn assert_all_closed(hogs: &mut [tokio::net::TcpStream]) {
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for hog in hogs.iter_mut() {
        let mut buf = [0u8; 256];
        if tokio::time::timeout(Duration::from_secs(3), hog.read(&mut buf)).await.is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, hogs.len(), "every idle connection was ended");
}

#[tokio::test]
async fn idle_connections_cannot_exhaust_the_api_server_and_a_quiet_watch_outlives_them() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--api-max-connections", "20", "--api-idle-timeout", "1s", "--watch-bookmark-interval", "300ms"];
    let control = ControlProcess::start(dir.path(), &flags);
    let watcher = control.client();
    let start = watcher.list(Kind::Namespace, None, None).await.unwrap().resource_version;
    let mut events = Box::pin(watcher.watch(Kind::Namespace, None, start).await.unwrap());
    let addr = control.api_url.trim_start_matches("https://").to_owned();
    let mut hogs = Vec::new();
    for i in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            // The start of a TLS record, never finished.
            stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        }
        hogs.push(stream);
    }
    // A new client is served once the hogs' idle time is up.
    let started = std::time::Instant::now();
    let fresh = Client::new(&control.client_config()).unwrap();
    fresh.create(&common::namespace("served")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "served after {:?}", started.elapsed());
    // The watch opened before them was quiet for longer than the idle timeout, and lives.
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.object.meta().name.as_str(), "served");
    assert_all_closed(&mut hogs).await;
}

#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--max-connections-per-principal", "2"]);
    let (_beta, token) = tenant_and_token(&control, "beta", serde_json::json!({})).await;
    let config = control.client_config();
    // Each client has a connection of its own.
    let connect = || control.raw_http();
    let ask = |client: &reqwest::Client, token: &str| {
        client.get(format!("{}/api/v1/namespaces/beta/workloads", config.server)).bearer_auth(token).send()
    };
    let (first, second, third) = (connect(), connect(), connect());
    assert_eq!(ask(&first, &token).await.unwrap().status().as_u16(), 200);
    assert_eq!(ask(&second, &token).await.unwrap().status().as_u16(), 200);
    let refused = ask(&third, &token).await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let body = refused.text().await.unwrap();
    assert!(body.contains("tenant beta has 2 connections open"), "{body}");
    // The admin is not counted, and a closed connection frees its place.
    for _ in 0..3 {
        assert_eq!(ask(&connect(), &config.token).await.unwrap().status().as_u16(), 200);
    }
    drop(first);
    wait_for(Duration::from_secs(5), "a freed connection", || async {
        (ask(&third, &token).await.unwrap().status().as_u16() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_watches() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--max-watches-per-principal", "2"]);
    let (beta, token) = tenant_and_token(&control, "beta", serde_json::json!({})).await;
    let config = control.client_config();
    let http = control.raw_http();
    let watch = || {
        http.get(format!("{}/api/v1/namespaces/beta/workloads?watch=true", config.server)).bearer_auth(&token).send()
    };
    let first = watch().await.unwrap();
    let second = watch().await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = watch().await.unwrap();
    assert_eq!(third.status().as_u16(), 429);
    let body = third.text().await.unwrap();
    assert!(body.contains("2 watches open"), "{body}");
    // Other requests still work, and a closed watch frees its slot.
    beta.list_of::<InstanceKind>(Some("beta")).await.unwrap();
    drop(first);
    wait_for(Duration::from_secs(5), "a freed watch slot", || async {
        let again = watch().await.unwrap();
        (again.status().as_u16() == 200).then_some(())
    })
    .await;
    // The admin is not counted.
    for _ in 0..3 {
        let admin = http
            .get(format!("{}/api/v1/workloads?watch=true", config.server))
            .bearer_auth(&config.token)
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status().as_u16(), 200);
        std::mem::forget(admin);
    }
}

#[tokio::test]
async fn a_node_renews_its_certificate_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--node-cert-validity", "3s"]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    common::workloads::apply(&control, "hello", &common::workloads::workload_yaml("hello", "$HELLO", ""));
    let running = common::workloads::wait_running(&client, "hello", 1, None, Duration::from_secs(30)).await;
    // Renewed every second: four renewals put the first certificate past its 3 s.
    wait_for(Duration::from_secs(20), "four renewals in the node's log", || async {
        (node.log().matches("credentials renewed").count() >= 4).then_some(())
    })
    .await;
    // Past the first certificate's 3 s: the control plane still reaches the agent API (logs go
    // through it), so the agent serves the renewed certificate.
    let logs = client.logs("default", running[0].metadata.name.as_str(), &Default::default()).await.unwrap();
    drop(logs);
    let (status, body) =
        common::workloads::get(&common::workloads::http(), &node.ingress, "hello.default.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_escaped_path_is_no_way_around_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let (beta, token) = tenant_and_token(&control, "beta", serde_json::json!({"instances": 1})).await;
    let config = control.client_config();
    let http = control.raw_http();
    let mut pinned = instance_on("pinned", "n1");
    pinned.meta_mut().namespace = Some(Name::new("beta").unwrap());
    // `%69nstances` is `instances` once the router decodes it.
    let response = http
        .post(format!("{}/api/v1/namespaces/beta/%69nstances", config.server))
        .bearer_auth(&token)
        .json(&pinned)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "{}", response.text().await.unwrap());
    let response = http
        .put(format!("{}/api/v1/namespaces/beta/%73tatus", config.server))
        .bearer_auth(&token)
        .body(r#"{"apiVersion":"shoal.dev/v1","kind":"Namespace","metadata":{"name":"beta"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(instances_in(&beta, "beta").await, 0, "no instance was made");
}

#[tokio::test]
async fn module_storage_is_charged_to_its_namespace_and_fenced_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let beta = tenant_with_quota(&control, "beta", serde_json::json!({"moduleBytes": "1Mi"})).await;
    let alpha = tenant_with_quota(&control, "alpha", serde_json::json!({})).await;
    let first = common::with_custom_section(EMPTY_MODULE, "pad", &common::noise(600 << 10, 1));
    let second = common::with_custom_section(EMPTY_MODULE, "pad", &common::noise(600 << 10, 2));
    let charged = |client: Client, ns: &'static str| async move {
        let AnyObject::Namespace(n) = client.get(Kind::Namespace, None, ns).await.unwrap() else { unreachable!() };
        n.status.and_then(|s| s.usage.module_bytes).map(|m| m.0)
    };
    let empty = EMPTY_MODULE.len() as u64;

    // Within the quota, and charged once however often it is uploaded.
    let reference = beta.put_module("beta", first.clone()).await.unwrap();
    beta.put_module("beta", first.clone()).await.unwrap();
    let expected = empty + first.len() as u64;
    wait_for(Duration::from_secs(10), "beta charged for its modules", || async {
        (charged(beta.clone(), "beta").await == Some(expected)).then_some(())
    })
    .await;
    // Past it: a 403 with the figures, and nothing stored.
    let refused = beta.put_module("beta", second.clone()).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    assert!(refused.to_string().contains("quota exceeded: module storage"), "{refused}");
    assert!(refused.to_string().contains("> 1Mi"), "{refused}");
    let hex = |bytes: &[u8]| shoal_api::digest::sha256_hex(bytes);
    assert!(!beta.has_module("beta", &hex(&second)).await.unwrap());

    // Another namespace pays for its own copy, and neither reads the other's.
    alpha.put_module("alpha", second.clone()).await.unwrap();
    let theirs = beta.get_module(Some("alpha"), &hex(&second)).await.unwrap_err();
    assert_eq!(theirs.reason(), Some(Reason::Forbidden), "{theirs}");
    let by_digest = beta.get_module(None, &hex(&second)).await.unwrap_err();
    assert_eq!(by_digest.reason(), Some(Reason::Forbidden), "{by_digest}");
    let not_here = beta.get_module(Some("beta"), &hex(&second)).await.unwrap_err();
    assert_eq!(not_here.reason(), Some(Reason::NotFound), "{not_here}");
    // Nor runs it: a Workload runs only what its namespace uploaded.
    let mut borrowed = workload("beta", "borrowed", 1, None);
    let AnyObject::Workload(w) = &mut borrowed else { unreachable!() };
    w.spec.module = format!("sha256:{}", hex(&second));
    let refused = beta.create(&borrowed).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Invalid), "{refused}");
    assert!(refused.to_string().contains("not uploaded to namespace beta"), "{refused}");

    // Removing one frees its room.
    beta.delete_module("beta", reference.strip_prefix("sha256:").unwrap()).await.unwrap();
    beta.put_module("beta", second).await.unwrap();
    assert_eq!(alpha.list_modules("alpha").await.unwrap().len(), 2, "alpha's modules are untouched");
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_it_holds_and_nothing_of_its_neighbours() {
    use common::workloads::{apply, get, http};
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let admin = control.client();
    let yaml = |ns: &str, replicas: u32| {
        format!(
            "apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: web\n  namespace: {ns}\n\
             spec:\n  module: $HELLO\n  replicas: {replicas}\n---\n\
             apiVersion: shoal.dev/v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\n\
             spec:\n  selector:\n    workload: web\n"
        )
    };
    apply(&control, "doomed", &yaml("doomed", 2));
    apply(&control, "kept", &yaml("kept", 1));
    let running = |ns: &'static str, n: usize| {
        let admin = admin.clone();
        async move {
            let items = admin.list_of::<InstanceKind>(Some(ns)).await.unwrap().items;
            (items.len() == n && items.iter().all(|i| i.is_ready())).then_some(())
        }
    };
    wait_for(Duration::from_secs(30), "doomed's two instances", || running("doomed", 2)).await;
    wait_for(Duration::from_secs(30), "kept's instance", || running("kept", 1)).await;

    let refused = admin.delete(Kind::Namespace, None, "default").await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    let AnyObject::Namespace(terminating) = admin.delete(Kind::Namespace, None, "doomed").await.unwrap() else {
        unreachable!()
    };
    assert!(shoal_api::resources::namespace::NamespaceKind::is_terminating(&terminating));
    // Nothing new while it empties.
    match admin.create(&workload("doomed", "late", 1, None)).await {
        Err(e) => assert!(
            e.reason() == Some(Reason::Forbidden) && e.to_string().contains("being deleted")
                || e.reason() == Some(Reason::NotFound),
            "{e}"
        ),
        Ok(_) => panic!("a workload was created in a Terminating namespace"),
    }
    wait_for(Duration::from_secs(30), "the namespace to go", || async {
        admin.get(Kind::Namespace, None, "doomed").await.err().filter(|e| e.reason() == Some(Reason::NotFound))
    })
    .await;
    for kind in [Kind::Workload, Kind::Instance, Kind::Service, Kind::Event] {
        assert!(admin.list(kind, Some("doomed"), None).await.unwrap().items.is_empty(), "{kind:?} left in doomed");
    }
    assert!(admin.list_modules("doomed").await.unwrap().is_empty(), "module records left in doomed");
    // The neighbour is untouched and still serves.
    wait_for(Duration::from_secs(5), "kept's instance", || running("kept", 1)).await;
    let (status, _) = get(&http(), &node.ingress, "web.kept.localhost", "/hi").await;
    assert_eq!(status, 200);
}

/// A local HTTP server that answers `ok` and counts the connections it got.
async fn counting_server(
    ip: std::net::IpAddr,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // The whole head first: answering (and closing) before the request has all
                // arrived would reset the connection under the client's feet.
                let (mut head, mut buf) = (Vec::new(), [0u8; 4096]);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });
    (addr, count)
}

/// This machine's address on its default route, if it has one.
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.200:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[tokio::test]
async fn a_guest_reaches_no_loopback_or_metadata_address_even_by_an_allowed_name() {
    use common::workloads::{apply, get, http};
    let (loopback, hits) = counting_server("127.0.0.1".parse().unwrap()).await;
    let outside = outside_address();
    let public = outside.filter(|ip| shoal_node::runtime::egress::forbidden(*ip).is_none());
    let reachable = match public {
        Some(ip) => Some(counting_server(ip).await.0),
        None => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let mut allowed = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "169.254.169.254".to_owned()];
    allowed.extend(public.map(|ip| ip.to_string()));
    let yaml = format!(
        "apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: egress\n---\n\
         apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: frontend\n  namespace: egress\n\
         spec:\n  module: $FRONTEND\n  allowedOutboundHosts: [{}]\n",
        allowed.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")
    );
    apply(&control, "egress", &yaml);
    let client = control.client();
    wait_for(Duration::from_secs(30), "the frontend to run", || async {
        let items = client.list_of::<InstanceKind>(Some("egress")).await.unwrap().items;
        items.iter().any(|i| i.is_ready()).then_some(())
    })
    .await;
    let http = http();
    let port = loopback.port();
    for target in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "169.254.169.254".to_owned()] {
        let (status, body) = get(&http, &node.ingress, "frontend.egress.localhost", &format!("/fetch/{target}/")).await;
        assert_eq!(status, 502, "{target}: {body}");
        assert!(body.contains("denied"), "{target}: {body}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the loopback server was reached");
    wait_for(Duration::from_secs(10), "an OutboundDenied event naming the loopback address", || async {
        let events = client.list_of::<EventKind>(Some("egress")).await.unwrap().items;
        events.into_iter().find(|e| e.spec.reason == "OutboundDenied" && e.spec.message.contains("a loopback address"))
    })
    .await;
    // What is outside stays reachable.
    if let Some(addr) = reachable {
        let (status, body) = get(&http, &node.ingress, "frontend.egress.localhost", &format!("/fetch/{addr}/")).await;
        assert_eq!((status, body.as_str()), (200, "frontend got: ok"), "{addr}");
    } else {
        eprintln!("no public address on this machine ({outside:?}): the reachable case is not checked");
    }
}

#[tokio::test]
async fn a_flood_of_refusals_is_one_event_written_at_a_pace_and_events_expire() {
    use common::workloads::{apply, get, http};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--event-ttl", "3s"]);
    let node = NodeProcess::start(&control, "n1", &["--event-interval", "500ms"]);
    let yaml = "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: frontend\n  namespace: default\n\
                spec:\n  module: $FRONTEND\n";
    apply(&control, "frontend", yaml);
    let client = control.client();
    wait_for(Duration::from_secs(30), "the frontend to run", || async {
        let items = client.list_of::<InstanceKind>(Some("default")).await.unwrap().items;
        items.iter().any(|i| i.is_ready()).then_some(())
    })
    .await;
    let start = client.list(Kind::Event, Some("default"), None).await.unwrap().resource_version;
    let mut writes = Box::pin(client.watch(Kind::Event, Some("default"), start).await.unwrap());
    let http = http();
    let started = std::time::Instant::now();
    let floods = 200;
    for _ in 0..floods {
        let (status, _) = get(&http, &node.ingress, "frontend.default.localhost", "/fetch/not-allowed.example/").await;
        assert_eq!(status, 502);
    }
    let event = wait_for(Duration::from_secs(10), "one event counting every refusal", || async {
        let events = client.list_of::<EventKind>(Some("default")).await.unwrap().items;
        let denied: Vec<_> = events.into_iter().filter(|e| e.spec.reason == "OutboundDenied").collect();
        assert!(denied.len() <= 1, "one event per instance and reason: {denied:?}");
        denied.into_iter().next().filter(|e| e.spec.count == floods)
    })
    .await;
    let elapsed = started.elapsed();
    let mut written = 0;
    while let Ok(Some(change)) = tokio::time::timeout(Duration::from_millis(200), writes.next()).await {
        if change.unwrap().object.meta().name == event.metadata.name {
            written += 1;
        }
    }
    let most = (elapsed.as_millis() / 500) as usize + 2;
    assert!(written <= most, "{written} writes for {floods} refusals in {elapsed:?} (at most {most})");
    // And it goes a TTL after it last happened.
    wait_for(Duration::from_secs(15), "the event to expire", || async {
        let events = client.list_of::<EventKind>(Some("default")).await.unwrap().items;
        (!events.iter().any(|e| e.metadata.name == event.metadata.name)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_instance_s_requests_in_flight_share_its_memory_limit() {
    use common::workloads::{apply, get, http};
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let spec = "  concurrency: 4\n  resources:\n    memory: 48Mi\n";
    apply(&control, "trouble", &common::workloads::workload_yaml("trouble", "$TROUBLE", spec));
    common::workloads::wait_running(&control.client(), "trouble", 1, None, Duration::from_secs(30)).await;
    // Three requests that each take 20 MiB and hold it: each alone fits in 48Mi, and two
    // together do, but not three. Without a shared limit all three would run (60 MiB).
    let http = http();
    let held = futures::future::join_all(
        (0..3).map(|_| get(&http, &node.ingress, "trouble.default.localhost", "/hold/20/2000")),
    )
    .await;
    let ok = held.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = held.iter().filter(|(status, _)| *status == 500).collect();
    assert_eq!((ok, refused.len()), (2, 1), "{held:?}");
    assert!(refused[0].1.contains("requests in flight use"), "{held:?}");
    // What the requests held is given back when they end.
    for _ in 0..2 {
        let (status, body) = get(&http, &node.ingress, "trouble.default.localhost", "/hold/40/10").await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn a_guest_that_calls_itself_is_cut_off_at_the_hop_limit() {
    use common::workloads::{apply, get, http};
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let node = NodeProcess::start(&control, "n1", &[]);
    // A frontend whose upstream is its own Service; room for the whole chain in one instance.
    let yaml = "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: loop\n  namespace: default\n\
                spec:\n  module: $FRONTEND\n  concurrency: 16\n  env:\n  - name: API_URL\n    \
                value: http://loop.default.svc.cluster.local/\n---\n\
                apiVersion: shoal.dev/v1\nkind: Service\nmetadata:\n  name: loop\n  namespace: default\n\
                spec:\n  selector:\n    workload: loop\n  ports:\n  - name: http\n    port: 80\n";
    apply(&control, "loop", yaml);
    let client = control.client();
    common::workloads::wait_running(&client, "loop", 1, None, Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&http(), &node.ingress, "loop.default.localhost", "/").await;
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    assert_eq!(status, 502, "{body}");
    assert_eq!(body.matches("frontend got:").count(), 8, "8 calls were made, the 9th refused: {body}");
    wait_for(Duration::from_secs(10), "an OutboundDenied event naming the hop limit", || async {
        let events = client.list_of::<EventKind>(Some("default")).await.unwrap().items;
        events.into_iter().find(|e| e.spec.reason == "OutboundDenied" && e.spec.message.contains("past the limit of 8"))
    })
    .await;
    // The node still serves (the instance is free again).
    let (status, _) = get(&http(), &node.ingress, "loop.default.localhost", "/").await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_uploads_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let (_beta, token) = tenant_and_token(&control, "beta", serde_json::json!({})).await;
    let config = control.client_config();
    let http = control.raw_http();
    let upload = |i: u32, token: &str, body: reqwest::Body| {
        http.put(format!("{}/api/v1/namespaces/beta/modules/{i:064x}", config.server))
            .bearer_auth(token)
            .header("content-length", "1048576")
            .body(body)
            .send()
    };
    // Three uploads whose bodies never come: two hold their places until their deadline, and
    // the one that came last is refused at once.
    let mut senders = Vec::new();
    let mut slow = Vec::new();
    for i in 0..3 {
        let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        futures::SinkExt::send(&mut sender, Ok(b"\0asm".to_vec())).await.unwrap();
        senders.push(sender);
        slow.push(tokio::spawn(upload(i, &token, reqwest::Body::wrap_stream(receiver))));
    }
    let refused = wait_for(Duration::from_secs(10), "one of three uploads refused", || async {
        slow.iter().position(|s| s.is_finished())
    })
    .await;
    let response = slow.remove(refused).await.unwrap().unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let body = response.text().await.unwrap();
    assert!(body.contains("tenant beta has 2 uploads open"), "{body}");
    assert!(slow.iter().all(|s| !s.is_finished()), "the other two are still being read");
    // The admin is not held up by the tenant's uploads.
    let response = upload(10, &config.token, reqwest::Body::from(vec![0u8; 1 << 20])).await.unwrap();
    assert_eq!(response.status().as_u16(), 422, "the admin's upload is read (and refused: not wasm)");
    drop(senders);
    for upload in slow {
        let _ = upload.await;
    }
}
