//! `shoal dev`: a control plane and a node in one process with no configuration; manifests
//! applied at start; Ctrl-C drains and exits; state survives a restart.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{ok_stdout, shoal_bin, spawn_announcing, wait_for};

struct Dev {
    child: Child,
    ingress: String,
}

fn start(dir: &std::path::Path, manifests: &[&std::path::Path]) -> Dev {
    let data = dir.join("data");
    let mut args =
        vec!["dev", "--data-dir", data.to_str().unwrap(), "--api-listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"];
    args.extend(["--ingress-listen", "127.0.0.1:0"]);
    for m in manifests {
        args.extend(["-f", m.to_str().unwrap()]);
    }
    let (child, announced) =
        spawn_announcing(&args, &dir.join("config.yaml"), &dir.join("dev.log"), &["ingress listening on http://"]);
    Dev { child, ingress: announced[0].clone() }
}

async fn hello(ingress: &str) -> Option<String> {
    shoal_api::client::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let response =
        client.get(format!("http://{ingress}/")).header("host", "hello.default.localhost").send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

fn interrupt_and_wait(mut dev: Dev) {
    let status = std::process::Command::new("kill").args(["-INT", &dev.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            assert!(status.success(), "shoal dev exited with {status} after Ctrl-C");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "shoal dev did not exit within 20 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn dev_serves_applied_manifests_and_keeps_state_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("hello.yaml");
    let yaml = format!(
        "apiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: hello\nspec:\n  module: {}\n  replicas: 2\n",
        shoal_guest_artifacts::HELLO
    );
    std::fs::write(&manifest, yaml).unwrap();

    let dev = start(dir.path(), &[&manifest]);
    let body = wait_for(Duration::from_secs(20), "hello to answer", || hello(&dev.ingress)).await;
    assert!(body.starts_with("hello from shoal"), "{body}");
    // The client config it wrote works from another process, with no flags.
    let config = dir.path().join("config.yaml");
    let run = |args: &[&str]| std::process::Command::new(shoal_bin()).args(args).env("SHOAL_CONFIG", &config).output();
    let instances = ok_stdout(&run(&["get", "instances"]).unwrap());
    assert_eq!(instances.lines().filter(|l| l.contains("Running")).count(), 2, "{instances}");
    interrupt_and_wait(dev);

    let dev = start(dir.path(), &[]);
    wait_for(Duration::from_secs(20), "hello to answer after the restart", || hello(&dev.ingress)).await;
    let instances = ok_stdout(&run(&["get", "instances"]).unwrap());
    assert_eq!(instances.lines().filter(|l| l.contains("Running")).count(), 2, "{instances}");
    interrupt_and_wait(dev);
}
