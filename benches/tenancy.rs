//! Tenancy benchmarks against one real `shoal control` (release build):
//!
//! - `bomb`: a tenant applies a Workload of `replicas: 10000` (the most validation admits) in a
//!   namespace whose quota allows 2 instances; the control plane's resident memory before and
//!   30 s after (`SHOAL_BOMB_WAIT_SECS`), and how many instances exist then (the quota's 2).
//!   Anchor (issue 13): before quotas were enforced, `replicas: 1000000` grew the control plane
//!   from 2.1 GiB to 5.6 GiB in 24 s, and growing.
//!
//! `cargo bench --bench tenancy`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{ControlProcess, EMPTY_MODULE, rss_kib};
use shoal_api::resources::instance::InstanceKind;
use shoal_api::token::TokenRequest;
use shoal_api::{AnyObject, Kind, Name};

fn object(kind: Kind, value: serde_json::Value) -> AnyObject {
    AnyObject::from_json(kind, &value).unwrap()
}

#[tokio::main]
async fn main() {
    shoal_api::client::install_crypto_provider();
    let wait =
        Duration::from_secs(std::env::var("SHOAL_BOMB_WAIT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    admin
        .create(&object(
            Kind::Namespace,
            serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Namespace",
                "metadata": {"name": "beta"}, "spec": {"quota": {"instances": 2, "memory": "64Mi"}}}),
        ))
        .await
        .unwrap();
    let request =
        TokenRequest { name: Name::new("beta").unwrap(), namespaces: vec![Name::new("beta").unwrap()], node: false };
    let beta = admin.with_token(&admin.create_token(&request).await.unwrap().token);
    let module = beta.put_module("beta", EMPTY_MODULE.to_vec()).await.unwrap();
    let pid = control.pid().unwrap();
    // Settle first: the allocator's first growth is not the bomb's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    beta.create(&object(
        Kind::Workload,
        serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": "bomb", "namespace": "beta"},
            "spec": {"module": module, "replicas": 10000,
                     "resources": {"memory": "32Mi"}}}),
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < wait {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = rss_kib(pid);
    let instances = beta.list_of::<InstanceKind>(Some("beta")).await.unwrap().items.len();
    println!(
        "bomb: replicas 10000 under a quota of 2: control plane RSS {:.1} MiB before, {:.1} MiB {} s after ({:+.1}%), peak {:.1} MiB; {instances} instances",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        wait.as_secs(),
        (after as f64 / before as f64 - 1.0) * 100.0,
        peak as f64 / 1024.0
    );
    println!(
        "anchor: before quotas, replicas 1000000 grew the control plane from 2.1 GiB to 5.6 GiB in 24 s (issue 13)"
    );
    assert_eq!(instances, 2, "the quota admits 2");
}
