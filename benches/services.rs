//! Service path benchmarks against real processes (release build): one control plane and two
//! nodes on 127.0.0.2 and 127.0.0.3.
//!
//! - `proxy-hop`: latency of `GET` for the `api` Service answered on the node the request
//!   entered (an instance runs there) vs entering the other node, whose proxy forwards it over
//!   mutually authenticated TLS. The difference is what the extra hop costs.
//! - `guest-to-guest`: latency of `GET` to a frontend guest that calls the `api` Service on the
//!   same node through the in-process path (`http://api.shop.svc.cluster.local/`) vs through a
//!   loopback socket to the node's own ingress (`http://127.0.0.2:PORT/`, allowed as an outbound
//!   host).
//!
//! Sequential requests over one keep-alive connection; the two sides alternate in rounds
//! (`SHOAL_ROUNDS`, default 5, of `SHOAL_REQUESTS`, default 2000, each) so that noise on this
//! shared machine hits both alike. `cargo bench --bench services [-- proxy-hop|guest-to-guest]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::workloads::apply;
use common::{ControlProcess, NodeProcess, wait_for};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `n` sequential GETs of `host` through `ingress`; each one's latency.
async fn measure(http: &reqwest::Client, ingress: &str, host: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = http.get(format!("http://{ingress}/")).header("host", host).send().await.unwrap();
        assert_eq!(response.status(), 200, "{host} via {ingress}");
        response.bytes().await.unwrap();
        times.push(start.elapsed());
    }
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Alternates `a` and `b` for the configured rounds; returns both latency sets, sorted.
async fn compare(http: &reqwest::Client, a: (&str, &str), b: (&str, &str)) -> (Vec<Duration>, Vec<Duration>) {
    let (rounds, requests) = (env_or("SHOAL_ROUNDS", 5), env_or("SHOAL_REQUESTS", 2000));
    measure(http, a.0, a.1, 200).await;
    measure(http, b.0, b.1, 200).await;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        first.extend(measure(http, a.0, a.1, requests).await);
        second.extend(measure(http, b.0, b.1, requests).await);
    }
    first.sort();
    second.sort();
    (first, second)
}

fn row(name: &str, times: &[Duration]) {
    println!(
        "| {name} | {:.0} µs | {:.0} µs | {} |",
        us(percentile(times, 0.5)),
        us(percentile(times, 0.99)),
        times.len()
    );
}

#[tokio::main]
async fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    shoal_api::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let n1 = NodeProcess::start(&control, "n1", &["--ingress-listen", "127.0.0.2:0", "--labels", "role=a"]);
    let n2 = NodeProcess::start(&control, "n2", &["--ingress-listen", "127.0.0.3:0", "--labels", "role=b"]);
    let pinned = "  placement:\n    nodeSelector:\n      role: a\n";
    let workload = |name: &str, module: &str, extra: &str| {
        format!(
            "---\napiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  module: {module}\n{pinned}{extra}"
        )
    };
    let yaml = [
        "apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: shop\nspec:\n  ingressHosts:\n  - 127.0.0.2\n".to_owned(),
        workload("api", "$HELLO", "  env:\n  - name: GREETING\n    value: api\n"),
        "---\napiVersion: shoal.dev/v1\nkind: Service\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  selector:\n    workload: api\n  ingressHosts:\n  - 127.0.0.2\n".to_owned(),
        workload("inproc", "$FRONTEND", "  env:\n  - name: API_URL\n    value: http://api.shop.svc.cluster.local/\n"),
        workload(
            "socket",
            "$FRONTEND",
            &format!(
                "  env:\n  - name: API_URL\n    value: http://{}/\n  allowedOutboundHosts:\n  - 127.0.0.2\n",
                n1.ingress
            ),
        ),
    ]
    .concat();
    apply(&control, "bench", &yaml);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for (ingress, host) in [
        (&n1.ingress, "api.shop.localhost"),
        (&n2.ingress, "api.shop.localhost"),
        (&n1.ingress, "inproc.shop.localhost"),
        (&n1.ingress, "socket.shop.localhost"),
    ] {
        wait_for(Duration::from_secs(60), &format!("{host} via {ingress}"), || async {
            let response = http.get(format!("http://{ingress}/")).header("host", host).send().await.ok()?;
            let ok = response.status() == 200 && response.text().await.ok()?.contains("api from shoal");
            ok.then_some(())
        })
        .await;
    }
    println!("machine: {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));

    if wanted("proxy-hop") {
        let (same, hop) =
            compare(&http, (&n1.ingress, "api.shop.localhost"), (&n2.ingress, "api.shop.localhost")).await;
        println!("\nproxy hop: GET for the api Service, entering the node that runs it vs the other node\n");
        println!("| path | p50 | p99 | requests |\n|---|---|---|---|");
        row("same node (in process)", &same);
        row("other node (proxy hop, mTLS)", &hop);
        println!(
            "\nextra hop at p50: {:.0} µs (goal <= 500 µs)",
            us(percentile(&hop, 0.5)) - us(percentile(&same, 0.5))
        );
    }
    if wanted("guest-to-guest") {
        let (inproc, socket) =
            compare(&http, (&n1.ingress, "inproc.shop.localhost"), (&n1.ingress, "socket.shop.localhost")).await;
        println!("\nguest to guest on one node: GET to a frontend guest that calls the api Service\n");
        println!("| call path | p50 | p99 | requests |\n|---|---|---|---|");
        row("in process (api.shop.svc.cluster.local)", &inproc);
        row("loopback socket (node ingress)", &socket);
        println!("\nin-process saves {:.0} µs at p50", us(percentile(&socket, 0.5)) - us(percentile(&inproc, 0.5)));
    }
}
