//! Helpers for tests that run workloads: apply YAML that names the built guests, wait for
//! instances, talk HTTP through a node's ingress.

use std::time::Duration;

use shoal_api::Client;
use shoal_api::resources::instance::{Instance, InstanceKind};

use super::{ControlProcess, ok_stdout, wait_for};

/// Writes `yaml` (with `$HELLO` etc. replaced by the built guests' paths) and applies it.
pub fn apply(control: &ControlProcess, name: &str, yaml: &str) {
    let yaml = yaml
        .replace("$HELLO_P1", shoal_guest_artifacts::HELLO_P1)
        .replace("$HELLO", shoal_guest_artifacts::HELLO)
        .replace("$WORKER", shoal_guest_artifacts::WORKER)
        .replace("$CRASH", shoal_guest_artifacts::CRASH)
        .replace("$TROUBLE", shoal_guest_artifacts::TROUBLE)
        .replace("$FRONTEND", shoal_guest_artifacts::FRONTEND)
        .replace("$SETTINGS", shoal_guest_artifacts::SETTINGS)
        .replace("$MISBEHAVE", shoal_guest_artifacts::MISBEHAVE);
    let path = control.data_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    ok_stdout(&control.cli(&["apply", "-f", path.to_str().unwrap()]));
}

/// A Workload in `default` running `module`, with `extra` lines of its spec.
pub fn workload_yaml(name: &str, module: &str, extra: &str) -> String {
    format!(
        "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  module: {module}\n{extra}"
    )
}

/// The instances of `workload` in `default`.
pub async fn instances_of(client: &Client, workload: &str) -> Vec<Instance> {
    let list = client.list_of::<InstanceKind>(Some("default")).await.unwrap();
    list.items.into_iter().filter(|i| i.spec.workload.as_ref().is_some_and(|w| w.as_str() == workload)).collect()
}

/// Waits until `workload` has exactly `n` instances, all Running and ready (on `node`, if given).
pub async fn wait_running(
    client: &Client,
    workload: &str,
    n: usize,
    node: Option<&str>,
    within: Duration,
) -> Vec<Instance> {
    wait_for(within, &format!("{n} running instances of {workload}"), || async {
        let all = instances_of(client, workload).await;
        let ok = all.len() == n
            && all.iter().all(|i| {
                i.is_ready() && node.is_none_or(|node| i.spec.node.as_ref().is_some_and(|x| x.as_str() == node))
            });
        ok.then_some(all)
    })
    .await
}

/// An HTTP client with a 10 s timeout.
pub fn http() -> reqwest::Client {
    shoal_api::client::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// GET `path` through a node's ingress for `host`; (status, body).
pub async fn get(client: &reqwest::Client, ingress: &str, host: &str, path: &str) -> (u16, String) {
    let response = client.get(format!("http://{ingress}{path}")).header("host", host).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
