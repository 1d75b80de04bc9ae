//! A Jepsen-style run: three control members, each on a host of its own ([`Network`]), clients
//! that read, write, compare-and-set and delete a few registers (Configs) through every member
//! and record each operation, adders that create objects no one deletes, and watchers that
//! resume through each member; faults applied one after another with a healthy gap between,
//! then every check of [`crate::history`] over the whole history.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_api::resources::config::ConfigKind;
use shoal_api::{AnyObject, Client, ClientError, Kind, Reason, Watched as WatchLine};

use crate::common::netns::{Host, Network, pause, resume};
use crate::common::{ControlProcess, namespace, wait_for};
use crate::history::{self, Answer, Call, Op, Outcome, Seen, Watched};

/// The registers' namespace.
const REGISTERS: &str = "jepsen";
/// The adders' namespace.
const SET: &str = "jepsen-set";

/// One fault, as it is applied and healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The leader cut off from both followers.
    LeaderPartitioned,
    /// One follower cut off from the other two members.
    MinorityPartitioned,
    /// A member chosen in turn cut off and let back every second.
    Flapping,
    /// 10% of the packets arriving at every member dropped.
    Loss,
    /// The leader stopped with SIGSTOP, then let go on.
    LeaderPaused,
    /// Every byte between members delayed by [`Timing::delay`] (a relay; see `Network::delay`).
    Delay,
    /// A follower cut off, and meanwhile a fourth member added and removed again.
    MembershipChanged,
}

impl Fault {
    #[allow(dead_code)] // the bench's list
    pub const ALL: [Fault; 7] = [
        Fault::LeaderPartitioned,
        Fault::MinorityPartitioned,
        Fault::Flapping,
        Fault::Loss,
        Fault::LeaderPaused,
        Fault::Delay,
        Fault::MembershipChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::LeaderPartitioned => "leader-partitioned",
            Fault::MinorityPartitioned => "minority-partitioned",
            Fault::Flapping => "flapping-partition",
            Fault::Loss => "packet-loss",
            Fault::LeaderPaused => "leader-paused",
            Fault::Delay => "packet-delay",
            Fault::MembershipChanged => "membership-change-in-partition",
        }
    }
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Healthy, before the first fault and between faults.
    pub healthy: Duration,
    /// Under each fault.
    pub fault: Duration,
    /// How long a client waits for an answer before it counts the operation unknown.
    pub op_timeout: Duration,
    /// Under [`Fault::Delay`], each byte's one-way delay: at least the first, plus up to the
    /// second.
    pub delay: (Duration, Duration),
}

/// Three members on hosts of their own.
pub struct Cluster {
    pub net: Network,
    pub hosts: Vec<Host>,
    pub members: Vec<ControlProcess>,
    pub clients: Vec<Client>,
    dir: tempfile::TempDir,
    /// Members added by [`Fault::MembershipChanged`] so far.
    added: AtomicU64,
}

impl Cluster {
    /// Starts three members, the second and third joined to the first, and waits until all
    /// three vote and agree on a leader.
    pub async fn start(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let net = Network::new();
        let hosts: Vec<Host> = (0..3).map(|_| net.host()).collect();
        let pki = dir.path().join("m1/pki");
        let mut members = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let id = (i + 1).to_string();
            let mut flags = vec!["--id", id.as_str()];
            let join = members.first().map(|m: &ControlProcess| m.raft_addr.clone());
            if let Some(join) = &join {
                flags.extend(["--join", join.as_str(), "--pki-dir", pki.to_str().unwrap()]);
            }
            flags.extend(extra);
            members.push(ControlProcess::start_on(Some(host), &dir.path().join(format!("m{id}")), &flags));
        }
        let clients: Vec<Client> = members.iter().map(|m| m.client()).collect();
        let cluster = Cluster { net, hosts, members, clients, dir, added: AtomicU64::new(0) };
        cluster.agreed_leader(Duration::from_secs(30)).await;
        cluster
    }

    /// The leader every member names (index into `members`), once all three count three
    /// voters and agree.
    pub async fn agreed_leader(&self, within: Duration) -> usize {
        wait_for(within, "three voting members agreeing on a leader", || async {
            let mut leaders = BTreeSet::new();
            for c in &self.clients {
                let status = tokio::time::timeout(Duration::from_secs(1), c.cluster_status()).await.ok()?.ok()?;
                if status.members.len() != 3 {
                    return None;
                }
                leaders.insert(status.leader?);
            }
            (leaders.len() == 1).then(|| (*leaders.first().unwrap() - 1) as usize)
        })
        .await
    }

    fn host_refs(&self) -> Vec<&Host> {
        self.hosts.iter().collect()
    }
}

