//! The proposer: packs concurrent writes into one raft entry. Every write waits for a commit
//! (a quorum's fsync), so one entry per write makes the log's fixed costs (an entry to append,
//! replicate and apply, a round trip per follower) the limit under load. Here, writes that
//! arrive while earlier entries are in flight are proposed together as one `Command::Batch`, and
//! each writer gets its own result. A lone write goes out at once, alone: batching costs nothing
//! when there is nothing to batch.

use std::collections::HashSet;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::types::{Command, CommandResult, MemberId, Raft};

/// What a write gets back: the result, or raft's refusal (shared by every write of a batch).
pub type Outcome = Result<CommandResult, RaftError<MemberId, ClientWriteError<MemberId, openraft::BasicNode>>>;

/// How many writes one entry carries at most.
const MAX_BATCH: usize = 512;
/// How many entries may be in flight at once. One: openraft 0.9 flushes the leader's log and
/// replicates one entry after the other anyway, so a second entry in flight only splits the
/// queued writes into more, smaller entries, and every entry costs a commit on each member
/// (measured with 64 connections: one in flight 9.1k creates/s, two 8.6k; four gave 17% fewer
/// than one; BENCHMARKS.md).
const IN_FLIGHT: usize = 1;

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Outcome>,
}

/// A handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
    commits: Histogram,
}

impl Proposer {
    /// Starts the proposer task for `raft`.
    pub fn start(raft: Raft) -> Proposer {
        let (queue, proposals) = mpsc::unbounded_channel();
        let commits = crate::metrics::latency_buckets();
        tokio::spawn(run(raft, proposals, commits.clone()));
        Proposer { queue, commits }
    }

    /// How long its entries took from proposal to commit (and apply), for the metrics.
    pub fn commit_latency(&self) -> Histogram {
        self.commits.clone()
    }

    /// Proposes `command` (possibly together with others) and waits for its result.
    pub async fn propose(&self, command: Command) -> Outcome {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Proposal { command, reply }).is_err() {
            return Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
        }
        answer.await.unwrap_or(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)))
    }
}

async fn run(raft: Raft, mut proposals: mpsc::UnboundedReceiver<Proposal>, commits: Histogram) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        // Wait for a free slot first, so that what queues up meanwhile goes into one entry.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // One change per key per entry: every change then has a revision of its own for its
        // object, so a resourceVersion names exactly one state of it (a compare-and-set from
        // a write's answer cannot match a later write in the same entry). A write to a key
        // already in the batch waits for the next entry, and so does everything after it.
        let mut keys = HashSet::new();
        let admit = |p: &Proposal| {
            let mut clash = false;
            p.command.keys(&mut |k| clash |= keys.contains(k));
            if !clash {
                p.command.keys(&mut |k| {
                    keys.insert(k.to_owned());
                });
            }
            !clash
        };
        let Some(mut batch) = shoal_api::batching::next_batch(&mut proposals, &mut held, MAX_BATCH, admit).await else {
            return;
        };
        let (raft, commits) = (raft.clone(), commits.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let started = std::time::Instant::now();
            let timed = |outcome| {
                commits.observe(started.elapsed().as_secs_f64());
                outcome
            };
            if batch.len() == 1 {
                let Proposal { command, reply } = batch.pop().expect("one proposal");
                let _ = reply.send(timed(raft.client_write(command).await).map(|r| r.data));
                return;
            }
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            match timed(raft.client_write(Command::Batch(commands)).await) {
                Ok(response) => match response.data {
                    CommandResult::Batch(results) if results.len() == replies.len() => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    other => {
                        let message = format!("a batch of {} writes was answered with {other:?}", replies.len());
                        for reply in replies {
                            let _ = reply.send(Ok(CommandResult::Invalid { message: message.clone() }));
                        }
                    }
                },
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
