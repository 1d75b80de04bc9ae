//! The control plane's metrics, served at `GET /metrics` (admin token) in the Prometheus text
//! exposition (written by prometheus-client, in the classic format:
//! [`shoal_api::exposition`]): API requests by verb, kind and code
//! with latency histograms; raft (term, leadership and its changes, commit latency, log and
//! applied indexes, log entries, snapshot, store size); the controllers (queue depth, reconcile
//! latency per task kind, writes); the scheduler (binds, instances pending, bind latency); DNS
//! queries by answer. Label values come from closed sets (verbs, kinds, codes, task kinds), never from
//! what a caller names, so a hostile client cannot grow the series.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_api::Kind;

/// An API request, as counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `delete`, or the method for other paths.
    pub verb: &'static str,
    /// The kind's plural, `modules`, or `other`.
    pub kind: &'static str,
    /// The status code.
    pub code: u16,
}

/// An API request, as timed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// As in [`RequestLabels`].
    pub verb: &'static str,
    /// As in [`RequestLabels`].
    pub kind: &'static str,
}

/// A reconcile, by what it reconciled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// The task's kind (`workload`, `schedule`, `node`, ...).
    pub task: &'static str,
}

/// A DNS answer, by its response code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// `NoError`, `NXDomain`, `Refused`, ...
    pub rcode: &'static str,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 100 µs to about 3 s.
pub fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// Every metric of a control member.
pub struct Metrics {
    registry: Registry,
    /// API requests answered.
    pub api_requests: Family<RequestLabels, Counter>,
    /// How long the API took to answer (to the head of the answer: a watch streams on).
    pub api_latency: Timings<RouteLabels>,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_leader_changes: Counter,
    raft_last_log_index: Gauge,
    raft_applied_index: Gauge,
    raft_log_entries: Gauge,
    raft_snapshot_index: Gauge,
    store_bytes: Gauge,
    /// The last leader seen, to count changes at scrape time and as they are noticed.
    last_leader: Mutex<Option<u64>>,
    /// Tasks waiting in the controllers' queue.
    pub queue_depth: Gauge,
    /// How long one round of reconciles took, per task kind.
    pub reconcile_latency: Timings<TaskLabels>,
    /// Writes the controllers made.
    pub controller_writes: Counter,
    /// Instances the scheduler bound.
    pub binds: Counter,
    /// Instances waiting for a node.
    pub pending: Gauge,
    /// How long instances waited for their node.
    pub bind_latency: Histogram,
    /// DNS queries answered.
    pub dns_queries: Family<DnsLabels, Counter>,
}

/// A histogram per label set, with [`latency_buckets`].
fn timings<L: Clone + std::hash::Hash + Eq>() -> Timings<L> {
    Timings::new_with_constructor(latency_buckets as fn() -> Histogram)
}

/// Registers `metric` in `registry` and gives it back.
fn add<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(latency_buckets())
    }
}

impl Metrics {
    /// The metrics of a member whose store times its raft commits in `commits`.
    pub fn new(commits: Histogram) -> Self {
        let mut r = Registry::with_prefix("shoal");
        let api_requests =
            add(&mut r, "api_requests", "API requests answered, by verb, kind and status code", Family::default());
        let api_latency = add(
            &mut r,
            "api_request_duration_seconds",
            "Time to answer an API request (to the head of a watch)",
            timings(),
        );
        add(
            &mut r,
            "raft_commit_duration_seconds",
            "Time from proposing a raft entry to its commit and apply",
            commits,
        );
        let raft_term = add(&mut r, "raft_term", "The raft term this member is in", Gauge::default());
        let raft_leader = add(&mut r, "raft_is_leader", "1 if this member leads", Gauge::default());
        let raft_leader_changes =
            add(&mut r, "raft_leader_changes", "Changes of leader this member saw", Counter::default());
        let raft_last_log_index =
            add(&mut r, "raft_last_log_index", "The last index in this member's raft log", Gauge::default());
        let raft_applied_index =
            add(&mut r, "raft_applied_index", "The last raft index this member applied", Gauge::default());
        let raft_log_entries = add(
            &mut r,
            "raft_log_entries",
            "Entries in this member's raft log (not yet purged after a snapshot)",
            Gauge::default(),
        );
        let raft_snapshot_index =
            add(&mut r, "raft_snapshot_index", "The last raft index this member's snapshot holds", Gauge::default());
        let store_bytes =
            add(&mut r, "store_file_bytes", "Size of this member's store file (log and objects)", Gauge::default());
        let queue_depth =
            add(&mut r, "controller_queue_depth", "Tasks waiting in the controllers' queue", Gauge::default());
        let reconcile_latency = add(
            &mut r,
            "controller_reconcile_duration_seconds",
            "Time the reconciles of one round took, by task kind",
            timings(),
        );
        let controller_writes = add(&mut r, "controller_writes", "Writes the controllers made", Counter::default());
        let binds = add(&mut r, "scheduler_binds", "Instances the scheduler bound to nodes", Counter::default());
        let pending = add(&mut r, "scheduler_pending_instances", "Instances waiting for a node", Gauge::default());
        let bind_latency = add(
            &mut r,
            "scheduler_bind_duration_seconds",
            "Time from when the scheduler first saw an instance waiting to its bind (placed as it was made: its round's time)",
            latency_buckets(),
        );
        let dns_queries = add(&mut r, "dns_queries", "DNS queries answered, by response code", Family::default());
        Metrics {
            registry: r,
            api_requests,
            api_latency,
            raft_term,
            raft_leader,
            raft_leader_changes,
            raft_last_log_index,
            raft_applied_index,
            raft_log_entries,
            raft_snapshot_index,
            store_bytes,
            last_leader: Mutex::new(None),
            queue_depth,
            reconcile_latency,
            controller_writes,
            binds,
            pending,
            bind_latency,
            dns_queries,
        }
    }
}

