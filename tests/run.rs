//! `shoal run`: guests run once, here, with the node's runtime: exit codes, arguments and
//! environment as granted and nothing more, and misbehaving guests stopped and reported.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_guest_artifacts as guests;

/// `shoal run FLAGS MODULE ARGS...`, called the way `wasmtime run` is.
fn shoal_run(flags: &[&str], module: &str, args: &[&str]) -> Output {
    let mut command = Command::new(common::shoal_bin());
    command.arg("run").args(flags).arg(module).args(args);
    command.env("SHOAL_TEST_SECRET", "must-not-leak").stdin(Stdio::null()).output().expect("run shoal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_preview1_module_gets_its_args_env_and_exit_code() {
    let out = shoal_run(&["--env", "NAME=shoal", "--env", "EXIT_CODE=7"], guests::HELLO_P1, &["a", "b c"]);
    assert_eq!(text(&out.stdout), "hello shoal from preview 1, args [\"a\", \"b c\"]\n");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn guest_arguments_follow_the_module_flags_included_as_in_wasmtime_run() {
    let out = shoal_run(&["--env", "NAME=shoal"], guests::HELLO_P1, &["a", "--env", "-x", "--", "b"]);
    assert_eq!(text(&out.stdout), "hello shoal from preview 1, args [\"a\", \"--env\", \"-x\", \"--\", \"b\"]\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A `--` between the module and the guest's arguments is still accepted, and not passed on.
    let out = shoal_run(&["--env", "NAME=shoal", "--env", "EXIT_CODE=3"], guests::HELLO_P1, &["--", "--help", "b"]);
    assert_eq!(text(&out.stdout), "hello shoal from preview 1, args [\"--help\", \"b\"]\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn env_name_alone_passes_the_hosts_value_and_nothing_when_unset() {
    let out = Command::new(common::shoal_bin())
        .args(["run", "--env", "SHOAL_TEST_INHERITED", "--env", "SHOAL_TEST_UNSET", "--env", "GIVEN=1"])
        .args([guests::MISBEHAVE, "env"])
        .env("SHOAL_TEST_INHERITED", "from the host")
        .env_remove("SHOAL_TEST_UNSET")
        .env("SHOAL_TEST_SECRET", "must-not-leak")
        .output()
        .unwrap();
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["GIVEN=1", "SHOAL_TEST_INHERITED=from the host"], "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_component_exit_code_is_the_commands() {
    let out = shoal_run(&[], guests::MISBEHAVE, &["exit", "5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let out = shoal_run(&["--env", "COUNT=2", "--env", "INTERVAL_MS=1"], guests::WORKER, &[]);
    assert_eq!(text(&out.stdout), "tick 1\ntick 2\n");
    assert_eq!(text(&out.stderr), "INFO worker tick 1\nINFO worker tick 2\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_guest_sees_only_the_environment_it_is_given() {
    let out = shoal_run(&["--env", "ONLY=this"], guests::MISBEHAVE, &["env"]);
    assert_eq!(text(&out.stdout), "ONLY=this\n", "host environment leaked");
}

#[test]
fn files_are_denied_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "twelve bytes").unwrap();
    let host_path = dir.path().join("secret.txt");
    let out = shoal_run(&[], guests::MISBEHAVE, &["open", host_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("open denied"));

    let grant = format!("{}::/data", dir.path().display());
    let out = shoal_run(&["--dir", &grant], guests::MISBEHAVE, &["open", "/data/secret.txt"]);
    assert_eq!(text(&out.stdout), "read 12 bytes\n", "{}", text(&out.stderr));
    // `--dir HOST` alone: the same path in the guest.
    let out =
        shoal_run(&["--dir", dir.path().to_str().unwrap()], guests::MISBEHAVE, &["open", host_path.to_str().unwrap()]);
    assert_eq!(text(&out.stdout), "read 12 bytes\n", "{}", text(&out.stderr));
}

#[test]
fn sockets_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = shoal_run(&[], guests::MISBEHAVE, &["connect", &addr]);
    assert_eq!(out.status.code(), Some(4), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("connect denied"));
}

#[test]
fn a_memory_bomb_is_stopped_at_its_limit() {
    let out = shoal_run(&["--memory", "32Mi"], guests::MISBEHAVE, &["membomb"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("stopped (OutOfMemory)") && stderr.contains("limit 33554432"), "{stderr}");
}

#[test]
fn a_stack_overflow_is_stopped() {
    let out = shoal_run(&[], guests::MISBEHAVE, &["stack"]);
    assert_eq!(out.status.code(), Some(139), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stopped (StackOverflow)"));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let start = Instant::now();
    let out = shoal_run(&["--timeout", "300ms"], guests::MISBEHAVE, &["spin"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stopped (Timeout)"));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_trap_is_reported() {
    let out = shoal_run(&["--env", "CRASH_AFTER_MS=1"], guests::CRASH, &[]);
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stopped (Trap)"));
    assert_eq!(text(&out.stdout), "crash: up, trapping in 1 ms\n");
}

#[test]
fn a_quarter_core_share_holds_a_busy_loop_to_a_quarter_core() {
    let child = Command::new(common::shoal_bin())
        .args(["run", "--cpu", "250m", "--timeout", "6s", guests::MISBEHAVE, "spin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    // Skip start-up (compilation), then measure over three seconds.
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu0, t0) = (common::cpu_time(child.0.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, t1) = (common::cpu_time(child.0.id()), Instant::now());
    drop(child);
    let share = (cpu1 - cpu0).as_secs_f64() / (t1 - t0).as_secs_f64();
    assert!((0.15..=0.35).contains(&share), "a 250m guest used {:.0}% of a core", share * 100.0);
}

/// Kills the child process when dropped, so that a failing test leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_http_component_is_served_with_listen() {
    shoal_api::client::install_crypto_provider();
    let child = Command::new(common::shoal_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--env", "GREETING", guests::HELLO, "an-argument"])
        .env("GREETING", "hi")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("a listening line").to_owned();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let body = client.get(format!("{url}/path?q=1")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "hi from shoal (v1): GET /path?q=1\n");
}
