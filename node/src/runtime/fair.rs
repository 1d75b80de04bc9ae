//! A fair share of the node's threads between tenants. A guest holds one of the node's slots
//! only while it runs on a thread: its future takes a slot each time it is polled and gives it
//! back each time it returns pending, that is whenever it waits for I/O, for another guest, for
//! its CPU quota, or yields at an epoch tick (every 2 ms of running). So a slow guest waiting on
//! the network holds nothing, a guest calling another cannot deadlock the node, and a busy one
//! takes its turn again every tick.
//!
//! At most `slots` guests run at once (the node's cores), and at most `per_namespace` of them
//! for one namespace (one fewer than the cores), so that however many requests one tenant
//! floods the node with, a thread is left for the others. When a slot frees, it goes to the
//! namespaces with waiting guests in turn (round robin), not to whoever queued first: one
//! tenant's flood waits behind itself.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    free: usize,
    /// Slots held per namespace.
    held: HashMap<Arc<str>, usize>,
    /// Waiters per namespace, in arrival order.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Namespaces with waiters, in the order they get the next slot.
    turn: VecDeque<Arc<str>>,
}

/// The node's guest slots.
pub struct FairGate {
    per_namespace: usize,
    state: Mutex<State>,
}

/// One slot, given back (to the next namespace in turn) when dropped.
pub struct Slot {
    gate: Arc<FairGate>,
    namespace: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release(&self.namespace);
    }
}

impl FairGate {
    /// A gate of `slots` slots, at most `per_namespace` of them (at least 1) for one namespace.
    pub fn new(slots: usize, per_namespace: usize) -> Arc<FairGate> {
        Arc::new(FairGate {
            per_namespace: per_namespace.max(1),
            state: Mutex::new(State { free: slots.max(1), ..State::default() }),
        })
    }

    /// A slot for namespace `ns` now, if one is free and the namespace has fewer than its
    /// share. (Whenever a slot is free, no namespace that may take one is waiting: a freed
    /// slot goes to the waiters first.)
    pub fn try_enter(self: &Arc<Self>, ns: &Arc<str>) -> Option<Slot> {
        let mut state = self.state.lock().expect("fair gate lock");
        let held = state.held.get(ns).copied().unwrap_or(0);
        if state.free == 0 || held >= self.per_namespace || state.waiting.contains_key(ns) {
            return None;
        }
        state.free -= 1;
        *state.held.entry(ns.clone()).or_default() += 1;
        Some(Slot { gate: self.clone(), namespace: ns.clone() })
    }

    /// Waits for a slot for namespace `ns`.
    pub async fn enter(self: Arc<Self>, ns: Arc<str>) -> Slot {
        if let Some(slot) = self.try_enter(&ns) {
            return slot;
        }
        let receiver = {
            let mut state = self.state.lock().expect("fair gate lock");
            let (sender, receiver) = oneshot::channel();
            let queue = state.waiting.entry(ns.clone()).or_default();
            queue.push_back(sender);
            if queue.len() == 1 {
                state.turn.push_back(ns.clone());
            }
            // A slot may have been freed between the two locks.
            self.hand_out(&mut state);
            receiver
        };
        // Given back if this waiter goes away after it was handed the slot but before it ran.
        struct Waiting {
            receiver: Option<oneshot::Receiver<()>>,
            gate: Arc<FairGate>,
            namespace: Arc<str>,
        }
        impl Drop for Waiting {
            fn drop(&mut self) {
                let Some(mut receiver) = self.receiver.take() else { return };
                // Under the gate's lock, which every hand-out sends under: closed first, so
                // that no slot can arrive after the look and be lost.
                let mut state = self.gate.state.lock().expect("fair gate lock");
                receiver.close();
                if receiver.try_recv().is_ok() {
                    self.gate.release_locked(&mut state, &self.namespace);
                }
            }
        }
        let mut waiting = Waiting { receiver: Some(receiver), gate: self.clone(), namespace: ns.clone() };
        let receiver = waiting.receiver.as_mut().expect("set above");
        // The sender is only ever dropped after a send (or with the gate).
        let _ = receiver.await;
        waiting.receiver = None;
        Slot { gate: self.clone(), namespace: ns }
    }

    /// Gives back a slot of `ns`, and hands free slots to the waiters in turn.
    fn release(&self, ns: &Arc<str>) {
        let mut state = self.state.lock().expect("fair gate lock");
        self.release_locked(&mut state, ns);
    }

    fn release_locked(&self, state: &mut State, ns: &Arc<str>) {
        if let Some(held) = state.held.get_mut(ns) {
            *held -= 1;
            if *held == 0 {
                state.held.remove(ns);
            }
        }
        state.free += 1;
        self.hand_out(state);
    }

