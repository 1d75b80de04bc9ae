//! Modules from an OCI registry, end to end: Debian's `docker-registry` on loopback with basic
//! auth, `shoal push` publishing the hello component, a Workload naming it by `oci://` with a
//! pull Secret, served by a node; and what the control plane refuses (a registry it was not told
//! to allow, no credentials, a tag the registry lacks).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::workloads::{apply, get, http, wait_running};
use common::{ControlProcess, NodeProcess, ok_stdout, shoal_bin, wait_for};
use shoal_api::module::{MODULE_SOURCE_ANNOTATION, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use shoal_api::{AnyObject, Kind};

const USER: &str = "puller";
const PASSWORD: &str = "pull-me-s3cret";

/// A `docker-registry` on loopback that wants `USER`/`PASSWORD`.
struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    log: std::path::PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let addr = common::fixed_addr();
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap())).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n\
                 auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                dir.join("storage").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.join("registry.err")).unwrap()))
            .spawn()
            .expect("start docker-registry");
        Registry { child, addr, log }
    }

    /// Waits until it answers `/v2/` (with the 401 that asks for credentials).
    async fn ready(&self) {
        let http = http();
        let url = format!("http://{}/v2/", self.addr);
        wait_for(Duration::from_secs(20), "docker-registry to answer", || async {
            let status = http.get(&url).send().await.ok()?.status();
            (status == reqwest::StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- registry log ----\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Applies `yaml` and returns what the CLI said on stderr, asserting that it failed.
fn apply_refused(control: &ControlProcess, name: &str, yaml: &str) -> String {
    let path = control.data_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let output = control.cli(&["apply", "-f", path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "apply of {name} should fail; it said {said}");
    said
}

fn workload(name: &str, module: &str, secret: Option<&str>) -> String {
    let secret = secret.map(|s| format!("  modulePullSecret: {s}\n")).unwrap_or_default();
    common::workloads::workload_yaml(name, module, &format!("{secret}  resources:\n    memory: 32Mi\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_pushed_to_an_allowed_registry_is_pulled_with_its_secret_and_served() {
    if !common::have("docker-registry", "docker-registry") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"));
    registry.ready().await;
    let control = ControlProcess::start(&dir.path().join("control"), &["--allow-insecure-registry", &registry.addr]);
    let node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let reference = format!("oci://{}/demo/hello:v1", registry.addr);
    let hello = shoal_guest_artifacts::HELLO;
    let digest = shoal_api::digest::sha256_hex(&std::fs::read(hello).unwrap());

    // Publishing: the registry wants credentials.
    let anonymous = tokio::task::block_in_place(|| control.cli(&["push", hello, &reference, "--insecure"]));
    assert!(!anonymous.status.success(), "an anonymous push to a registry with auth should fail");
    let pushed = tokio::task::block_in_place(|| {
        Command::new(shoal_bin())
            .args(["push", hello, &reference, "--insecure", "--username", USER])
            .env("SHOAL_REGISTRY_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    });
    assert!(ok_stdout(&pushed).contains(&format!("sha256:{digest}")), "push names the module's digest");

    // What the registry holds is the CNCF wasm artifact layout.
    let manifest: serde_json::Value = http()
        .get(format!("http://{}/v2/demo/hello/manifests/v1", registry.addr))
        .basic_auth(USER, Some(PASSWORD))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE, "{manifest}");
    assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE, "{manifest}");
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{digest}"), "{manifest}");

    // A Workload names it, with its credentials in a Secret of its namespace.
    let secret = format!(
        "apiVersion: shoal.dev/v1\nkind: Secret\nmetadata:\n  name: registry\n  namespace: default\n\
         spec:\n  data:\n    username: {USER}\n    password: {PASSWORD}\n"
    );
    let manifest = format!("{secret}---\n{}", workload("hello", &reference, Some("registry")));
    tokio::task::block_in_place(|| apply(&control, "hello", &manifest));
    wait_running(&client, "hello", 1, Some("n1"), Duration::from_secs(30)).await;
    let (status, body) = get(&http(), &node.ingress, "hello.default.localhost", "/hi").await;
    assert_eq!((status, body.as_str()), (200, "hello from shoal (v1): GET /hi\n"));
    let Ok(AnyObject::Workload(stored)) = client.get(Kind::Workload, Some("default"), "hello").await else {
        panic!("workload hello is stored")
    };
    assert_eq!(stored.spec.module, format!("sha256:{digest}"), "stored by digest");
    let source = stored.metadata.annotations.get(MODULE_SOURCE_ANNOTATION).cloned().unwrap_or_default();
    assert!(source.starts_with(&format!("{reference}@sha256:")), "the reference and its manifest's digest: {source}");
    assert_eq!(stored.spec.module_pull_secret, None, "the pull secret is not kept once pulled");

    // Applying the same manifest again pulls again and finds nothing to change.
    let path = control.data_dir.join("hello.yaml");
    let again = tokio::task::block_in_place(|| control.cli(&["apply", "-f", path.to_str().unwrap()]));
    assert!(ok_stdout(&again).contains("workloads/default/hello unchanged"), "{}", ok_stdout(&again));

    // A server dry run reads the manifest and stores nothing.
    let p1 = format!("oci://{}/demo/p1:v1", registry.addr);
    let pushed = tokio::task::block_in_place(|| {
        Command::new(shoal_bin())
            .args(["push", shoal_guest_artifacts::HELLO_P1, &p1, "--insecure", "--username", USER])
            .env("SHOAL_REGISTRY_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    });
    ok_stdout(&pushed);
    let p1_digest = shoal_api::digest::sha256_hex(&std::fs::read(shoal_guest_artifacts::HELLO_P1).unwrap());
    let dry = control.data_dir.join("dry.yaml");
    std::fs::write(&dry, workload("dry", &p1, Some("registry"))).unwrap();
    let said = tokio::task::block_in_place(|| control.cli(&["apply", "-f", dry.to_str().unwrap(), "--dry-run=server"]));
    assert!(ok_stdout(&said).contains("(server dry run)"), "{}", ok_stdout(&said));
    let modules = control
        .raw_http()
        .get(format!("{}/api/v1/namespaces/default/modules", control.api_url))
        .bearer_auth(control.client_config().token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(modules.contains(&digest) && !modules.contains(&p1_digest), "a dry run stores no module: {modules}");

    // Refused: no credentials, a tag the registry lacks, a registry not allowed, a reference
    // whose first part is not a registry host (it would be a path on docker.io).
    let bare =
        tokio::task::block_in_place(|| apply_refused(&control, "bare", &workload("bare", "oci://demo/hello:v1", None)));
    assert!(bare.contains("its registry would be docker.io"), "{bare}");
    let anonymous =
        tokio::task::block_in_place(|| apply_refused(&control, "anon", &workload("anon", &reference, None)));
    assert!(anonymous.contains("spec.module") && anonymous.contains("pulling"), "{anonymous}");
    let missing = format!("oci://{}/demo/hello:v9", registry.addr);
    let missing =
        tokio::task::block_in_place(|| apply_refused(&control, "v9", &workload("v9", &missing, Some("registry"))));
    assert!(missing.contains("spec.module") && missing.contains("hello:v9"), "{missing}");
    let elsewhere = "oci://127.0.0.1:1/demo/hello:v1";
    let elsewhere = tokio::task::block_in_place(|| {
        apply_refused(&control, "other", &workload("other", elsewhere, Some("registry")))
    });
    assert!(elsewhere.contains("not one this cluster pulls from"), "{elsewhere}");
    let unknown = tokio::task::block_in_place(|| {
        apply_refused(&control, "nosecret", &workload("nosecret", &reference, Some("nothing")))
    });
    assert!(unknown.contains("spec.modulePullSecret") && unknown.contains("default/nothing not found"), "{unknown}");
    for refused in ["anon", "v9", "other", "nosecret"] {
        assert!(client.get(Kind::Workload, Some("default"), refused).await.is_err(), "{refused} was not written");
    }
}
