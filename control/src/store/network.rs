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

impl Connection {
    async fn call<Req, Resp, E>(&self, path: &str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<MemberId, E>> =
            self.peers.call(&self.addr, path, request, option.hard_ttl()).await.map_err(|e| match e {
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
