//! The README's first command, kept honest: what it runs (the build of the example guests that
//! building `shoal` does, then `shoal dev -f examples/hello/app.yaml` from the repository root)
//! is run here as a new user would, with a HOME of its own and no configuration, on port 0,
//! until the example answers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{spawn_command_announcing, wait_for};

/// The repository root, where the README's commands are typed.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's first command, with any trailing comment removed.
fn first_command() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme.split("```sh\n").nth(1).expect("the README opens with a sh code block");
    let line = block.lines().next().expect("a first command");
    line.split(" # ").next().unwrap().trim().to_owned()
}

#[test]
fn the_readme_starts_with_one_command_that_builds_and_serves_the_example() {
    let command = first_command();
    assert!(!command.contains("&&") && !command.contains(';'), "the first command is one command: {command}");
    let shoal_args = command.strip_prefix("cargo run --release -- ").expect("the first command runs shoal by cargo");
    assert_eq!(shoal_args, "dev -f examples/hello/app.yaml", "the test below runs what the README says");
}

/// Where `examples/hello/app.yaml` says the module is, resolved as `shoal apply` does.
fn hello_module_of_the_example() -> PathBuf {
    let manifest = repo().join("examples/hello/app.yaml");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let module = yaml.lines().find_map(|l| l.trim().strip_prefix("module: ")).expect("a module line");
    manifest.parent().unwrap().join(module)
}

#[test]
fn building_shoal_builds_the_module_the_example_names() {
    let named = hello_module_of_the_example().canonicalize().expect("the example's module was built");
    let built = Path::new(shoal_guest_artifacts::HELLO).canonicalize().unwrap();
    assert_eq!(named, built, "the example names the module the guests' build makes");
}

#[tokio::test]
async fn the_readme_first_command_serves_the_example_app() {
    let home = tempfile::tempdir().unwrap();
    let first = first_command();
    let shoal_args: Vec<&str> = first.strip_prefix("cargo run --release -- ").unwrap().split(' ').collect();
    let mut command = Command::new(common::shoal_bin());
    command.current_dir(repo()).args(&shoal_args);
    // What differs from the README: ports chosen by the system, so that tests can run at once.
    command.args(["--api-listen", "127.0.0.1:0", "--ingress-listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"]);
    command.env("HOME", home.path());
    for var in ["SHOAL_CONFIG", "SHOAL_SERVER", "SHOAL_TOKEN", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"] {
        command.env_remove(var);
    }
    let log = home.path().join("dev.log");
    let (child, announced) = spawn_command_announcing(command, &log, &["ingress listening on http://"]);
    let mut child = KillOnDrop(child, log);
    let ingress = announced[0].clone();

    shoal_api::client::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let body = wait_for(Duration::from_secs(60), "the example to answer at hello.default.localhost", || async {
        let response =
            client.get(format!("http://{ingress}/")).header("host", "hello.default.localhost").send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        response.text().await.ok()
    })
    .await;
    assert!(body.starts_with("hello from shoal"), "{body}");
    // State and the client config where the README says, under the (new) HOME.
    assert!(home.path().join(".local/share/shoal/dev/control/shoal.redb").exists());
    let config = home.path().join(".config/shoal/config.yaml");
    let instances = Command::new(common::shoal_bin())
        .args(["get", "instances"])
        .env("HOME", home.path())
        .env_remove("SHOAL_CONFIG")
        .output()
        .unwrap();
    assert!(config.exists(), "no client config at {}", config.display());
    let listed = common::ok_stdout(&instances);
    assert!(listed.lines().filter(|l| l.contains("Running")).count() >= 1, "{listed}");
    child.0.kill().unwrap();
}

/// Kills `shoal dev` when dropped, printing its log if the test failed.
struct KillOnDrop(std::process::Child, PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("---- log of shoal dev ----\n{}", std::fs::read_to_string(&self.1).unwrap_or_default());
        }
    }
}