/// What one fault's phase showed.
#[derive(Debug, Clone)]
pub struct FaultReport {
    pub fault: Fault,
    /// The member the fault was aimed at (cut off or paused), if one was.
    pub target: Option<usize>,
    /// Writes invoked on the cut-off member after the cut and acknowledged before the heal.
    pub minority_acks: usize,
    /// Writes through the other members during the fault after the first one there succeeded
    /// (after the first election): answered, and in all.
    pub majority_writes: (usize, usize),
    /// From the heal until every member has applied a write made after it.
    pub heal_to_converged: Duration,
}

/// What the whole run showed.
#[derive(Debug)]
pub struct Report {
    pub faults: Vec<FaultReport>,
    pub checked: history::Checked,
    pub answered: usize,
    pub unknown: usize,
    pub refused: usize,
    /// Objects the adders were told were created, and how many of them are missing at the end.
    pub acked_creates: usize,
    pub lost: Vec<String>,
    /// Broken watch promises, and how many changes the watchers delivered in all.
    pub watch_problems: Vec<String>,
    pub watched_changes: usize,
    pub watch_resumptions: usize,
}

impl Report {
    /// Everything a correct store must show, whatever the faults.
    pub fn assert_correct(&self) {
        assert!(self.checked.violations.is_empty(), "linearizability violations: {:#?}", self.checked.violations);
        assert!(self.checked.undecided.is_empty(), "keys the checker could not decide: {:?}", self.checked.undecided);
        assert!(self.lost.is_empty(), "acknowledged creates lost: {:?}", self.lost);
        assert!(self.watch_problems.is_empty(), "watch problems: {:#?}", self.watch_problems);
        for f in &self.faults {
            assert_eq!(f.minority_acks, 0, "{}: a cut-off member acknowledged writes", f.fault.name());
        }
        assert!(self.answered > 0 && self.acked_creates > 0, "nothing was answered: {self:?}");
    }

    /// A Markdown-ish summary, one line per fault and one for the whole history.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "operations checked {} on {} keys ({} answered, {} unknown, {} refused); violations {}; undecided {}; \
             acknowledged creates {} lost {}; watch changes {} over {} resumptions, problems {}\n",
            self.checked.operations,
            self.checked.keys,
            self.answered,
            self.unknown,
            self.refused,
            self.checked.violations.len(),
            self.checked.undecided.len(),
            self.acked_creates,
            self.lost.len(),
            self.watched_changes,
            self.watch_resumptions,
            self.watch_problems.len(),
        );
        for f in &self.faults {
            let (ok, all) = f.majority_writes;
            out += &format!(
                "  {}: target {:?}; minority acks {}; majority writes {ok}/{all} ({:.2}%); heal to converged {:.0} ms\n",
                f.fault.name(),
                f.target.map(|t| t + 1),
                f.minority_acks,
                history::percent(ok, all),
                history::ms(f.heal_to_converged),
            );
        }
        out
    }
}

/// Where a client sent an operation, for the per-fault figures.
#[derive(Debug, Clone)]
struct Sent {
    member: usize,
    op: Op,
}

struct Shared {
    ops: Mutex<Vec<Sent>>,
    stop: AtomicBool,
    values: AtomicU64,
}

