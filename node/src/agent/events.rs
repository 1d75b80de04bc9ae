//! The Events a node records about its instances, folded and paced: a guest that fails a
//! thousand times a second (or is refused a thousand outbound requests) costs the control
//! plane one Event write per instance and reason every [`EventPacing::per_key`], with the
//! repeats in its count, and the node at most [`EventPacing::per_second`] writes a second in
//! all. What waits is bounded too ([`MAX_WAITING`]); past it new kinds of events are dropped
//! (and counted in the log), never the node's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::resources::event::{EventType, ObjectReference, new_event};
use shoal_api::resources::instance::Instance;
use shoal_api::{AnyObject, Client, Kind, Reason};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How many distinct (instance, reason) events may wait at once.
pub const MAX_WAITING: usize = 1000;

/// How many of those may be one namespace's: one tenant's failing instances cannot crowd out
/// the others' events.
pub const MAX_WAITING_PER_NAMESPACE: usize = 100;

/// How often Events may be written.
#[derive(Debug, Clone, Copy)]
pub struct EventPacing {
    /// One write per instance and reason at most this often.
    pub per_key: Duration,
    /// Writes a second at most, for the whole node.
    pub per_second: u32,
}

impl Default for EventPacing {
    fn default() -> Self {
        EventPacing { per_key: Duration::from_secs(10), per_second: 20 }
    }
}

/// One event waiting to be written.
#[derive(Debug, Clone)]
struct Waiting {
    involved: ObjectReference,
    reason: &'static str,
    message: String,
    type_: EventType,
    /// Occurrences not yet written.
    count: u32,
}

