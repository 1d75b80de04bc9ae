//! Membership: listing, adding, removing and replacing control-plane members. Every change is
//! decided on the leader (a follower forwards it there once, never blindly again) as one raft
//! membership change, and none is made that would leave the cluster without a quorum it can
//! reach. A new member first catches up as a learner (from a snapshot, when the log it needs
//! is compacted) and only then votes. A member that sees itself removed says so, through
//! [`Store::removed`], so that its process can stop instead of campaigning.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use shoal_api::members::{Member, MemberList};
use tokio_util::sync::CancellationToken;

use super::network::paths;
use super::peer::PeerError;
use super::{JoinRequest, LEADER_WAIT, MemberId, PeerRefusal, Raft, Store, StoreError};

/// How long a new member may take to catch up before the change is given up (and the learner
/// it was added as removed again).
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// How long the leader waits for a member to answer when it checks that a removal leaves a
/// quorum it can reach.
const PROBE: Duration = Duration::from_secs(1);

/// What a client asks of the membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembersCall {
    /// The members, as the leader sees them.
    List,
    /// Add a member: a learner until it has caught up, then a voter.
    Add(JoinRequest),
    /// Remove a member.
    Remove(MemberId),
    /// Replace voter `old` with `new` (once `new` has caught up), in one change.
    Replace {
        /// The voter that goes.
        old: MemberId,
        /// The member that takes its place.
        new: JoinRequest,
    },
}

/// Why the leader refused a membership call.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum MemberRefusal {
    /// No member has this id.
    #[error("no control-plane member {0}")]
    NoSuchMember(MemberId),
    /// The change is not allowed, and why.
    #[error("{0}")]
    Refused(String),
}

/// Why a membership call failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The leader refused it.
    #[error(transparent)]
    Refused(#[from] MemberRefusal),
    /// No leader answered, or its answer was lost.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the leader answers a forwarded call with.
pub type MembersAnswer = Result<Result<MemberList, MemberRefusal>, PeerRefusal>;

fn refused(message: String) -> MembersAnswer {
    Ok(Err(MemberRefusal::Refused(message)))
}

/// How a raft membership call fails.
type ChangeError = RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>;

/// What a failed raft membership call answers: a refusal (409) when raft refused the change
/// itself (another under way, a learner missing), not a missing leader.
fn raft_failed(e: ChangeError) -> MembersAnswer {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Err(PeerRefusal::NotLeader { leader: f.leader_node.map(|n| n.addr) })
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => refused(e.to_string()),
        e => Err(PeerRefusal::Failed(e.to_string())),
    }
}