/// Runs `faults` one after another on `cluster`, under load, and checks the history.
pub async fn run(cluster: &Cluster, faults: &[Fault], timing: Timing) -> Report {
    let admin = &cluster.clients[0];
    for ns in [REGISTERS, SET] {
        admin.create(&namespace(ns)).await.unwrap();
    }
    let from = admin.cluster_status().await.unwrap().revision;
    let shared =
        Arc::new(Shared { ops: Mutex::new(Vec::new()), stop: AtomicBool::new(false), values: AtomicU64::new(1) });
    let keys: Vec<String> = (0..8).map(|k| format!("r{k}")).collect();

    let mut tasks = Vec::new();
    for c in 0..9 {
        let (client, shared, keys) = (cluster.clients[c % 3].clone(), shared.clone(), keys.clone());
        tasks.push(tokio::spawn(register_client(c, c % 3, client, keys, shared, timing.op_timeout)));
    }
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for m in 0..3 {
        let (client, shared, acked) = (cluster.clients[m].clone(), shared.clone(), acked.clone());
        tasks.push(tokio::spawn(adder(m, client, shared, acked, timing.op_timeout)));
    }
    let watchers: Vec<_> = (0..3)
        .map(|m| {
            let client = cluster.clients[m].with_watch_silence(Duration::from_secs(3));
            let name = format!("watch via member {}", m + 1);
            let state = Arc::new(Mutex::new(Watched { name, from, to: from, ..Watched::default() }));
            (tokio::spawn(watcher(client, state.clone())), state)
        })
        .collect();

    let mut reports = Vec::new();
    tokio::time::sleep(timing.healthy).await;
    for &fault in faults {
        reports.push(apply(cluster, fault, timing, &shared).await);
        tokio::time::sleep(timing.healthy).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Final reads of every register through one member, and the set as the leader has it.
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let client = &cluster.clients[leader];
    for key in &keys {
        let invoked = Instant::now();
        let outcome = outcome_of(read(client, key).await);
        record(&shared, leader, usize::MAX, key, Call::Read, invoked, outcome, None);
    }
    let stored = crate::common::names(&client.list(Kind::Config, Some(SET), None).await.unwrap());
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<String> = acked.iter().filter(|n| !stored.contains(*n)).cloned().collect();

    // Each watcher is owed every change up to a last write after all the others.
    let last = client.put(&config(REGISTERS, "marker", 0)).await.unwrap().meta().resource_version.unwrap();
    let watched = finish_watchers(watchers, last).await;
    let ops: Vec<Op> = shared.ops.lock().unwrap().iter().map(|s| s.op.clone()).collect();
    let mut watch_problems = Vec::new();
    for w in &watched {
        watch_problems.extend(history::check_watch(w, &ops));
    }
    for pair in watched.windows(2) {
        watch_problems.extend(history::check_agree(&pair[0], &pair[1]));
    }
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
    Report {
        faults: reports,
        checked: history::check(&ops),
        answered: count(|o| matches!(o, Outcome::Ok(_))),
        unknown: count(|o| *o == Outcome::Unknown),
        refused: count(|o| *o == Outcome::Fail),
        acked_creates: acked.len(),
        lost,
        watched_changes: watched.iter().map(|w| w.changes.len()).sum(),
        watch_resumptions: watched.iter().map(|w| w.resumptions).sum(),
        watch_problems,
    }
}

/// Applies one fault for `timing.fault`, heals it, and measures the phase.
async fn apply(cluster: &Cluster, fault: Fault, timing: Timing, shared: &Shared) -> FaultReport {
    let leader = cluster.agreed_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;
    let hosts = cluster.host_refs();
    let others = |i: usize| -> Vec<&Host> { (0..3).filter(|&j| j != i).map(|j| hosts[j]).collect() };
    let started = Instant::now();
    let target = match fault {
        Fault::LeaderPartitioned => {
            cluster.net.partition(&[hosts[leader]], &others(leader));
            Some(leader)
        }
        Fault::MinorityPartitioned => {
            cluster.net.partition(&[hosts[follower]], &others(follower));
            Some(follower)
        }
        Fault::Loss => {
            for h in &hosts {
                cluster.net.lose(h, 0.1);
            }
            None
        }
        Fault::LeaderPaused => {
            pause(cluster.members[leader].pid().unwrap());
            Some(leader)
        }
        Fault::MembershipChanged => {
            cluster.net.partition(&[hosts[follower]], &others(follower));
            Some(follower)
        }
        Fault::Flapping | Fault::Delay => None,
    };
    let mut delays = Vec::new();
    if fault == Fault::Delay {
        for (i, member) in cluster.members.iter().enumerate() {
            let port: u16 = member.raft_addr.rsplit(':').next().unwrap().parse().unwrap();
            let (delay, jitter) = timing.delay;
            delays.push(cluster.net.delay(&others(i), hosts[i], port, delay, jitter).await);
        }
    }
    let cut_at = Instant::now();
    if fault == Fault::Flapping {
        let mut turn = 0;
        while started.elapsed() < timing.fault {
            let cut = turn % 3;
            cluster.net.partition(&[hosts[cut]], &others(cut));
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.net.heal(&hosts);
            tokio::time::sleep(Duration::from_secs(1)).await;
            turn += 1;
        }
    } else if fault == Fault::MembershipChanged {
        change_members(cluster, leader, hosts[follower]).await;
        tokio::time::sleep(timing.fault.saturating_sub(started.elapsed())).await;
    } else {
        tokio::time::sleep(timing.fault).await;
    }
    let healed_at = Instant::now();
    match fault {
        Fault::LeaderPaused => resume(cluster.members[leader].pid().unwrap()),
        _ => cluster.net.heal(&hosts),
    }
    drop(delays);
    let heal_to_converged = converge(cluster, healed_at).await;

    let ops = shared.ops.lock().unwrap();
    let is_write = |s: &&Sent| !matches!(s.op.call, Call::Read);
    let minority_acks = target.filter(|_| fault != Fault::LeaderPaused).map_or(0, |t| {
        ops.iter()
            .filter(is_write)
            .filter(|s| s.member == t && s.op.invoked > cut_at && s.op.returned < healed_at)
            .filter(|s| matches!(s.op.outcome, Outcome::Ok(_)))
            .count()
    });
    let during: Vec<&Sent> = ops
        .iter()
        .filter(is_write)
        .filter(|s| Some(s.member) != target && s.op.invoked > cut_at && s.op.invoked < healed_at)
        .collect();
    let first_ok = during.iter().filter(|s| matches!(s.op.outcome, Outcome::Ok(_))).map(|s| s.op.invoked).min();
    let after_election: Vec<&&Sent> = during.iter().filter(|s| first_ok.is_some_and(|t| s.op.invoked >= t)).collect();
    let served = after_election.iter().filter(|s| matches!(s.op.outcome, Outcome::Ok(_))).count();
    FaultReport { fault, target, minority_acks, majority_writes: (served, after_election.len()), heal_to_converged }
}

/// Adds a fourth member (on a host of its own, cut off from `cut`, as the others are) through
/// the `leader`, and removes it again.
async fn change_members(cluster: &Cluster, leader: usize, cut: &Host) {
    let n = cluster.added.fetch_add(1, Ordering::Relaxed);
    let id = (4 + n).to_string();
    let host = cluster.net.host();
    cluster.net.partition(&[cut], &[&host]);
    let pki = cluster.dir.path().join("m1/pki");
    let flags = ["--id", id.as_str(), "--standby", "--pki-dir", pki.to_str().unwrap()];
    let mut added = ControlProcess::start_on(Some(&host), &cluster.dir.path().join(format!("m{id}")), &flags);
    let via = &cluster.members[leader];
    let out = tokio::task::block_in_place(|| via.cli(&["member", "add", &id, &added.raft_addr]));
    crate::common::ok_stdout(&out);
    let out = tokio::task::block_in_place(|| via.cli(&["member", "remove", &id]));
    crate::common::ok_stdout(&out);
    wait_for(Duration::from_secs(15), "the removed member's process to stop", || {
        std::future::ready(added.exited().map(|_| ()))
    })
    .await;
}

/// Time from `healed_at` until a write made after it is applied on every member.
async fn converge(cluster: &Cluster, healed_at: Instant) -> Duration {
    let marker = wait_for(Duration::from_secs(60), "a write after the heal", || async {
        for c in &cluster.clients {
            let object = config(REGISTERS, "marker", u64::MAX);
            if let Ok(Ok(written)) = tokio::time::timeout(Duration::from_secs(2), c.put(&object)).await {
                return written.meta().resource_version;
            }
        }
        None
    })
    .await;
    wait_for(Duration::from_secs(60), "every member applying the write after the heal", || async {
        for c in &cluster.clients {
            let status = tokio::time::timeout(Duration::from_secs(1), c.cluster_status()).await.ok()?.ok()?;
            if status.revision < marker {
                return None;
            }
        }
        Some(())
    })
    .await;
    healed_at.elapsed()
}

fn config(ns: &str, name: &str, value: u64) -> AnyObject {
    let json = serde_json::json!({
        "apiVersion": "shoal.dev/v1",
        "kind": "Config",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"data": {"v": value.to_string()}},
    });
    AnyObject::from_json(Kind::Config, &json).unwrap()
}

