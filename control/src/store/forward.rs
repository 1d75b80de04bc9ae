//! A follower's writes on their way to the leader, a batch at a time. Forwarded one request
//! each, the writes of thousands of nodes reporting their instances' status at once opened as
//! many connections to the leader (the raft listener speaks HTTP/1.1, one request at a time per
//! connection), each with a TLS handshake; on a loaded machine the connects timed out and the
//! writes failed. Here, the writes that arrive while one batch is on its way go together in the
//! next: one request, whose commands the leader proposes together (its proposer packs them into
//! one entry), each answered on its own.
//!
//! A batch goes to one leader address: a write queued for another (the leader changed) starts
//! the next batch. Its body is the commands' own encodings one after another behind their
//! count, which is how postcard encodes a `Vec<Command>`: each write is encoded once, by its
//! caller, and its size bounds the batch before anything is sent.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::PeerRefusal;
use super::network::paths;
use super::peer::{PeerClient, PeerError};
use super::types::CommandResult;

/// The most writes one forwarded batch carries (as many as the proposer puts in one entry).
pub const MAX_WRITES: usize = 512;
/// The most bytes of encoded commands one batch carries; a single larger command goes alone.
pub const MAX_BYTES: usize = 8 << 20;

/// What one forwarded write comes back with: the leader's answer, or why there is none.
pub type Answer = Result<Result<CommandResult, PeerRefusal>, Failure>;

/// Why a batch got no answer from the leader.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Failure {
    /// It certainly did not arrive (no connection): safe to send again.
    #[error("{0}")]
    NeverArrived(String),
    /// It may have arrived and been applied: its outcome is unknown.
    #[error("{0}")]
    Unknown(String),
}

struct Queued {
    leader: String,
    command: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// A handle to the task that forwards the queued writes.
#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Forwarder {
    /// Starts the task, calling leaders through `peers`, giving each batch `timeout`.
    pub fn start(peers: PeerClient, timeout: std::time::Duration) -> Forwarder {
        let (queue, writes) = mpsc::unbounded_channel();
        tokio::spawn(run(peers, writes, timeout));
        Forwarder { queue }
    }

    /// Forwards `command` (postcard-encoded) to the leader at `leader`, with those queued beside it.
    pub async fn forward(&self, leader: &str, command: Vec<u8>) -> Answer {
        let stopped = || Err(Failure::NeverArrived("the control plane is stopping".into()));
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Queued { leader: leader.to_owned(), command, reply }).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

/// The body of a batch of `commands`, each encoded already: postcard's `Vec<Command>`.
fn batch_body<'a>(commands: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = postcard::to_allocvec(&commands.len()).expect("a count encodes");
    for command in commands {
        body.extend_from_slice(command);
    }
    body
}

async fn run(peers: PeerClient, mut queue: mpsc::UnboundedReceiver<Queued>, timeout: std::time::Duration) {
    let mut held = None;
    loop {
        let (mut leader, mut bytes) = (None::<String>, 0);
        let admit = |write: &Queued| {
            bytes += write.command.len();
            let same = leader.get_or_insert_with(|| write.leader.clone()) == &write.leader;
            same && bytes <= MAX_BYTES
        };
        let Some(batch) = shoal_api::batching::next_batch(&mut queue, &mut held, MAX_WRITES, admit).await else {
            return;
        };
        let leader = batch[0].leader.clone();
        let body = batch_body(batch.iter().map(|w| &w.command[..]));
        let answer: Result<Vec<Result<CommandResult, PeerRefusal>>, PeerError> =
            peers.call_encoded(&leader, paths::WRITE, body, timeout).await;
        let answer = answer.map_err(|e| match e.never_arrived() {
            true => Failure::NeverArrived(e.to_string()),
            false => Failure::Unknown(e.to_string()),
        });
        let replies = batch.into_iter().map(|write| write.reply).collect();
        shoal_api::batching::answer_each(replies, answer, |writes, results| {
            Failure::Unknown(format!("the leader answered {writes} writes with {results} results"))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::{Command, ObjectKey};

    #[test]
    fn a_batch_body_decodes_as_the_commands_in_order() {
        let commands = vec![
            Command::Delete { key: ObjectKey("a".into()), expected: None },
            Command::Delete { key: ObjectKey("bb".into()), expected: Some(7) },
        ];
        let encoded: Vec<Vec<u8>> = commands.iter().map(|c| postcard::to_allocvec(c).unwrap()).collect();
        let body = batch_body(encoded.iter().map(|c| &c[..]));
        let decoded: Vec<Command> = postcard::from_bytes(&body).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{commands:?}"));
        let many: Vec<Vec<u8>> = (0..300).map(|_| encoded[0].clone()).collect();
        let decoded: Vec<Command> = postcard::from_bytes(&batch_body(many.iter().map(|c| &c[..]))).unwrap();
        assert_eq!(decoded.len(), 300, "a count past one byte's varint");
    }
}
