//! Reporting to the control plane: instance status (the node is its only writer, so the latest
//! status simply replaces the stored one, retried until the control plane takes it). Events go
//! through [`super::events`].

use std::time::Duration;

use shoal_api::Client;
use shoal_api::agent::{InstanceReport, InstanceReports, MAX_INSTANCE_REPORTS, ReportOutcome};
use shoal_api::batching;
use shoal_api::resources::instance::{Instance, InstanceStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The current time, as objects record it.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The most bytes of reports one request carries (a fraction of the API's object limit).
const MAX_REPORT_BYTES: usize = 1 << 20;

/// Pause before a report that failed is sent again.
const RETRY: Duration = Duration::from_secs(1);

/// What a queued report comes back with: its outcome, or why the request failed.
type Sent = Result<ReportOutcome, String>;

struct Queued {
    report: InstanceReport,
    size: usize,
    reply: oneshot::Sender<Sent>,
}

/// A node's instance reports on their way to the control plane, one request at a time with
/// every report that queued while the last was on its way. A node that starts or stops many
/// instances at once (or finds the control plane slow) sends one request for them, not one
/// each: at 30 instances per node, 5,000 nodes retrying their reports one request each were
/// what a slow control plane could not climb out from under.
#[derive(Clone)]
pub struct Reports {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Reports {
    /// Starts the task that sends node `node`'s reports through `client`.
    pub fn start(client: Client, node: String) -> Reports {
        let (queue, reports) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(client, node, reports));
        Reports { queue }
    }

    /// Sends `report` with those queued beside it; what became of it.
    async fn send(&self, report: InstanceReport) -> Sent {
        let size = serde_json::to_vec(&report).map_or(0, |b| b.len());
        let (reply, answer) = oneshot::channel();
        self.queue.send(Queued { report, size, reply }).map_err(|_| "the agent is stopping".to_owned())?;
        answer.await.unwrap_or_else(|_| Err("the agent is stopping".into()))
    }
}

async fn send_batches(client: Client, node: String, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut held = None;
    loop {
        let mut bytes = 0;
        let admit = |q: &Queued| {
            bytes += q.size;
            bytes <= MAX_REPORT_BYTES
        };
        let Some(batch) = batching::next_batch(&mut queue, &mut held, MAX_INSTANCE_REPORTS, admit).await else {
            return;
        };
        let (reports, replies): (Vec<InstanceReport>, Vec<_>) = batch.into_iter().map(|q| (q.report, q.reply)).unzip();
        let answer = client.report_instances(&node, &InstanceReports { reports }).await;
        let outcomes = answer.map(|a| a.outcomes).map_err(|e| e.to_string());
        batching::answer_each(replies, outcomes, |reports, outcomes| {
            format!("{reports} reports were answered with {outcomes} outcomes")
        });
    }
}

/// Pushes every change of `status` into `instance`'s stored status until `cancel`, or until
/// the instance is gone. While the control plane is unreachable it retries, and only the latest
/// status is ever sent.
pub async fn push_status(
    reports: Reports,
    instance: Instance,
    mut status: watch::Receiver<InstanceStatus>,
    cancel: CancellationToken,
) {
    let namespace = instance.metadata.namespace.clone().map_or_else(|| "default".to_owned(), |n| n.to_string());
    let name = instance.metadata.name.to_string();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
        let mut current = status.borrow_and_update().clone();
        loop {
            let report = InstanceReport { namespace: namespace.clone(), name: name.clone(), status: current.clone() };
            let why = match reports.send(report).await {
                Ok(ReportOutcome::Written) => break,
                Ok(ReportOutcome::Gone) => return,
                Ok(ReportOutcome::Refused(refusal)) => refusal.to_string(),
                Err(why) => why,
            };
            tracing::info!("status of {name}: {why}; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            if status.has_changed().unwrap_or(false) {
                current = status.borrow_and_update().clone();
            }
        }
    }
}