fn value_of(object: &AnyObject) -> Option<u64> {
    match object {
        AnyObject::Config(c) => c.spec.data.get("v").and_then(|v| v.parse().ok()),
        _ => None,
    }
}

/// What a client learns from one request: an answer, a refusal, or nothing certain.
enum Reply {
    Answer(Answer, Option<u64>),
    /// A definite 4xx the register's rule explains (not found, stale revision).
    Refused,
    Unknown,
}

fn outcome_of(reply: Reply) -> Outcome {
    match reply {
        Reply::Answer(a, _) => Outcome::Ok(a),
        Reply::Refused => Outcome::Fail,
        Reply::Unknown => Outcome::Unknown,
    }
}

/// A 4xx is an answer (the request was refused, or found what the rule says); a 5xx, a lost
/// connection or silence past the timeout leaves the operation unknown.
fn classify<T>(result: Result<Result<T, ClientError>, tokio::time::error::Elapsed>) -> Result<T, Option<Reason>> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ClientError::Api(status))) => match status.reason {
            Reason::Unavailable | Reason::Internal => Err(None),
            reason => Err(Some(reason)),
        },
        _ => Err(None),
    }
}

async fn read(client: &Client, key: &str) -> Reply {
    read_within(client, key, Duration::from_secs(2)).await.0
}

