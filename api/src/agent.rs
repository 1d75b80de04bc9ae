//! What the control plane and node agents say to each other besides objects: a node's
//! credentials (issued at join), the answer to its heartbeat (which nodes' certificates are no
//! longer good), and the node agent's own small API, which only the control plane calls (to
//! stream an instance's logs to `shoal logs`, whichever node it runs on).

use serde::{Deserialize, Serialize};

/// A node asks for credentials for these host names or addresses (where others reach it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsRequest {
    /// The one name or address its certificate is for: the host others reach it by. Fixed by
    /// the node's first request; later ones must ask for the same.
    pub hosts: Vec<String>,
}

/// What a node gets at join and at each renewal: a certificate of the node CA for its host and
/// its name (see [`crate::identity`]), which it serves its agent API with and presents to other
/// nodes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeCredentials {
    /// The certificate chain, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
    /// When to ask for fresh credentials (seconds from now): well before the certificate
    /// expires.
    #[serde(default)]
    pub renew_after_secs: u64,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials").field("cert", &self.cert).finish_non_exhaustive()
    }
}

/// What a node says with a heartbeat, besides that it is alive: how loaded the autoscaled
/// workloads it serves were since its last beat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Heartbeat {
    /// One entry per autoscaled workload with instances (or requests waiting) on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<WorkloadLoad>,
}

/// The most load entries one heartbeat carries.
pub const MAX_LOAD_ENTRIES: usize = 20_000;

/// The most requests in flight a node may say one workload had on it (more is not believable:
/// the ingress's connection limit is far below it).
pub const MAX_REPORTED_CONCURRENCY: f64 = 1e6;

/// One workload's load on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadLoad {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub workload: String,
    /// Its requests in flight on the node (queued ones included), averaged over the time since
    /// the node's last beat.
    pub concurrency: f64,
    /// With none in flight now: how long ago the last one ended, in milliseconds (so that the
    /// stable window is counted from when the load stopped, not from when it was reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
}

/// The control plane's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    /// Which list of revocations this is; a node that sends it back with its next beat
    /// (`?revocations=TAG`) gets no list while it is unchanged.
    #[serde(default)]
    pub revocations_tag: u64,
    /// Nodes whose tokens were revoked while certificates issued to them before may still be
    /// within their validity (a node refuses those certificates from its peers); `None` when
    /// unchanged since the tag the node sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<RevokedNode>>,
    /// The fencing lease, when the leader that recorded the beat had confirmed its leadership
    /// with a quorum just before (a leader cut off from the others grants none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// A fencing lease: the node may run singleton instances until `millis` after it *sent* the
/// beat this answers (its own clock, so no clocks are compared), provided every singleton
/// instance it runs is among `singletons`. A node whose view lags (a stuck watch) thus gets no
/// renewal for an instance the control plane has already let go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// How long the lease lasts from the beat's sending.
    pub millis: u64,
    /// The uids of the singleton instances bound to the node, as the leader knows them.
    /// Always written: members pass leases to each other in postcard, which cannot skip a
    /// field.
    #[serde(default)]
    pub singletons: Vec<String>,
}

/// A node whose certificates of a generation before `generation` are no longer good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedNode {
    /// The node's name.
    pub node: String,
    /// The generation its certificates are issued in from now on (see
    /// [`crate::identity`]); older ones are refused.
    pub generation: u64,
    /// Seconds since the epoch after which no older certificate is valid anyway (the record
    /// is then no longer sent; its generation is kept for the node's next certificates).
    pub until: i64,
}

/// The agent API path of an instance's logs.
pub fn logs_path(namespace: &str, instance: &str) -> String {
    format!("/logs/{namespace}/{instance}")
}

/// What a read of an instance's logs asks for (the query of the log paths, as `kubectl logs`
/// has it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming what the instance writes.
    #[serde(default)]
    pub follow: bool,
    /// Only the last this many lines of what is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only lines begun in the last this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seconds: Option<u64>,
    /// Each line begins with when it began (RFC 3339, to the nanosecond).
    #[serde(default)]
    pub timestamps: bool,
    /// The run before the last restart (a command's), instead of the current one.
    #[serde(default)]
    pub previous: bool,
}

impl LogOptions {
    /// As a query string.
    pub fn to_query(&self) -> String {
        let mut query = format!("follow={}&timestamps={}&previous={}", self.follow, self.timestamps, self.previous);
        if let Some(tail) = self.tail {
            query.push_str(&format!("&tail={tail}"));
        }
        if let Some(since) = self.since_seconds {
            query.push_str(&format!("&sinceSeconds={since}"));
        }
        query
    }
}

/// The most bytes of values (names, values and file contents) one instance is given: one
/// Secret's worth. Without it, a thousand variables naming one large key would multiply it a
/// thousandfold, on the control plane that resolves them and on the node that holds them.
pub const MAX_VALUES_BYTES: usize = 1 << 20;

/// The values an instance takes from Secrets and Configs, resolved for its node when it starts
/// (`GET /api/v1/namespaces/{ns}/instances/{name}/values`, for the node it is bound to). Its
/// `Debug` shows names only: the values are never logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceValues {
    /// Every environment variable, literal ones included, in the spec's order.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Each directory of files: where the guest sees it, and its files by name.
    #[serde(default)]
    pub files: Vec<(String, std::collections::BTreeMap<String, String>)>,
    /// What `wasi:config/store` answers, literal entries included.
    #[serde(default)]
    pub wasi_config: Vec<(String, String)>,
}

impl InstanceValues {
    /// How many bytes of names, values and files it holds.
    pub fn bytes(&self) -> usize {
        let pairs = |v: &[(String, String)]| v.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let files: usize =
            self.files.iter().map(|(dir, f)| dir.len() + f.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()).sum();
        pairs(&self.env) + pairs(&self.wasi_config) + files
    }
}

impl std::fmt::Debug for InstanceValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |values: &[(String, String)]| values.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        f.debug_struct("InstanceValues")
            .field("env", &names(&self.env))
            .field(
                "files",
                &self.files.iter().map(|(dir, files)| (dir, files.keys().collect::<Vec<_>>())).collect::<Vec<_>>(),
            )
            .field("wasi_config", &names(&self.wasi_config))
            .finish()
    }
}

/// The most instance reports one request carries.
pub const MAX_INSTANCE_REPORTS: usize = 512;

/// A node's reports on the instances bound to it, sent together (`POST
/// /api/v1/nodes/{name}/reports`): one request for what changed on the node meanwhile, however
/// many instances that is, instead of one each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceReports {
    /// At most [`MAX_INSTANCE_REPORTS`].
    pub reports: Vec<InstanceReport>,
}

/// One instance's status as its node observes it; it replaces the stored status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceReport {
    /// The instance's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What the node observes.
    pub status: crate::resources::instance::InstanceStatus,
}

/// What became of one report, in the order of the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReportOutcome {
    /// Stored.
    Written,
    /// The instance is gone: there is nothing more to report on it.
    Gone,
    /// Refused, and why (an instance bound to another node, an invalid status).
    Refused(crate::Status),
}

/// The answer to [`InstanceReports`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportAnswers {
    /// One per report, in order.
    pub outcomes: Vec<ReportOutcome>,
}