    /// Hands free slots to waiting namespaces in turn, skipping those at their share (they
    /// keep their place and get a turn once one of theirs ends).
    fn hand_out(&self, state: &mut State) {
        let mut skipped = 0;
        while state.free > 0 && skipped < state.turn.len() {
            let Some(ns) = state.turn.pop_front() else { break };
            if state.held.get(&ns).copied().unwrap_or(0) >= self.per_namespace {
                state.turn.push_back(ns);
                skipped += 1;
                continue;
            }
            let Some(queue) = state.waiting.get_mut(&ns) else { continue };
            let next = queue.pop_front();
            let more = !queue.is_empty();
            if !more {
                state.waiting.remove(&ns);
            }
            if let Some(sender) = next
                && sender.send(()).is_ok()
            {
                state.free -= 1;
                *state.held.entry(ns.clone()).or_default() += 1;
                skipped = 0;
            }
            if more {
                state.turn.push_back(ns);
            }
        }
    }
}

/// Where a guest takes its turns: the node's gate, as a guest of `namespace`, its turns' time
/// added to `cpu`.
#[derive(Clone)]
pub struct Turns {
    /// The node's gate.
    pub gate: Arc<FairGate>,
    /// The guest's namespace.
    pub namespace: Arc<str>,
    /// Where the time of its turns adds up.
    pub cpu: Arc<CpuTime>,
}

/// The time a guest's turns took on the node's threads, added up: its CPU time as near as
/// the future that runs it can tell (a turn the kernel preempts counts the wait too), measured
/// around each poll, so a request shorter than an epoch tick still counts.
#[derive(Debug, Default)]
pub struct CpuTime(AtomicU64);