/// A read and, when it found the object, its value and revision.
async fn read_within(client: &Client, key: &str, timeout: Duration) -> (Reply, Option<(u64, u64)>) {
    match classify(tokio::time::timeout(timeout, client.get(Kind::Config, Some(REGISTERS), key)).await) {
        Ok(object) => {
            let (v, rev) = (value_of(&object), object.meta().resource_version);
            (Reply::Answer(Answer::Value(v), rev), v.zip(rev))
        }
        Err(Some(Reason::NotFound)) => (Reply::Answer(Answer::Value(None), None), None),
        Err(Some(_)) => (Reply::Refused, None),
        Err(None) => (Reply::Unknown, None),
    }
}

async fn write(client: &Client, object: &AnyObject, timeout: Duration, cas: bool) -> Reply {
    match classify(tokio::time::timeout(timeout, client.put(object)).await) {
        Ok(written) => Reply::Answer(Answer::Done(true), written.meta().resource_version),
        Err(Some(Reason::Conflict | Reason::NotFound)) if cas => Reply::Answer(Answer::Done(false), None),
        Err(Some(_)) => Reply::Refused,
        Err(None) => Reply::Unknown,
    }
}

async fn delete(client: &Client, key: &str, timeout: Duration) -> Reply {
    match classify(tokio::time::timeout(timeout, client.delete(Kind::Config, Some(REGISTERS), key)).await) {
        Ok(_) => Reply::Answer(Answer::Done(true), None),
        Err(Some(Reason::NotFound)) => Reply::Answer(Answer::Done(false), None),
        Err(Some(_)) => Reply::Refused,
        Err(None) => Reply::Unknown,
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    shared: &Shared,
    member: usize,
    client: usize,
    key: &str,
    call: Call,
    invoked: Instant,
    outcome: Outcome,
    revision: Option<u64>,
) {
    let op = Op { client, key: key.to_owned(), call, invoked, returned: Instant::now(), outcome, revision };
    shared.ops.lock().unwrap().push(Sent { member, op });
}

/// One client, bound to one member: random operations on random registers until told to stop.
/// A compare-and-set expects what this client's last read of that register saw.
async fn register_client(
    id: usize,
    member: usize,
    client: Client,
    keys: Vec<String>,
    shared: Arc<Shared>,
    timeout: Duration,
) {
    let mut rng = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut last_read: std::collections::HashMap<String, (u64, u64)> = Default::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let key = &keys[(next() % keys.len() as u64) as usize];
        let invoked = Instant::now();
        let dice = next() % 100;
        let (call, reply) = if dice < 40 || (dice < 75 && !last_read.contains_key(key)) {
            let (reply, found) = read_within(&client, key, timeout).await;
            match found {
                Some(seen) => last_read.insert(key.clone(), seen),
                None => last_read.remove(key),
            };
            (Call::Read, reply)
        } else if dice < 75 {
            let (expect, rev) = last_read.remove(key).unwrap();
            let new = shared.values.fetch_add(1, Ordering::Relaxed);
            let mut object = config(REGISTERS, key, new);
            object.meta_mut().resource_version = Some(rev);
            (Call::Cas { expect, new }, write(&client, &object, timeout, true).await)
        } else if dice < 93 {
            let new = shared.values.fetch_add(1, Ordering::Relaxed);
            (Call::Write(new), write(&client, &config(REGISTERS, key, new), timeout, false).await)
        } else {
            (Call::Delete, delete(&client, key, timeout).await)
        };
        let revision = match &reply {
            Reply::Answer(Answer::Done(true), rev) => *rev,
            _ => None,
        };
        record(&shared, member, id, key, call, invoked, outcome_of(reply), revision);
    }
}