impl Store {
    /// Answers `call` on the leader, or forwards it there.
    pub async fn members_call(&self, call: MembersCall) -> Result<MemberList, MemberError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let answer = if leader == Some(self.id) {
                self.members_here(call.clone()).await
            } else if let Some(addr) = self.leader_addr() {
                let answer: Result<MembersAnswer, PeerError> =
                    self.peers.call(&addr, paths::MEMBERS, &call, CATCH_UP + LEADER_WAIT).await;
                match answer {
                    Ok(answer) => answer,
                    Err(e) if e.never_arrived() => Err(PeerRefusal::NotLeader { leader: None }),
                    // It may have been done: the caller lists the members to find out.
                    Err(e) => return Err(StoreError::Unknown(e.to_string()).into()),
                }
            } else {
                Err(PeerRefusal::NotLeader { leader: None })
            };
            match answer {
                Ok(Ok(list)) => return Ok(list),
                Ok(Err(refusal)) => return Err(refusal.into()),
                Err(refusal @ (PeerRefusal::Failed(_) | PeerRefusal::DiskFull(_))) => {
                    return Err(StoreError::from(refusal).into());
                }
                Err(PeerRefusal::NotLeader { .. }) if Instant::now() < deadline => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), self.wait_for_leader(leader, deadline)).await;
                }
                Err(PeerRefusal::NotLeader { .. }) => {
                    return Err(StoreError::NoLeader("no leader answered in time".into()).into());
                }
            }
        }
    }

    /// Answers `call` as the leader (and answers a follower's forwarded `MEMBERS`).
    pub async fn members_here(&self, call: MembersCall) -> MembersAnswer {
        if !self.is_leader() {
            return Err(PeerRefusal::NotLeader { leader: self.leader_addr() });
        }
        // One change at a time, each deciding from the membership as it is when its turn comes.
        let _turn = match call {
            MembersCall::List => None,
            _ => Some(self.membership_turn.lock().await),
        };
        let done = match call {
            MembersCall::List => Ok(()),
            MembersCall::Add(new) => self.add_here(new).await,
            MembersCall::Remove(id) => self.remove_here(id).await,
            MembersCall::Replace { old, new } => self.replace_here(old, new).await,
        };
        match done {
            // After a change this member may lead no more (it removed itself): what it sees
            // then is still the membership it committed.
            Ok(()) => Ok(Ok(self.list_here())),
            Err(answer) => answer,
        }
    }

    /// The members as this member sees them; how far each has the log only if it leads.
    fn list_here(&self) -> MemberList {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                leader: Some(*id) == m.current_leader,
                matched: match *id == self.id {
                    true => m.last_log_index,
                    false => replication.get(id).copied().flatten().map(|l| l.index),
                },
            })
            .collect();
        MemberList {
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            members,
        }
    }

    fn voters(&self) -> BTreeSet<MemberId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    fn address_of(&self, id: MemberId) -> Option<String> {
        self.raft.metrics().borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Adds `new` as a learner and waits until it has caught up; gives up (removing the
    /// learner again) after [`CATCH_UP`]. A learner already there at the same address is
    /// waited for again, so that a retried call completes what the first one began.
    async fn add_learner_caught_up(&self, new: &JoinRequest) -> Result<(), MembersAnswer> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if let Some((other, _)) = membership.nodes().find(|(id, n)| n.addr == new.addr && **id != new.id) {
            return Err(refused(format!("member {other} has address {} already", new.addr)));
        }
        // openraft's own wait counts a learner within its lag threshold (5000 entries) as caught
        // up, even one that has received nothing: so first the address must answer, and then
        // the learner must hold everything committed before the call.
        let answer: Result<Result<u64, PeerRefusal>, PeerError> =
            self.peers.call(&new.addr, paths::READ_INDEX, &(), PROBE).await;
        if let Err(e) = answer {
            return Err(refused(format!(
                "nothing answers at {}: start the new member first (shoal control --standby): {e}",
                new.addr
            )));
        }
        let target = m.last_log_index.unwrap_or(0);
        let caught_up = async {
            self.raft.add_learner(new.id, BasicNode::new(&new.addr), false).await?;
            let mut metrics = self.raft.metrics();
            loop {
                let matched = {
                    let m = metrics.borrow_and_update();
                    if m.current_leader != Some(self.id) {
                        return Ok(false);
                    }
                    m.replication.as_ref().and_then(|r| r.get(&new.id).copied().flatten()).map(|l| l.index)
                };
                if matched.is_some_and(|i| i >= target) {
                    return Ok(true);
                }
                if metrics.changed().await.is_err() {
                    return Ok(false);
                }
            }
        };
        let waited: Result<Result<bool, ChangeError>, _> = tokio::time::timeout(CATCH_UP, caught_up).await;
        match waited {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Err(PeerRefusal::NotLeader { leader: self.leader_addr() })),
            Ok(Err(e)) => Err(raft_failed(e)),
            Err(_) => {
                let gone = self.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([new.id])), false);
                if let Err(e) = gone.await {
                    tracing::warn!("removing learner {} that did not catch up: {e}", new.id);
                }
                Err(refused(format!(
                    "member {} at {} did not catch up within {CATCH_UP:?}: is it running, started with --standby \
                     and this cluster's PKI?",
                    new.id, new.addr
                )))
            }
        }
    }

    async fn add_here(&self, new: JoinRequest) -> Result<(), MembersAnswer> {
        if self.voters().contains(&new.id) {
            return match self.address_of(new.id) {
                // A join or an add retried after it was done.
                Some(addr) if addr == new.addr => Ok(()),
                addr => Err(refused(format!("member {} exists already, at {}", new.id, addr.unwrap_or_default()))),
            };
        }
        self.add_learner_caught_up(&new).await?;
        let promote = ChangeMembers::AddVoterIds(BTreeSet::from([new.id]));
        self.raft.change_membership(promote, false).await.map_err(raft_failed)?;
        Ok(())
    }

    async fn remove_here(&self, id: MemberId) -> Result<(), MembersAnswer> {
        if self.address_of(id).is_none() {
            return Err(Ok(Err(MemberRefusal::NoSuchMember(id))));
        }
        let voters = self.voters();
        let change = if voters.contains(&id) {
            let remaining: BTreeSet<MemberId> = voters.iter().copied().filter(|v| *v != id).collect();
            if remaining.is_empty() {
                return Err(refused(format!("member {id} is the last voter: a cluster cannot remove its last member")));
            }
            self.check_quorum_reachable(&remaining).await?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let address = self.address_of(id);
        self.raft.change_membership(change, false).await.map_err(raft_failed)?;
        self.tell_removed(id, address).await;
        Ok(())
    }

    async fn replace_here(&self, old: MemberId, new: JoinRequest) -> Result<(), MembersAnswer> {
        let voters = self.voters();
        if !voters.contains(&old) {
            return Err(match self.address_of(old) {
                Some(_) => refused(format!("member {old} is a learner, not a voter: remove it instead")),
                None => Ok(Err(MemberRefusal::NoSuchMember(old))),
            });
        }
        if voters.contains(&new.id) {
            return Err(refused(format!("member {} is a voter already", new.id)));
        }
        self.add_learner_caught_up(&new).await?;
        let next: BTreeSet<MemberId> = voters.into_iter().filter(|v| *v != old).chain([new.id]).collect();
        let change = ChangeMembers::ReplaceAllVoters(next);
        let address = self.address_of(old);
        self.raft.change_membership(change, false).await.map_err(raft_failed)?;
        self.tell_removed(old, address).await;
        Ok(())
    }

    /// Tells member `id` it was removed (the leader stops replicating to a removed member at
    /// once, so it may never see the membership without it); best effort, and the member
    /// checks with the leader before it believes it. A removed leader learns by itself.
    async fn tell_removed(&self, id: MemberId, address: Option<String>) {
        let Some(address) = address.filter(|_| id != self.id) else { return };
        let told: Result<(), PeerError> = self.peers.call(&address, paths::LEAVE, &id, PROBE).await;
        if let Err(e) = told {
            tracing::warn!("telling removed member {id} at {address}: {e}; stop its process by hand");
        }
    }

    /// Answers `LEAVE`: another member says this one was removed. Believed only once the leader
    /// lists the members without it.
    pub fn told_removed(self: &std::sync::Arc<Self>, id: MemberId) {
        if id != self.id {
            return tracing::warn!("told that member {id} was removed, but this is member {}", self.id);
        }
        let store = self.clone();
        tokio::spawn(async move {
            match store.members_call(MembersCall::List).await {
                Ok(list) if list.members.iter().all(|m| m.id != store.id) => {
                    tracing::warn!("member {} was removed from the control plane", store.id);
                    store.removed.cancel();
                }
                Ok(_) => tracing::warn!("told this member was removed, but the leader still lists it"),
                Err(e) => tracing::warn!("told this member was removed, and could not ask the leader: {e}"),
            }
        });
    }

    /// Refuses (with the figures) unless a majority of `voters` answers now: the leader itself,
    /// and every other voter whose raft listener replies within [`PROBE`].
    async fn check_quorum_reachable(&self, voters: &BTreeSet<MemberId>) -> Result<(), MembersAnswer> {
        let probes =
            voters.iter().filter(|v| **v != self.id).filter_map(|v| self.address_of(*v)).map(|addr| async move {
                let answer: Result<Result<u64, PeerRefusal>, PeerError> =
                    self.peers.call(&addr, paths::READ_INDEX, &(), PROBE).await;
                answer.is_ok()
            });
        let answering = futures::future::join_all(probes).await.into_iter().filter(|ok| *ok).count()
            + usize::from(voters.contains(&self.id));
        let quorum = voters.len() / 2 + 1;
        if answering < quorum {
            return Err(refused(format!(
                "after the removal {answering} of {} voters would answer, and a quorum is {quorum}: bring members \
                 back (or add one) first",
                voters.len()
            )));
        }
        Ok(())
    }

    /// Fires once this member has applied a membership that no longer includes it.
    pub fn removed(&self) -> CancellationToken {
        self.removed.clone()
    }
}

/// Watches raft's membership and cancels `removed` once a membership without member `id` is
/// applied, after one that included it (a new member's first membership, from a snapshot taken
/// before it was added, does not include it yet). A removed member gets no more log from the
/// leader and would otherwise campaign for ever.
pub(super) async fn notice_removal(raft: Raft, id: MemberId, removed: CancellationToken) {
    let mut metrics = raft.metrics();
    let mut was_member = false;
    loop {
        {
            let m = metrics.borrow_and_update();
            let stored = &m.membership_config;
            let membership = stored.membership();
            if membership.get_node(&id).is_some() {
                was_member = true;
            } else if was_member && membership.nodes().next().is_some() && *stored.log_id() <= m.last_applied {
                tracing::warn!("member {id} was removed from the control plane");
                removed.cancel();
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