impl CpuTime {
    fn add(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The seconds taken so far.
    pub fn seconds(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Whose turns a connection takes: the namespace its current request was routed to, set by
/// the handler; until then (a new connection, a request being read, a host that routes nowhere)
/// the turns of [`UNROUTED`], which is no namespace's, so that work no tenant is charged for
/// has a share of its own and never a victim's.
#[derive(Clone)]
pub struct Owner(Arc<Mutex<Arc<str>>>);

/// The share of connections not (yet) routed to a namespace: an empty name, which no
/// namespace has.
pub const UNROUTED: &str = "";

impl Default for Owner {
    fn default() -> Self {
        Owner(Arc::new(Mutex::new(UNROUTED.into())))
    }
}

impl Owner {
    /// From now on the connection takes `namespace`'s turns.
    pub fn set(&self, namespace: &str) {
        let mut owner = self.0.lock().expect("owner lock");
        if **owner != *namespace {
            *owner = namespace.into();
        }
    }

    fn get(&self) -> Arc<str> {
        self.0.lock().expect("owner lock").clone()
    }
}

/// Who a [`Fair`] future takes its turns as.
#[derive(Clone)]
enum Whose {
    Namespace(Arc<str>),
    Owner(Owner),
}

/// A future run in turns: each poll holds a slot of its namespace, taken (fairly) before and
/// given back after.
pub struct Fair<F> {
    inner: Pin<Box<F>>,
    gate: Arc<FairGate>,
    whose: Whose,
    /// A slot being waited for, and for which namespace.
    waiting: Option<(Arc<str>, Entering)>,
    /// Where its turns' time adds up (a guest's; a connection's is no guest's).
    cpu: Option<Arc<CpuTime>>,
}

/// A wait for a slot.
type Entering = Pin<Box<dyn Future<Output = Slot> + Send>>;

impl<F> Fair<F> {
    /// `inner`, run in `turns`.
    pub fn new(inner: F, turns: Turns) -> Self {
        let whose = Whose::Namespace(turns.namespace);
        Fair { inner: Box::pin(inner), gate: turns.gate, whose, waiting: None, cpu: Some(turns.cpu) }
    }

    /// `inner` (a connection), run in the turns of whichever namespace `owner` names.
    pub fn owned(inner: F, gate: Arc<FairGate>, owner: Owner) -> Self {
        Fair { inner: Box::pin(inner), gate, whose: Whose::Owner(owner), waiting: None, cpu: None }
    }
}

impl<F: Future> Fair<F> {
    /// Polls `inner` once, holding `slot`.
    fn run(&mut self, slot: Slot, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = self.cpu.as_ref().map(|_| Instant::now());
        let result = self.inner.as_mut().poll(cx);
        drop(slot);
        if let (Some(cpu), Some(started)) = (&self.cpu, started) {
            cpu.add(started.elapsed());
        }
        result
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let namespace = match &this.whose {
            Whose::Namespace(ns) => ns.clone(),
            Whose::Owner(owner) => owner.get(),
        };
        // A wait for another namespace's slot (the owner changed) is given up.
        if this.waiting.as_ref().is_some_and(|(ns, _)| *ns != namespace) {
            this.waiting = None;
        }
        if this.waiting.is_none() {
            match this.gate.try_enter(&namespace) {
                Some(slot) => return this.run(slot, cx),
                None => {
                    let enter = Box::pin(this.gate.clone().enter(namespace.clone()));
                    this.waiting = Some((namespace, enter));
                }
            }
        }
        let (_, waiting) = this.waiting.as_mut().expect("set above");
        match waiting.as_mut().poll(cx) {
            Poll::Ready(slot) => {
                this.waiting = None;
                this.run(slot, cx)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Arc<str> {
        name.into()
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_namespaces_in_turn_not_to_the_longest_queue() {
        let gate = FairGate::new(1, 1);
        let held = gate.clone().enter(ns("alpha")).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, name) in ["alpha", "alpha", "alpha", "beta"].into_iter().enumerate() {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = gate.enter(ns(name)).await;
                order.lock().unwrap().push(format!("{name}{i}"));
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["alpha0", "beta3", "alpha1", "alpha2"]);
        // A waiter that gives up takes no slot with it.
        let held = gate.clone().enter(ns("alpha")).await;
        drop(tokio::time::timeout(std::time::Duration::from_millis(10), gate.clone().enter(ns("beta"))).await);
        drop(held);
        let _again =
            tokio::time::timeout(std::time::Duration::from_secs(1), gate.clone().enter(ns("gamma"))).await.unwrap();
    }

    #[tokio::test]
    async fn one_namespace_never_holds_more_than_its_share_however_many_slots_are_free() {
        let gate = FairGate::new(3, 2);
        let a1 = gate.try_enter(&ns("alpha")).unwrap();
        let _a2 = gate.try_enter(&ns("alpha")).unwrap();
        assert!(gate.try_enter(&ns("alpha")).is_none(), "alpha holds its share");
        let waiting = tokio::spawn(gate.clone().enter(ns("alpha")));
        tokio::task::yield_now().await;
        let beta = gate.try_enter(&ns("beta")).expect("the slot alpha may not take is beta's");
        drop(beta);
        assert!(!waiting.is_finished(), "a free slot is still not alpha's third");
        drop(a1);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_connection_takes_the_turns_of_the_namespace_it_was_routed_to() {
        let gate = FairGate::new(2, 1);
        let owner = Owner::default();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connection = {
            let polls = polls.clone();
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                cx.waker().wake_by_ref();
                Poll::<()>::Pending
            })
        };
        let mut connection = Box::pin(Fair::owned(connection, gate.clone(), owner.clone()));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Before its first request it takes the turns of no namespace's share.
        let alpha = gate.try_enter(&ns("alpha")).unwrap();
        assert!(connection.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Routed to alpha, which holds its share: it waits, and beta still gets a slot.
        owner.set("alpha");
        assert!(connection.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 1, "not run past alpha's share");
        assert!(gate.try_enter(&ns("beta")).is_some());
        drop(alpha);
        assert!(connection.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 2, "run in alpha's turn");
    }

    #[tokio::test]
    async fn a_guests_turns_add_up_to_its_cpu_time_and_its_waits_do_not() {
        let gate = FairGate::new(1, 1);
        let cpu = Arc::new(CpuTime::default());
        let turns = Turns { gate: gate.clone(), namespace: ns("alpha"), cpu: cpu.clone() };
        let (tx, rx) = oneshot::channel::<()>();
        let guest = tokio::spawn(Fair::new(
            async move {
                std::thread::sleep(Duration::from_millis(30));
                let _ = rx.await;
                std::thread::sleep(Duration::from_millis(30));
            },
            turns,
        ));
        // Its first turn counts once it returns pending on its wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cpu.seconds() == 0.0 {
            assert!(Instant::now() < deadline, "the guest's first turn never counted");
            tokio::task::yield_now().await;
        }
        let before = cpu.seconds();
        assert!((0.03..1.0).contains(&before), "its first turn counted: {before}");
        // While it waits, nothing adds up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cpu.seconds(), before, "its wait counted");
        tx.send(()).unwrap();
        guest.await.unwrap();
        let after = cpu.seconds();
        assert!(after - before >= 0.03, "its second turn counted: {before} then {after}");
    }

    #[tokio::test]
    async fn a_guest_waiting_on_io_holds_no_slot() {
        let gate = FairGate::new(1, 1);
        let turns = Turns { gate: gate.clone(), namespace: ns("alpha"), cpu: Default::default() };
        let (tx, rx) = oneshot::channel::<()>();
        let slow = tokio::spawn(Fair::new(rx, turns));
        tokio::task::yield_now().await;
        // The slow guest is parked on its I/O: another namespace runs meanwhile.
        let beta = gate.try_enter(&ns("beta")).expect("a parked guest holds nothing");
        drop(beta);
        tx.send(()).unwrap();
        slow.await.unwrap().unwrap();
    }
}
