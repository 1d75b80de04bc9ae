//! Harness for end-to-end tests: real `shoal` processes on port 0, their addresses read from
//! their output, killed (and their logs printed, if the test failed) on drop.

#![allow(dead_code)]

pub mod dns;
pub mod netns;
pub mod workloads;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_api::resources::namespace::Namespace;
use shoal_api::{AnyObject, Client, ClientConfig, Kind, Name};

/// The `shoal` binary under test.
pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// A running `shoal control` process.
pub struct ControlProcess {
    child: Option<Child>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub api_url: String,
    /// `127.0.0.1:PORT`.
    pub raft_addr: String,
    /// Its client config file.
    pub config_path: PathBuf,
    log_path: PathBuf,
    /// Where its DNS server answers (UDP and TCP).
    pub dns_addr: std::net::SocketAddr,
    /// Its PKI directory (`--pki-dir`, or `<data dir>/pki`).
    pub pki_dir: PathBuf,
}

impl ControlProcess {
    /// Starts `shoal control` with `data_dir` and extra flags; waits for its listeners.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ControlProcess {
        Self::start_on(None, data_dir, extra)
    }

    /// Like [`ControlProcess::start`], on `host` (its network namespace; its API and raft
    /// listeners on the host's address) when given.
    pub fn start_on(host: Option<&netns::Host>, data_dir: &Path, extra: &[&str]) -> ControlProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.join("client-config.yaml");
        let log_path = data_dir.join(format!("stderr-{}.log", std::process::id()));
        let on_host = format!("{}:0", host.map_or("127.0.0.1", |h| h.ip.as_str()));
        let mut args = vec!["control", "--data-dir", data_dir.to_str().unwrap()];
        if !extra.contains(&"--api-listen") {
            args.extend(["--api-listen", &on_host]);
        }
        if !extra.contains(&"--raft-listen") {
            args.extend(["--raft-listen", &on_host]);
        }
        if !extra.contains(&"--dns-listen") {
            args.extend(["--dns-listen", "127.0.0.1:0"]);
        }
        args.extend(extra);
        let mut command = shoal_on(host);
        command.args(&args).env("SHOAL_CONFIG", &config_path);
        let (child, announced) = spawn_command_announcing(
            command,
            &log_path,
            &["api listening on ", "raft listening on ", "dns listening on "],
        );
        let [api_url, raft_addr, dns] = <[String; 3]>::try_from(announced).unwrap();
        let dns_addr = dns.split_whitespace().next().and_then(|a| a.parse().ok()).expect("dns address announced");
        let pki_dir = extra
            .iter()
            .position(|a| *a == "--pki-dir")
            .map_or_else(|| data_dir.join("pki"), |i| PathBuf::from(extra[i + 1]));
        ControlProcess {
            child: Some(child),
            pki_dir,
            data_dir: data_dir.to_owned(),
            api_url,
            raft_addr,
            dns_addr,
            config_path,
            log_path,
        }
    }

    /// The admin client config it wrote.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::load(&self.data_dir.join("client.yaml")).expect("client config written")
    }

    /// A plain HTTP client of its API (trusting its CA, with a connection pool of its own),
    /// for requests the typed client would not make.
    pub fn raw_http(&self) -> reqwest::Client {
        shoal_api::client::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(self.client_config().ca.as_bytes()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    }

    /// An admin client of its API server.
    pub fn client(&self) -> Client {
        Client::new(&self.client_config()).unwrap()
    }

    /// Runs a `shoal` CLI command against this control node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_CONFIG", &self.config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has ended on its own (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills it with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of shoal control in {} ----\n{}", self.data_dir.display(), self.log());
        }
    }
}

/// A tmpfs of its own size mounted at a fresh directory (needs root), unmounted on drop: a
/// disk that fills.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`); `None`, with the reason, where that cannot be
    /// done (with `CI=true` it fails instead).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let options = format!("size={size}");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(&path).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { path, _dir: dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("mounting a tmpfs is needed in CI (root): {why}");
                }
                eprintln!("skipping: this test mounts a tmpfs (root): {why}");
                None
            }
        }
    }

    /// Gives it `size` (a tmpfs can be resized while mounted).
    pub fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        let out = Command::new("mount").args(["-o", &options]).arg(&self.path).output().unwrap();
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Fills it until it has `left` bytes free; returns the file that fills it.
    pub fn fill(&self, left: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut filler = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; 1 << 20];
        while self.free() > left {
            filler.write_all(&chunk).unwrap();
            filler.sync_all().unwrap();
        }
        path
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&self.path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// A `shoal` command, run on `host` (under `ip netns exec`) when given.
pub fn shoal_on(host: Option<&netns::Host>) -> Command {
    match host {
        Some(h) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &h.netns, shoal_bin()]);
            c
        }
        None => Command::new(shoal_bin()),
    }
}

/// Starts `shoal ARGS` (stderr to `log_path`) and waits for one stdout line starting with each
/// of `prefixes`; returns the child and the rest of each such line, in the order of `prefixes`.
pub fn spawn_announcing(args: &[&str], config_path: &Path, log_path: &Path, prefixes: &[&str]) -> (Child, Vec<String>) {
    let mut command = Command::new(shoal_bin());
    command.args(args).env("SHOAL_CONFIG", config_path);
    spawn_command_announcing(command, log_path, prefixes)
}

