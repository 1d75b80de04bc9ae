//! Hosts of their own for fault tests: network namespaces on one bridge made by the test, each
//! with an address of its own, and the faults a network has between hosts (a partition of any
//! set from any other, a share of packets lost), made with iptables inside each namespace. A
//! process is put on a host by starting it under `ip netns exec`, which then becomes it, so
//! its pid is the process's own (for [`pause`], [`resume`] and kill).
//!
//! Needs root, `ip` (iproute2) and `iptables`; [`Network::available`] says whether this machine
//! has them (with `CI=true` their absence fails the test instead of skipping it).

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One network: a bridge in the test's own namespace (which reaches every host through it)
/// and the hosts on it, all removed on drop.
pub struct Network {
    bridge: String,
    /// The first three octets of the bridge's /24.
    prefix: String,
    hosts: Mutex<Vec<String>>,
}

/// A host on a [`Network`]: a network namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub netns: String,
    /// Its address on the bridge.
    pub ip: String,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

impl Network {
    /// Whether namespaces, veth pairs and iptables work here (root, iproute2, iptables): tries
    /// them once. Elsewhere a test skips with the reason; with `CI=true` it fails.
    pub fn available() -> bool {
        static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let result = PROBED.get_or_init(|| {
            let probe = format!("shoal-probe-{}", std::process::id());
            let result = run(&["ip", "netns", "add", &probe])
                .and_then(|()| run(&["ip", "netns", "exec", &probe, "iptables", "-L", "INPUT"]));
            let _ = run(&["ip", "netns", "delete", &probe]);
            result
        });
        match result {
            Ok(()) => true,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("network namespaces are needed in CI (root, iproute2, iptables): {e}")
            }
            Err(e) => {
                eprintln!("skipping: this test needs network namespaces (root, iproute2, iptables): {e}");
                false
            }
        }
    }

    /// A new bridge with a /24 of its own (from the test's pid and a counter, so that tests
    /// running at once do not meet).
    pub fn new() -> Network {
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let bridge = format!("shb{}-{}", pid % 100_000, n % 1000);
        let prefix = format!("10.{}.{}", 64 + pid % 128, (pid / 128 + n) % 250);
        let _ = run(&["ip", "link", "delete", &bridge]);
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        must(&["ip", "addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        must(&["ip", "link", "set", &bridge, "up"]);
        Network { bridge, prefix, hosts: Mutex::new(Vec::new()) }
    }

    /// A new host on this network, its address `<prefix>.<10 + i>`.
    pub fn host(&self) -> Host {
        let mut hosts = self.hosts.lock().unwrap();
        let i = hosts.len();
        let netns = format!("{}-h{i}", self.bridge);
        let veth = format!("{}v{i}", self.bridge.replace('-', ""));
        let ip = format!("{}.{}", self.prefix, 10 + i);
        let _ = run(&["ip", "netns", "delete", &netns]);
        must(&["ip", "netns", "add", &netns]);
        hosts.push(netns.clone());
        must(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        must(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", netns.as_str()];
            all.extend(args);
            must(&all);
        };
        inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        inside(&["ip", "link", "set", "eth0", "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        Host { netns, ip }
    }

    /// Cuts every host of `a` off from every host of `b`, both ways (each drops what arrives
    /// from the other side). The test's own namespace still reaches all of them.
    pub fn partition(&self, a: &[&Host], b: &[&Host]) {
        for (from, to) in a.iter().flat_map(|x| b.iter().flat_map(move |y| [(x, y), (y, x)])) {
            iptables(to, &["-I", "INPUT", "-s", &from.ip, "-j", "DROP"]);
        }
    }

    /// Drops `share` (0..1) of the packets that arrive at `host`, from anywhere.
    pub fn lose(&self, host: &Host, share: f64) {
        let p = format!("{share:.3}");
        iptables(host, &["-I", "INPUT", "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"]);
    }

    /// Ends every partition, loss and delay on `hosts` (connections already made through a
    /// relay keep going through it until the [`Delay`] is dropped).
    pub fn heal(&self, hosts: &[&Host]) {
        for host in hosts {
            iptables(host, &["-F", "INPUT"]);
            iptables(host, &["-F", "OUTPUT"]);
            iptables(host, &["-t", "nat", "-F", "OUTPUT"]);
        }
    }

    /// Delays every byte that the hosts of `from` send to `to`'s TCP port `port` by `delay`
    /// plus up to `jitter` (this kernel has no netem): their new connections to it are
    /// redirected (DNAT in each sender's OUTPUT chain) to a relay in the test's namespace that
    /// holds each chunk that long before passing it on, both ways; connections made before are
    /// reset, so that they are made again through the relay. Ends when the [`Delay`] is dropped
    /// (after [`Network::heal`]).
    pub async fn delay(&self, from: &[&Host], to: &Host, port: u16, delay: Duration, jitter: Duration) -> Delay {
        let listener = tokio::net::TcpListener::bind(format!("{}.1:0", self.prefix)).await.unwrap();
        let relay = listener.local_addr().unwrap();
        let target: std::net::SocketAddr = format!("{}:{port}", to.ip).parse().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(relay_connections(listener, target, delay, jitter, stop.clone()));
        let (port, relay) = (port.to_string(), relay.to_string());
        for host in from {
            let redirect = ["-p", "tcp", "-d", &to.ip, "--dport", &port, "-j", "DNAT", "--to-destination", &relay];
            iptables(host, &[&["-t", "nat", "-A", "OUTPUT"][..], &redirect[..]].concat());
            // What still goes to `to` directly was connected before: reset it.
            let reset = ["-p", "tcp", "-d", &to.ip, "--dport", &port, "-j", "REJECT", "--reject-with", "tcp-reset"];
            iptables(host, &[&["-A", "OUTPUT"][..], &reset[..]].concat());
        }
        Delay { stop }
    }
}

/// A relay that delays traffic (see [`Network::delay`]); stops, closing what it carries, on drop.
pub struct Delay {
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relay_connections(
    listener: tokio::net::TcpListener,
    target: std::net::SocketAddr,
    delay: Duration,
    jitter: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => inbound,
                Err(_) => continue,
            },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
            let (from_client, to_client) = inbound.into_split();
            let (from_server, to_server) = outbound.into_split();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = futures::future::join(
                    held_back(from_client, to_server, delay, jitter),
                    held_back(from_server, to_client, delay, jitter),
                ) => {}
            }
        });
    }
}

/// Passes what `from` sends on to `to`, each chunk `delay` (plus up to `jitter`) after it was
/// read, in order.
async fn held_back(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    jitter: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = tokio::time::Instant::now();
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let extra = jitter.mul_f64(rand::random::<f64>());
            last = last.max(tokio::time::Instant::now() + delay + extra);
            if queue.send((last, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = queued.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    futures::future::join(reader, writer).await;
}

fn iptables(host: &Host, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", host.netns.as_str(), "iptables", "-w"];
    all.extend(args);
    must(&all);
}

impl Drop for Network {
    fn drop(&mut self) {
        for netns in self.hosts.lock().unwrap().iter() {
            let _ = run(&["ip", "netns", "delete", netns]);
        }
        let _ = run(&["ip", "link", "delete", &self.bridge]);
    }
}

/// Stops process `pid` where it stands (SIGSTOP), as a long pause of a VM or a GC would.
pub fn pause(pid: u32) {
    must(&["kill", "-STOP", &pid.to_string()]);
}

/// Lets a paused process go on (SIGCONT).
pub fn resume(pid: u32) {
    must(&["kill", "-CONT", &pid.to_string()]);
}
