//! openraft's network: its RPCs as [`PeerClient`] calls to each member's raft listener.

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::peer::{PeerClient, PeerError};
use super::types::{MemberId, TypeConfig};

/// Paths of raft's RPCs on the raft listener.
pub mod paths {
    /// AppendEntries.
    pub const APPEND: &str = "/raft/append";
    /// RequestVote.
    pub const VOTE: &str = "/raft/vote";
    /// InstallSnapshot (one chunk).
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// A client write forwarded by a follower.
    pub const WRITE: &str = "/raft/write";
    /// A read index for a linearizable read on a follower.
    pub const READ_INDEX: &str = "/raft/read-index";
    /// A new member asking to join.
    pub const JOIN: &str = "/raft/join";
    /// A membership call (list, add, remove, replace) forwarded by a follower to the leader.
    pub const MEMBERS: &str = "/raft/members";
    /// The leader telling a member it removed that it is no longer one.
    pub const LEAVE: &str = "/raft/leave";
    /// A node's heartbeat, forwarded by a follower to the leader, which holds liveness.
    pub const HEARTBEAT: &str = "/raft/heartbeat";
    /// A node's request for an instance of an autoscaled workload at zero, forwarded to the
    /// leader, which holds the autoscaler's load.
    pub const ACTIVATE: &str = "/raft/activate";
    /// A member telling the leader its disk is too full for writes (or has room again).
    pub const DISK: &str = "/raft/disk";
}

/// Makes a [`Connection`] per target member.
pub struct Network {
    peers: PeerClient,
}

impl Network {
    /// A network that calls peers with `peers`.
    pub fn new(peers: PeerClient) -> Self {
        Network { peers }
    }
}

/// openraft's connection to one member.
pub struct Connection {
    peers: PeerClient,
    target: MemberId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Connection {
        Connection { peers: self.peers.clone(), target, addr: node.addr.clone() }
    }
}

type RpcResult<T, E> = Result<T, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>;

/// How long at least an RPC openraft gave up on may go on in the background. openraft gives up
/// on an AppendEntries after one heartbeat interval; dropping the request there would close its
/// HTTP/1.1 connection, and the next request would pay TCP's and TLS's handshakes first: two
/// more round trips, so that on a long round trip every request after one timeout timed out
/// too (seen with 20–60 ms of one-way delay: 2 of 3 writes answered in 4 s). Let finish, it hands
/// its connection back to the pool warm. How many linger is bounded by this and by the one
/// request at a time openraft sends each peer per heartbeat interval.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

impl Connection {
    async fn call<Req, Resp, E>(&self, path: &'static str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned + Send + 'static,
        E: std::error::Error + serde::de::DeserializeOwned + Send + 'static,
    {
        let (peers, addr, ttl) = (self.peers.clone(), self.addr.clone(), option.hard_ttl().max(LINGER));
        let answer = match self.peers.encode(&self.addr, path, request) {
            // openraft's own timer drops this future at its hard TTL; the task goes on.
            Ok(body) => tokio::spawn(async move {
                peers.call_encoded::<Result<Resp, RaftError<MemberId, E>>>(&addr, path, body, ttl).await
            })
            .await
            .unwrap_or_else(|e| {
                Err(PeerError::Failed { url: format!("https://{}{path}", self.addr), message: e.to_string() })
            }),
            Err(e) => Err(e),
        };
        let answer = answer.map_err(|e| match e {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<MemberId>, openraft::error::Infallible> {
        self.call(paths::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<MemberId>, InstallSnapshotError> {
        self.call(paths::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<MemberId>, openraft::error::Infallible> {
        self.call(paths::VOTE, &rpc, &option).await
    }
}