/// `command`, run so that its process is killed when the thread that starts it ends, and with
/// it the test's or bench's process: a run stopped by a signal (`timeout`, Ctrl-C) runs no
/// `Drop`, and a control plane or hollow nodes left running spoil every measurement after it.
/// `setpriv --pdeathsig` sets that and then executes the command (same pid). Every caller starts
/// its processes from a thread that lives as long as the test (the test's own thread or a
/// runtime worker), never from a short-lived one.
fn dying_with_parent(command: &Command) -> Command {
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--pdeathsig", "KILL", "--"]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Like [`spawn_announcing`], for a `shoal` command set up by the caller (its environment, its
/// working directory). Its log level is `SHOAL_TEST_LOG` if set (e.g.
/// `info,shoal_control::controllers=debug` for the controllers' rounds), else info.
pub fn spawn_command_announcing(command: Command, log_path: &Path, prefixes: &[&str]) -> (Child, Vec<String>) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut child = dying_with_parent(&command)
        .env(
            "SHOAL_LOG",
            std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn,hickory_server=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start shoal");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!(
                "shoal {} did not announce {prefixes:?} within 30 s; stderr:\n{}",
                args[0],
                std::fs::read_to_string(log_path).unwrap_or_default()
            )
        };
        for (prefix, slot) in prefixes.iter().zip(found.iter_mut()) {
            if let Some(rest) = line.strip_prefix(prefix) {
                *slot = Some(rest.to_owned());
            }
        }
    }
    (child, found.into_iter().map(Option::unwrap).collect())
}

/// A running `shoal node` process.
pub struct NodeProcess {
    child: Option<Child>,
    /// Its name.
    pub name: String,
    /// `127.0.0.1:PORT` of its ingress.
    pub ingress: String,
    log_path: PathBuf,
}

impl NodeProcess {
    /// Issues a node token for `name` and starts `shoal node` joined to `control`.
    pub fn start(control: &ControlProcess, name: &str, extra: &[&str]) -> NodeProcess {
        Self::start_on(control, None, name, extra)
    }

    /// Like [`NodeProcess::start`], on `host` (its network namespace; the ingress and agent
    /// API on the host's address) when given.
    pub fn start_on(control: &ControlProcess, host: Option<&netns::Host>, name: &str, extra: &[&str]) -> NodeProcess {
        let token = ok_stdout(&control.cli(&["token", "create", name, "--node"])).trim().to_owned();
        let data_dir = control.data_dir.join(format!("node-{name}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let log_path = data_dir.join("stderr.log");
        let ca = control.pki_dir.join("ca.pem");
        let ingress = format!("{}:0", host.map_or("127.0.0.1", |h| h.ip.as_str()));
        let mut args = vec!["node", "--join", &control.api_url, "--token", &token, "--ca", ca.to_str().unwrap()];
        if !extra.contains(&"--data-dir") {
            args.extend(["--data-dir", data_dir.to_str().unwrap()]);
        }
        if !extra.contains(&"--ingress-listen") {
            args.extend(["--ingress-listen", &ingress]);
        }
        args.extend(extra);
        let mut command = shoal_on(host);
        command.args(&args).env("SHOAL_CONFIG", &control.config_path);
        let (child, announced) = spawn_command_announcing(command, &log_path, &["ingress listening on http://"]);
        NodeProcess { child: Some(child), name: name.to_owned(), ingress: announced[0].clone(), log_path }
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- log of shoal node {} ----\n{}",
                self.name,
                std::fs::read_to_string(&self.log_path).unwrap_or_default()
            );
        }
    }
}

/// A free loopback address for a process that is stopped and started again on it: its port is
/// below Linux's ephemeral range (32768 and up), so that no other test's connection or port-0
/// listener takes it in between.
pub fn fixed_addr() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut state = now ^ (u64::from(std::process::id()) << 32);
    loop {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let port = 20_000 + (state >> 33) % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap().to_string();
        }
    }
}

/// Whether `tool` (from Debian's `package`, which `.ci/run` installs) runs here; with `CI=true`
/// its absence fails the test, elsewhere the test skips what needs it and says so.
pub fn have(tool: &str, package: &str) -> bool {
    match Command::new(tool).arg("--version").output() {
        Ok(output) if output.status.success() => true,
        other if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{tool} is needed in CI: {other:?}"),
        other => {
            eprintln!("skipping what needs {tool}: {other:?} (apt-get install {package})");
            false
        }
    }
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Resident memory of a process, KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// stdout of a finished command, asserting it succeeded.
pub fn ok_stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `base` (a wasm module or component) with a custom section `name` holding `payload` appended:
/// different bytes (and as large as wanted) that run exactly as `base` does.
pub fn with_custom_section(base: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let leb128 = |mut n: usize, out: &mut Vec<u8>| loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    };
    let mut body = Vec::with_capacity(payload.len() + name.len() + 5);
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut module = base.to_vec();
    module.push(0); // a custom section
    leb128(body.len(), &mut module);
    module.extend_from_slice(&body);
    module
}

/// `len` bytes that do not repeat or compress (xorshift from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The `p` quantile (0..=1) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The smallest valid wasm module: the preamble alone.
pub const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A Namespace object named `name`.
pub fn namespace(name: &str) -> AnyObject {
    AnyObject::Namespace(Namespace::new(Name::new(name).unwrap(), None, Default::default()))
}

/// A Service `s` in namespace `ns`, selecting workload `w`.
pub fn service(ns: &str) -> AnyObject {
    AnyObject::from_json(
        Kind::Service,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": ns}, "spec": {"selector": {"workload": "w"}}}),
    )
    .unwrap()
}

/// The names of a list's objects.
pub fn names(list: &shoal_api::List<AnyObject>) -> std::collections::BTreeSet<String> {
    list.items.iter().map(|o| o.meta().name.to_string()).collect()
}