/// What raft says of this member now.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftFigures {
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// The last index in its log.
    pub last_log_index: u64,
    /// The last index it applied.
    pub applied_index: u64,
    /// Entries in its log.
    pub log_entries: u64,
    /// The last index its snapshot holds.
    pub snapshot_index: u64,
    /// The size of its store file.
    pub store_bytes: u64,
}

impl Metrics {
    /// Counts and times one API request.
    pub fn request(&self, verb: &'static str, kind: &'static str, code: u16, took: Duration) {
        self.api_requests.get_or_create(&RequestLabels { verb, kind, code }).inc();
        self.api_latency.get_or_create(&RouteLabels { verb, kind }).observe(took.as_secs_f64());
    }

    /// Records what raft says now.
    pub fn raft(&self, figures: RaftFigures) {
        self.raft_term.set(figures.term as i64);
        self.raft_leader.set(i64::from(figures.is_leader));
        self.raft_last_log_index.set(figures.last_log_index as i64);
        self.raft_applied_index.set(figures.applied_index as i64);
        self.raft_log_entries.set(figures.log_entries as i64);
        self.raft_snapshot_index.set(figures.snapshot_index as i64);
        self.store_bytes.set(figures.store_bytes as i64);
        let mut last = self.last_leader.lock().expect("metrics lock");
        if figures.leader.is_some() && figures.leader != *last {
            if last.is_some() {
                self.raft_leader_changes.inc();
            }
            *last = figures.leader;
        }
    }

    /// The exposition, in the classic Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        shoal_api::exposition::to_prometheus_text(&text)
    }
}

/// The verb and kind of an API request, from its method and path (closed sets: anything else
/// is `other`).
pub fn classify(method: &axum::http::Method, path: &str, query: Option<&str>) -> (&'static str, &'static str) {
    use axum::http::Method;
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    // The kind's plural, and whether the path names one object (and no subresource past it).
    let (plural, named) = match segments.as_slice() {
        ["namespaces", _, plural] => (*plural, false),
        ["namespaces", _, plural, _, ..] => (*plural, true),
        ["namespaces", _] => ("namespaces", true),
        [plural] => (*plural, false),
        [plural, _, ..] => (*plural, true),
        [] => ("other", false),
    };
    let kind = Kind::ALL.iter().map(|k| k.plural()).find(|p| *p == plural);
    let kind = match (kind, plural) {
        (Some(kind), _) => kind,
        (None, "modules") => "modules",
        (None, "tokens") => "tokens",
        _ => "other",
    };
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "other",
    };
    (verb, kind)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn requests_are_classified_into_closed_sets() {
        let of = |m: Method, p: &str, q: Option<&str>| classify(&m, p, q);
        assert_eq!(of(Method::GET, "/api/v1/namespaces/a/workloads/w", None), ("get", "workloads"));
        assert_eq!(of(Method::GET, "/api/v1/namespaces/a/workloads", None), ("list", "workloads"));
        assert_eq!(of(Method::GET, "/api/v1/instances", Some("watch=true&resourceVersion=3")), ("watch", "instances"));
        assert_eq!(of(Method::PUT, "/api/v1/namespaces/a/instances/i/status", None), ("update", "instances"));
        assert_eq!(of(Method::POST, "/api/v1/namespaces/a/services", None), ("create", "services"));
        assert_eq!(of(Method::DELETE, "/api/v1/nodes/n1", None), ("delete", "nodes"));
        assert_eq!(of(Method::GET, "/api/v1/namespaces/a", None), ("get", "namespaces"));
        assert_eq!(of(Method::PUT, "/api/v1/namespaces/a/modules/abc", None), ("update", "modules"));
        // What a caller makes up is not a label value.
        assert_eq!(of(Method::GET, "/api/v1/namespaces/a/made-up-thing", None), ("list", "other"));
        assert_eq!(of(Method::PATCH, "/api/v1/x/y/z", None), ("other", "other"));
    }

    #[test]
    fn the_exposition_names_every_family_and_counts_leader_changes() {
        let metrics = Metrics::default();
        metrics.request("get", "workloads", 200, Duration::from_millis(3));
        let figures = RaftFigures {
            term: 2,
            leader: Some(1),
            is_leader: true,
            last_log_index: 10,
            log_entries: 4,
            ..Default::default()
        };
        metrics.raft(figures);
        metrics.raft(RaftFigures { term: 3, leader: Some(2), ..Default::default() });
        metrics.binds.inc();
        let text = metrics.render();
        for line in [
            "shoal_api_requests_total{verb=\"get\",kind=\"workloads\",code=\"200\"} 1",
            "shoal_raft_term 3",
            "shoal_raft_leader_changes_total 1",
            "shoal_scheduler_binds_total 1",
            "# TYPE shoal_api_request_duration_seconds histogram",
            "# TYPE shoal_api_requests_total counter",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
