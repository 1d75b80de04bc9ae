//! The node's fencing lease: a singleton instance runs only while the lease holds and names
//! it. Each heartbeat answered by a leader that could confirm its leadership carries a lease
//! that lasts from when the beat was *sent* (this node's clock, so no clocks are compared) and
//! lists the singleton instances the leader binds to this node. The supervisor stops a
//! singleton the moment the lease runs out (the control plane unreachable, or a leader cut off
//! from its quorum) or stops naming it (the leader let it go, while this node's watch may lag),
//! which is before the control plane may start a replacement elsewhere; it starts it again
//! when a lease names it and it is still bound here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::agent::Lease;
use tokio::sync::{Notify, watch};

/// What the last lease granted.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Until when it holds (`None`: never granted).
    pub until: Option<Instant>,
    /// The uids of the singleton instances it lets this node run.
    pub singletons: Arc<BTreeSet<String>>,
}

/// The lease, as its grants arrive.
pub struct Fence {
    grant: watch::Sender<Grant>,
    /// A singleton waits for a lease that names it: the next beat need not wait its interval.
    wanted: Notify,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { grant: watch::Sender::new(Grant::default()), wanted: Notify::new() }
    }
}

impl Fence {
    /// Takes `lease`, granted for a beat sent at `sent`: the singletons it names replace those
    /// named before, and it lasts until the later of its end and the end already held.
    pub fn renew(&self, sent: Instant, lease: &Lease) {
        let until = sent + Duration::from_millis(lease.millis);
        let singletons = Arc::new(lease.singletons.iter().cloned().collect());
        self.grant.send_modify(|grant| {
            grant.until = Some(grant.until.map_or(until, |held| held.max(until)));
            grant.singletons = singletons;
        });
    }

    /// Whether singleton instance `uid` may run at `now`.
    pub fn may_run(&self, uid: Option<&str>, now: Instant) -> bool {
        let grant = self.grant.borrow();
        grant.until.is_some_and(|until| now < until) && uid.is_some_and(|uid| grant.singletons.contains(uid))
    }

    /// A singleton bound here waits for a lease that names it.
    pub fn want(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when a singleton waits for a lease (see [`Fence::want`]).
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// The grants as they arrive (every renewal is a change).
    pub fn subscribe(&self) -> watch::Receiver<Grant> {
        self.grant.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(millis: u64, singletons: &[&str]) -> Lease {
        Lease { millis, singletons: singletons.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_lease_counts_from_the_beat_sent_and_never_shortens() {
        let fence = Fence::default();
        let t0 = Instant::now();
        assert!(!fence.may_run(Some("a"), t0), "no lease before the first answer");
        fence.renew(t0, &lease(1000, &["a"]));
        assert!(fence.may_run(Some("a"), t0 + Duration::from_millis(999)));
        assert!(!fence.may_run(Some("a"), t0 + Duration::from_millis(1000)));
        // An answer to an older beat arriving late does not take the lease back.
        fence.renew(t0 - Duration::from_millis(500), &lease(1000, &["a"]));
        assert!(fence.may_run(Some("a"), t0 + Duration::from_millis(999)));
    }

    #[test]
    fn only_the_singletons_the_last_lease_names_may_run() {
        let fence = Fence::default();
        let t0 = Instant::now();
        fence.renew(t0, &lease(1000, &["a"]));
        assert!(!fence.may_run(Some("b"), t0), "b is not bound here as far as the leader knows");
        assert!(!fence.may_run(None, t0));
        fence.renew(t0 + Duration::from_millis(100), &lease(1000, &["b"]));
        assert!(!fence.may_run(Some("a"), t0 + Duration::from_millis(100)), "the leader let a go");
        assert!(fence.may_run(Some("b"), t0 + Duration::from_millis(100)));
    }
}