/// The namespace of a key (`<namespace>/<instance>`).
fn namespace_of<'k>(key: &'k (String, &'static str)) -> &'k str {
    key.0.split_once('/').map_or("", |(ns, _)| ns)
}

#[derive(Default)]
struct Book {
    waiting: HashMap<(String, &'static str), Waiting>,
    /// How many of `waiting` each namespace has.
    per_namespace: HashMap<String, usize>,
    /// When each key was last written.
    written: HashMap<(String, &'static str), Instant>,
    dropped: u64,
}

impl Book {
    /// Notes one occurrence; false if it had to be dropped.
    fn note(&mut self, key: (String, &'static str), event: Waiting) -> bool {
        if let Some(waiting) = self.waiting.get_mut(&key) {
            waiting.count = waiting.count.saturating_add(1);
            waiting.message = event.message;
            return true;
        }
        let namespace = namespace_of(&key).to_owned();
        let theirs = self.per_namespace.get(&namespace).copied().unwrap_or(0);
        if self.waiting.len() >= MAX_WAITING || theirs >= MAX_WAITING_PER_NAMESPACE {
            self.dropped += 1;
            return false;
        }
        *self.per_namespace.entry(namespace).or_default() += 1;
        self.waiting.insert(key, event);
        true
    }

    /// Takes what may be written at `now` (at most `budget`), and when the next one may be.
    fn due(&mut self, now: Instant, pacing: EventPacing, budget: usize) -> (Vec<Waiting>, Option<Instant>) {
        let mut ready: Vec<(String, &'static str)> = Vec::new();
        let mut next: Option<Instant> = None;
        for key in self.waiting.keys() {
            let at = self.written.get(key).map_or(now, |last| *last + pacing.per_key);
            if at <= now {
                ready.push(key.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if ready.len() > budget {
            next = Some(now + Duration::from_secs(1));
        }
        // The budget goes to the namespaces in turn: first one event of each, then a second...
        ready.sort();
        let mut rank: HashMap<String, usize> = HashMap::new();
        let mut ranked: Vec<(usize, (String, &'static str))> = ready
            .into_iter()
            .map(|key| {
                let n = rank.entry(namespace_of(&key).to_owned()).or_default();
                *n += 1;
                (*n, key)
            })
            .collect();
        ranked.sort();
        ranked.truncate(budget);
        let taken = ranked
            .into_iter()
            .filter_map(|(_, key)| {
                let waiting = self.waiting.remove(&key)?;
                if let Some(n) = self.per_namespace.get_mut(namespace_of(&key)) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_namespace.remove(namespace_of(&key));
                    }
                }
                self.written.insert(key, now);
                Some(waiting)
            })
            .collect();
        // Keys quiet for a whole interval need no memory of when they were written.
        self.written.retain(|_, last| now.saturating_duration_since(*last) < pacing.per_key);
        (taken, next)
    }
}

/// Records Events for a node's instances.
pub struct Events {
    book: Mutex<Book>,
    wake: Notify,
    pacing: EventPacing,
}

impl Events {
    /// A recorder paced by `pacing`.
    pub fn new(pacing: EventPacing) -> Arc<Events> {
        Arc::new(Events { book: Mutex::default(), wake: Notify::new(), pacing })
    }

    /// Notes that `reason` happened to `instance`; it is written when its pace allows, folded
    /// with the repeats that came meanwhile.
    pub fn record(&self, instance: &Instance, reason: &'static str, message: String, type_: EventType) {
        let involved = ObjectReference {
            kind: Kind::Instance,
            namespace: instance.metadata.namespace.clone(),
            name: instance.metadata.name.clone(),
        };
        let namespace = involved.namespace.as_ref().map_or("", |n| n.as_str());
        let key = (format!("{namespace}/{}", involved.name), reason);
        let noted = self
            .book
            .lock()
            .expect("event book lock")
            .note(key, Waiting { involved, reason, message, type_, count: 1 });
        if noted {
            self.wake.notify_one();
        }
    }

    /// Writes what is due with `client` until `shutdown`.
    pub async fn run(self: Arc<Self>, client: Client, shutdown: CancellationToken) {
        let mut dropped_told = 0;
        loop {
            let (due, next, dropped) = {
                let mut book = self.book.lock().expect("event book lock");
                let (due, next) = book.due(Instant::now(), self.pacing, self.pacing.per_second as usize);
                (due, next, book.dropped)
            };
            if dropped > dropped_told {
                tracing::warn!(
                    "events: {} dropped, more than {MAX_WAITING} kinds were waiting",
                    dropped - dropped_told
                );
                dropped_told = dropped;
            }
            let started = Instant::now();
            for event in due {
                write(&client, event).await;
            }
            // At most `per_second` writes a second.
            let rest = Duration::from_secs(1).saturating_sub(started.elapsed());
            let wait = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.max(Instant::now() + rest).into()).await,
                    None => self.wake.notified().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wait => {}
            }
        }
    }
}

/// Writes one folded event: a new Event, or the stored one with its count raised.
async fn write(client: &Client, waiting: Waiting) {
    let mut event = new_event(waiting.involved, waiting.reason, waiting.message, waiting.type_, super::report::now());
    event.spec.count = waiting.count;
    let namespace = event.metadata.namespace.as_ref().map(|n| n.to_string());
    let name = event.metadata.name.to_string();
    match client.create(&AnyObject::Event(event.clone())).await {
        Ok(_) => {}
        Err(e) if e.reason() == Some(Reason::Conflict) => {
            let Ok(AnyObject::Event(mut stored)) = client.get(Kind::Event, namespace.as_deref(), &name).await else {
                return;
            };
            stored.spec.count = stored.spec.count.saturating_add(waiting.count);
            stored.spec.message = event.spec.message;
            stored.spec.last_timestamp = event.spec.last_timestamp;
            let _ = client.put(&AnyObject::Event(stored)).await;
        }
        // An event lost to an outage is only a lost hint.
        Err(e) => tracing::info!("recording event {} for {name}: {e}", waiting.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(message: &str) -> Waiting {
        Waiting {
            involved: ObjectReference {
                kind: Kind::Instance,
                namespace: None,
                name: shoal_api::Name::new("i").unwrap(),
            },
            reason: "Failed",
            message: message.into(),
            type_: EventType::Warning,
            count: 1,
        }
    }

    #[test]
    fn repeats_fold_into_one_write_per_key_and_interval_and_what_waits_is_bounded() {
        let pacing = EventPacing { per_key: Duration::from_secs(10), per_second: 5 };
        let mut book = Book::default();
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(book.note(("a".into(), "Failed"), waiting(&format!("try {i}"))));
        }
        let (due, next) = book.due(t0, pacing, 5);
        assert_eq!(due.len(), 1, "a hundred repeats, one write");
        assert_eq!((due[0].count, due[0].message.as_str()), (100, "try 99"));
        assert_eq!(next, None);
        book.note(("a".into(), "Failed"), waiting("again"));
        let (due, next) = book.due(t0 + Duration::from_secs(1), pacing, 5);
        assert!(due.is_empty(), "within the key's interval");
        assert_eq!(next, Some(t0 + Duration::from_secs(10)));
        let (due, _) = book.due(t0 + Duration::from_secs(10), pacing, 5);
        assert_eq!(due.len(), 1);

        // Many keys: at most the budget a round, the rest in the next.
        for i in 0..12 {
            book.note((format!("k{i}"), "Failed"), waiting("x"));
        }
        let (due, next) = book.due(t0 + Duration::from_secs(20), pacing, 5);
        assert_eq!(due.len(), 5);
        assert_eq!(next, Some(t0 + Duration::from_secs(21)));

        let mut full = Book::default();
        for i in 0..MAX_WAITING + 10 {
            full.note((format!("ns{}/k{i}", i % 20), "Failed"), waiting("x"));
        }
        assert_eq!((full.waiting.len(), full.dropped), (MAX_WAITING, 10));
    }

    #[test]
    fn one_namespace_cannot_crowd_out_the_others_events() {
        let pacing = EventPacing { per_key: Duration::from_secs(10), per_second: 4 };
        let mut book = Book::default();
        for i in 0..MAX_WAITING_PER_NAMESPACE + 50 {
            book.note((format!("alpha/i{i}"), "Failed"), waiting("x"));
        }
        assert_eq!(book.dropped, 50, "alpha holds its share of the waiting room");
        assert!(book.note(("beta/i0".into(), "Failed"), waiting("y")), "beta still gets in");
        assert!(book.note(("gamma/i0".into(), "Failed"), waiting("z")));
        let (due, _) = book.due(Instant::now(), pacing, 4);
        let namespaces: Vec<_> = due.iter().map(|w| w.involved.name.to_string()).collect();
        assert_eq!(due.len(), 4);
        assert!(
            due.iter().any(|w| w.message == "y") && due.iter().any(|w| w.message == "z"),
            "the budget goes to every namespace in turn: {namespaces:?}"
        );
    }
}
