//! A fair share of the node between tenants: guest requests run in a bounded number of slots,
//! and when every slot is taken the next free one goes to the namespaces with waiting requests
//! in turn (round robin), not to whoever queued first. One tenant's flood then waits behind
//! itself: a neighbour's request gets the next slot, however many the flood has queued.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    free: usize,
    /// Waiters per namespace, in arrival order.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Namespaces with waiters, in the order they get the next slot.
    turn: VecDeque<String>,
}

/// The node's guest slots.
pub struct FairGate {
    state: Mutex<State>,
}

/// One slot, given back (to the next namespace in turn) when dropped.
pub struct Slot {
    gate: Arc<FairGate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl FairGate {
    /// A gate of `slots` slots.
    pub fn new(slots: usize) -> Arc<FairGate> {
        Arc::new(FairGate { state: Mutex::new(State { free: slots.max(1), ..State::default() }) })
    }

    /// Waits for a slot for a request of namespace `ns`.
    pub async fn enter(self: &Arc<Self>, ns: &str) -> Slot {
        let receiver = {
            let mut state = self.state.lock().expect("fair gate lock");
            if state.free > 0 && state.turn.is_empty() {
                state.free -= 1;
                return Slot { gate: self.clone() };
            }
            let (sender, receiver) = oneshot::channel();
            let queue = state.waiting.entry(ns.to_owned()).or_default();
            queue.push_back(sender);
            if queue.len() == 1 {
                state.turn.push_back(ns.to_owned());
            }
            receiver
        };
        // Given back if this request goes away after it was handed the slot but before it ran.
        struct Waiting {
            receiver: Option<oneshot::Receiver<()>>,
            gate: Arc<FairGate>,
        }
        impl Drop for Waiting {
            fn drop(&mut self) {
                if let Some(mut receiver) = self.receiver.take()
                    && receiver.try_recv().is_ok()
                {
                    self.gate.release();
                }
            }
        }
        let mut waiting = Waiting { receiver: Some(receiver), gate: self.clone() };
        let receiver = waiting.receiver.as_mut().expect("set above");
        // The sender is only ever dropped after a send (or with the gate).
        let _ = receiver.await;
        waiting.receiver = None;
        Slot { gate: self.clone() }
    }

    /// Hands a freed slot to the next namespace in turn, or keeps it.
    fn release(&self) {
        let mut state = self.state.lock().expect("fair gate lock");
        while let Some(ns) = state.turn.pop_front() {
            let Some(queue) = state.waiting.get_mut(&ns) else { continue };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&ns);
            } else {
                state.turn.push_back(ns);
            }
            if let Some(sender) = next
                && sender.send(()).is_ok()
            {
                return;
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_namespaces_in_turn_not_to_the_longest_queue() {
        let gate = FairGate::new(1);
        let held = gate.enter("alpha").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, ns) in ["alpha", "alpha", "alpha", "beta"].into_iter().enumerate() {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = gate.enter(ns).await;
                order.lock().unwrap().push(format!("{ns}{i}"));
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["alpha0", "beta3", "alpha1", "alpha2"]);
        // A waiter that gives up takes no slot with it.
        let held = gate.enter("alpha").await;
        drop(tokio::time::timeout(std::time::Duration::from_millis(10), gate.enter("beta")).await);
        drop(held);
        let _again = tokio::time::timeout(std::time::Duration::from_secs(1), gate.enter("gamma")).await.unwrap();
    }
}