/// Creates objects that nobody deletes, one after another, through one member; remembers the
/// names it was told were created.
async fn adder(member: usize, client: Client, shared: Arc<Shared>, acked: Arc<Mutex<Vec<String>>>, timeout: Duration) {
    let mut i = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let name = format!("m{}-{i}", member + 1);
        i += 1;
        match classify(tokio::time::timeout(timeout, client.create(&config(SET, &name, i))).await) {
            Ok(_) => acked.lock().unwrap().push(name),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Watches the registers through one member, resuming from the last revision it saw (change
/// or bookmark) whenever the stream breaks, until it gets a 410 (then `gone`) or is ended.
async fn watcher(client: Client, state: Arc<Mutex<Watched>>) {
    // Everything up to `whole` has arrived (a bookmark's revision, or the one before the last
    // change's: others may share that one); a break resumes there, and what arrives again is
    // known by its key and revision and dropped.
    let mut whole = state.lock().unwrap().from;
    let mut had = std::collections::HashSet::new();
    loop {
        let stream = match client.watch_with_bookmarks_of::<ConfigKind>(Some(REGISTERS), whole).await {
            Ok(s) => s,
            Err(ClientError::Api(status)) if status.reason == Reason::Gone => {
                state.lock().unwrap().gone = true;
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                state.lock().unwrap().resumptions += 1;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let mut watched = state.lock().unwrap();
            match item {
                Ok(WatchLine::Change(event)) => {
                    let deleted = matches!(event.type_, shoal_api::EventType::Deleted);
                    let key = event.object.metadata.name.to_string();
                    let value =
                        if deleted { None } else { event.object.spec.data.get("v").and_then(|v| v.parse().ok()) };
                    whole = whole.max(event.revision - 1);
                    watched.to = watched.to.max(event.revision);
                    if key != "marker" && had.insert((key.clone(), event.revision)) {
                        watched.changes.push(Seen { key, revision: event.revision, value });
                    }
                }
                Ok(WatchLine::Bookmark(revision)) => {
                    whole = whole.max(revision);
                    watched.to = watched.to.max(revision);
                }
                Err(_) => break,
            }
        }
        state.lock().unwrap().resumptions += 1;
    }
}

type Watcher = (tokio::task::JoinHandle<()>, Arc<Mutex<Watched>>);

/// Waits until each watcher has covered revision `last` (or got a 410), then ends it.
async fn finish_watchers(watchers: Vec<Watcher>, last: u64) -> Vec<Watched> {
    let mut out = Vec::new();
    for (task, state) in watchers {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let w = state.lock().unwrap();
                if w.gone || w.to >= last {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not reach revision {last} in 30 s: at {} after {} resumptions",
                    w.name,
                    w.to,
                    w.resumptions
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = task.await;
        out.push(state.lock().unwrap().clone());
    }
    out
}
