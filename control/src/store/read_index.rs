//! Read-index rounds shared by the reads that wait for them. openraft's `ensure_linearizable`
//! sends every follower a heartbeat of its own for each call, so a thousand nodes listing at
//! once cost a thousand rounds on every member, and on a loaded machine those rounds time out
//! and the reads with them. Here, the reads that arrive while a round is under way wait for the
//! next one and share it, as etcd's linearizable read loop does: one round at a time, each
//! answering every read that came before it started.
//!
//! Sharing is safe only with a round that starts after the read arrived: the round's index is
//! the commit index when it starts, so a write acknowledged before the read arrived is within
//! it. A read never joins a round already under way.

use tokio::sync::{mpsc, oneshot};

use super::PeerRefusal;
use super::network::paths;
use super::peer::{PeerClient, PeerError};
use super::types::Raft;

/// What a round answers: the index a linearizable read must wait for, or why there is none.
pub type Answer = Result<u64, PeerRefusal>;

/// A handle to the task that runs the rounds.
#[derive(Clone)]
pub struct ReadIndex {
    waiting: mpsc::UnboundedSender<oneshot::Sender<Answer>>,
}

impl ReadIndex {
    /// Starts the task for `raft`.
    pub fn start(raft: Raft) -> ReadIndex {
        let (waiting, reads) = mpsc::unbounded_channel();
        tokio::spawn(run(move || round(raft.clone()), reads));
        ReadIndex { waiting }
    }

    /// Starts the task for a follower of `raft`: each round asks the leader for its read
    /// index (a round of its own there, started after the request arrived), so that a
    /// follower's reads share one request to the leader as the leader's share one round.
    pub fn start_following(raft: Raft, peers: PeerClient) -> ReadIndex {
        let (waiting, reads) = mpsc::unbounded_channel();
        tokio::spawn(run(move || ask_leader(raft.clone(), peers.clone()), reads));
        ReadIndex { waiting }
    }

    /// The index of a round that started after this call.
    pub async fn get(&self) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.waiting.send(reply).is_err() {
            return Err(PeerRefusal::Failed("raft has stopped".into()));
        }
        answer.await.unwrap_or_else(|_| Err(PeerRefusal::Failed("raft has stopped".into())))
    }
}

async fn round(raft: Raft) -> Answer {
    use openraft::error::{CheckIsLeaderError, RaftError};
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(PeerRefusal::NotLeader { leader: f.leader_node.map(|n| n.addr) })
        }
        Err(e) => Err(PeerRefusal::Failed(e.to_string())),
    }
}

/// The leader's read index, asked through `peers`. Not knowing the leader, or not reaching
/// it, is answered as `NotLeader` with no leader named: the read waits for one and asks again.
async fn ask_leader(raft: Raft, peers: PeerClient) -> Answer {
    let Some((_, addr)) = super::known_leader(&raft) else { return Err(PeerRefusal::NotLeader { leader: None }) };
    let answer: Result<Answer, PeerError> = peers.call(&addr, paths::READ_INDEX, &(), super::LEADER_WAIT).await;
    answer.unwrap_or(Err(PeerRefusal::NotLeader { leader: None }))
}

/// Runs rounds of `confirm` one after another, each for every read queued when it starts.
async fn run<F, Fut>(confirm: F, mut reads: mpsc::UnboundedReceiver<oneshot::Sender<Answer>>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut held = None;
    while let Some(waiting) = shoal_api::batching::next_batch(&mut reads, &mut held, usize::MAX, |_| true).await {
        let answer = confirm().await;
        for reply in waiting {
            let _ = reply.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A round that takes `gate`'s next permit and answers how many rounds began before it.
    fn counted(
        started: Arc<AtomicU64>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> impl Fn() -> futures::future::BoxFuture<'static, Answer> {
        move || {
            let (started, gate) = (started.clone(), gate.clone());
            Box::pin(async move {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                gate.acquire().await.expect("gate open").forget();
                Ok(n)
            })
        }
    }

    #[tokio::test]
    async fn reads_that_arrive_during_a_round_share_the_next_and_never_the_one_under_way() {
        let (started, gate) = (Arc::new(AtomicU64::new(0)), Arc::new(tokio::sync::Semaphore::new(0)));
        let (waiting, reads) = mpsc::unbounded_channel();
        tokio::spawn(run(counted(started.clone(), gate.clone()), reads));
        let index = ReadIndex { waiting };
        let first = tokio::spawn({
            let index = index.clone();
            async move { index.get().await }
        });
        // The first round is under way (and held) before the others ask.
        while started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..50)
            .map(|_| {
                let index = index.clone();
                tokio::spawn(async move { index.get().await })
            })
            .collect();
        // Let the fifty queue up, then release both rounds.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for read in later {
            assert_eq!(read.await.unwrap().unwrap(), 2, "a read that came during round 1 is answered by round 2");
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "fifty reads, one round");
    }

    #[tokio::test]
    async fn a_refusal_reaches_every_read_of_its_round() {
        let (waiting, reads) = mpsc::unbounded_channel();
        let refuse = || async { Err(PeerRefusal::NotLeader { leader: Some("m2".into()) }) };
        tokio::spawn(run(refuse, reads));
        let index = ReadIndex { waiting };
        let answers = futures::future::join_all((0..5).map(|_| index.get())).await;
        for answer in answers {
            assert!(matches!(answer, Err(PeerRefusal::NotLeader { leader: Some(ref l) }) if l == "m2"), "{answer:?}");
        }
    }
}
