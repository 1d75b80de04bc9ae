//! Histories of operations on registers and their checkers: linearizability by a
//! Wing-Gong search (with Lowe's memo of linearized sets and states, per key, since registers
//! are independent), and the promises of a watch (revisions in order, each change once, none
//! missing).
//!
//! A register holds a value or nothing; every write writes a value no other write writes, so
//! a read's answer names the write it saw, and a compare-and-set's expected revision (taken
//! from a read) is the expected value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Read the register.
    Read,
    /// Write `value` whatever is there (create or replace).
    Write(u64),
    /// Write `new` only if the register holds `expect` (resourceVersion of the read that saw it).
    Cas { expect: u64, new: u64 },
    /// Remove what is there.
    Delete,
}

/// What the register answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// A read's value.
    Value(Option<u64>),
    /// A write's, a compare-and-set's or a delete's: whether it changed the register (false
    /// for a compare-and-set that found another value, or a delete that found nothing).
    Done(bool),
}

/// How an operation ended for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: it took effect exactly once, between its invoke and its return.
    Ok(Answer),
    /// Refused: it took no effect.
    Fail,
    /// No answer (timeout, lost connection, 5xx): it took effect once, or never.
    Unknown,
}

/// One operation of one client on one register.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub invoked: Instant,
    pub returned: Instant,
    pub outcome: Outcome,
    /// The revision a write that was answered got (for the watch checks).
    pub revision: Option<u64>,
}

/// The register's rule: what `call` does to `state` and what it answers.
fn step(state: Option<u64>, call: Call) -> (Option<u64>, Answer) {
    match call {
        Call::Read => (state, Answer::Value(state)),
        Call::Write(v) => (Some(v), Answer::Done(true)),
        Call::Cas { expect, new } if state == Some(expect) => (Some(new), Answer::Done(true)),
        Call::Cas { .. } => (state, Answer::Done(false)),
        Call::Delete => (None, Answer::Done(state.is_some())),
    }
}

/// Why a key's history is not linearizable: the answered operation the search could not
/// place, after placing as many as it could.
#[derive(Debug, Clone)]
#[allow(dead_code)] // printed with Debug
pub struct Violation {
    pub key: String,
    pub placed: usize,
    pub of: usize,
    pub stuck_at: String,
}

/// The result of checking a whole history.
#[derive(Debug, Default)]
pub struct Checked {
    /// Operations checked (answered or unknown; refusals took no effect and are left out).
    pub operations: usize,
    pub keys: usize,
    pub violations: Vec<Violation>,
    /// Keys whose search gave up at its bound (neither proven nor refuted).
    pub undecided: Vec<String>,
}

/// States the search may remember per key before it gives up on that key.
const SEARCH_BOUND: usize = 2_000_000;

/// Checks every key's operations for linearizability.
pub fn check(ops: &[Op]) -> Checked {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        // A read without an answer constrains nothing.
        if !(op.call == Call::Read && op.outcome == Outcome::Unknown) {
            by_key.entry(&op.key).or_default().push(op);
        }
    }
    let mut checked = Checked { keys: by_key.len(), ..Checked::default() };
    for (key, ops) in by_key {
        checked.operations += ops.len();
        match check_key(&ops) {
            Search::Linearizable => {}
            Search::Violated { placed, of, stuck_at } => {
                checked.violations.push(Violation { key: key.to_owned(), placed, of, stuck_at })
            }
            Search::GaveUp => checked.undecided.push(key.to_owned()),
        }
    }
    checked
}

enum Search {
    Linearizable,
    Violated { placed: usize, of: usize, stuck_at: String },
    GaveUp,
}

/// A set of operations by index.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize) -> Bits {
        let mut b = self.clone();
        b.0[i / 64] |= 1 << (i % 64);
        b
    }
}

/// Wing-Gong's search, depth first: an operation may come next when no operation left has
/// returned before it was invoked; an answered one must answer as the rule does from the
/// state so far; an unknown one may come next with any answer, or never. Done when every
/// answered operation is placed.
fn check_key(ops: &[&Op]) -> Search {
    let mut ops: Vec<&Op> = ops.to_vec();
    ops.sort_by_key(|op| op.invoked);
    let n = ops.len();
    let answered: Vec<usize> = (0..n).filter(|&i| matches!(ops[i].outcome, Outcome::Ok(_))).collect();
    let mut seen: HashSet<(Bits, Option<u64>)> = HashSet::new();
    let mut stack = vec![(Bits::new(n), None::<u64>, 0usize)];
    let (mut best, mut best_set) = (0usize, Bits::new(n));
    while let Some((placed, state, count)) = stack.pop() {
        if count == answered.len() {
            return Search::Linearizable;
        }
        if count > best {
            (best, best_set) = (count, placed.clone());
        }
        // The earliest return among the answered operations not yet placed bounds what may
        // come next.
        let horizon = answered.iter().filter(|&&i| !placed.has(i)).map(|&i| ops[i].returned).min();
        for (i, op) in ops.iter().enumerate() {
            if placed.has(i) {
                continue;
            }
            if horizon.is_some_and(|h| op.invoked > h) {
                break;
            }
            let (next, answer) = step(state, op.call);
            let counts = match op.outcome {
                Outcome::Ok(expected) if expected != answer => continue,
                Outcome::Ok(_) => 1,
                _ => 0,
            };
            let set = placed.with(i);
            if seen.insert((set.clone(), next)) {
                stack.push((set, next, count + counts));
            }
        }
        if seen.len() > SEARCH_BOUND {
            return Search::GaveUp;
        }
    }
    let stuck = answered.iter().find(|&&i| !best_set.has(i)).map(|&i| ops[i]);
    Search::Violated {
        placed: best,
        of: answered.len(),
        stuck_at: stuck.map_or_else(String::new, |op| {
            format!("client {} {:?} -> {:?} ({:?} long)", op.client, op.call, op.outcome, op.returned - op.invoked)
        }),
    }
}

/// One change a watch delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub key: String,
    pub revision: u64,
    /// The value after the change (`None` for a delete).
    pub value: Option<u64>,
}

/// What one watcher saw: the changes in the order delivered, over the revisions
/// `(from, to]` it covered (resumed from its last revision after each break, until it ended or
/// got a 410).
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub name: String,
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Seen>,
    pub resumptions: usize,
    /// It ended with a 410 (its revision compacted away).
    pub gone: bool,
}

/// Every way a watch broke its promises.
pub fn check_watch(watched: &Watched, ops: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut once = HashSet::new();
    let mut last = watched.from;
    for seen in &watched.changes {
        if seen.revision < last {
            problems.push(format!("{}: revision {} after {last}", watched.name, seen.revision));
        }
        last = last.max(seen.revision);
        if !once.insert((seen.key.clone(), seen.revision)) {
            let i = watched.changes.iter().position(|s| s == seen).unwrap();
            let j = watched.changes.iter().rposition(|s| s == seen).unwrap();
            problems.push(format!(
                "{}: {} at {} delivered twice (at {i} and {j}: {:?})",
                watched.name,
                seen.key,
                seen.revision,
                &watched.changes[i.saturating_sub(1)..(j + 2).min(watched.changes.len())]
            ));
        }
    }
    // Every answered write in the covered range arrives, with its value; and every value
    // delivered was written by someone.
    let delivered: HashMap<(&str, u64), Option<u64>> =
        watched.changes.iter().map(|s| ((s.key.as_str(), s.revision), s.value)).collect();
    let mut written: HashSet<(&str, u64)> = HashSet::new();
    for op in ops {
        let value = match op.call {
            Call::Write(v) | Call::Cas { new: v, .. } => v,
            _ => continue,
        };
        written.insert((&op.key, value));
        let (Outcome::Ok(Answer::Done(true)), Some(rev)) = (op.outcome, op.revision) else { continue };
        if rev > watched.from && rev <= watched.to {
            match delivered.get(&(op.key.as_str(), rev)) {
                Some(Some(v)) if *v == value => {}
                other => problems.push(format!(
                    "{}: the write of {value} to {} at {rev} arrived as {other:?}",
                    watched.name, op.key
                )),
            }
        }
    }
    for seen in &watched.changes {
        if let Some(v) = seen.value
            && !written.contains(&(seen.key.as_str(), v))
        {
            problems.push(format!("{}: {} = {v} at {} was never written", watched.name, seen.key, seen.revision));
        }
    }
    problems
}

/// Two watchers of the same objects agree on the changes both covered.
pub fn check_agree(a: &Watched, b: &Watched) -> Vec<String> {
    let (lo, hi) = (a.from.max(b.from), a.to.min(b.to));
    let within = |w: &Watched| -> Vec<Seen> {
        w.changes.iter().filter(|s| s.revision > lo && s.revision <= hi).cloned().collect()
    };
    let (x, y) = (within(a), within(b));
    if x == y {
        Vec::new()
    } else {
        let at = x.iter().zip(&y).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
        vec![format!(
            "{} and {} differ over ({lo}, {hi}] at change {at}: {:?} vs {:?}",
            a.name,
            b.name,
            x.get(at),
            y.get(at)
        )]
    }
}

/// A share as a percentage, for reports.
pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 { 100.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// Milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history built from `(client, call, outcome, invoke ms, return ms)`.
    fn history(ops: &[(usize, Call, Outcome, u64, u64)]) -> Vec<Op> {
        let t0 = Instant::now();
        ops.iter()
            .map(|&(client, call, outcome, a, b)| Op {
                client,
                key: "k".into(),
                call,
                invoked: t0 + Duration::from_millis(a),
                returned: t0 + Duration::from_millis(b),
                outcome,
                revision: None,
            })
            .collect()
    }

    fn read(v: Option<u64>) -> Outcome {
        Outcome::Ok(Answer::Value(v))
    }
    const DONE: Outcome = Outcome::Ok(Answer::Done(true));

    #[test]
    fn sequential_reads_of_the_last_write_are_linearizable() {
        let h = history(&[
            (0, Call::Write(1), DONE, 0, 1),
            (1, Call::Read, read(Some(1)), 2, 3),
            (0, Call::Cas { expect: 1, new: 2 }, DONE, 4, 5),
            (1, Call::Cas { expect: 1, new: 3 }, Outcome::Ok(Answer::Done(false)), 6, 7),
            (1, Call::Read, read(Some(2)), 8, 9),
            (0, Call::Delete, DONE, 10, 11),
            (1, Call::Read, read(None), 12, 13),
        ]);
        let c = check(&h);
        assert!(c.violations.is_empty() && c.undecided.is_empty(), "{c:?}");
        assert_eq!(c.operations, 7);
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_a_violation() {
        let h = history(&[
            (0, Call::Write(1), DONE, 0, 1),
            (0, Call::Write(2), DONE, 2, 3),
            (1, Call::Read, read(Some(1)), 4, 5),
        ]);
        let c = check(&h);
        assert_eq!(c.violations.len(), 1, "{c:?}");
        assert!(c.violations[0].stuck_at.contains("Read"), "{:?}", c.violations);
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        // The read overlaps the write of 2, so it may see 1 or 2; a later read sees 2.
        for seen in [1, 2] {
            let h = history(&[
                (0, Call::Write(1), DONE, 0, 1),
                (0, Call::Write(2), DONE, 2, 10),
                (1, Call::Read, read(Some(seen)), 3, 4),
                (1, Call::Read, read(Some(2)), 11, 12),
            ]);
            assert!(check(&h).violations.is_empty(), "read of {seen}");
        }
        // But two reads in a row may not go back.
        let h = history(&[
            (0, Call::Write(1), DONE, 0, 1),
            (0, Call::Write(2), DONE, 2, 10),
            (1, Call::Read, read(Some(2)), 3, 4),
            (1, Call::Read, read(Some(1)), 5, 6),
        ]);
        assert_eq!(check(&h).violations.len(), 1);
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not_but_only_after_it_began() {
        let unknown = Outcome::Unknown;
        // Seen later: it happened.
        let h = history(&[(0, Call::Write(1), unknown, 0, 1), (1, Call::Read, read(Some(1)), 50, 51)]);
        assert!(check(&h).violations.is_empty());
        // Never seen: it did not.
        let h = history(&[(0, Call::Write(1), unknown, 0, 1), (1, Call::Read, read(None), 50, 51)]);
        assert!(check(&h).violations.is_empty());
        // Seen before it was sent: impossible.
        let h = history(&[(1, Call::Read, read(Some(1)), 0, 1), (0, Call::Write(1), unknown, 5, 6)]);
        assert_eq!(check(&h).violations.len(), 1);
        // A refused write took no effect, so seeing it is a violation.
        let h = history(&[(0, Call::Write(1), Outcome::Fail, 0, 1), (1, Call::Read, read(Some(1)), 5, 6)]);
        assert_eq!(check(&h).violations.len(), 1);
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let h = history(&[
            (0, Call::Write(1), DONE, 0, 1),
            (0, Call::Write(2), DONE, 2, 3),
            (1, Call::Read, read(Some(1)), 10, 11),
        ]);
        assert_eq!(check(&h).violations.len(), 1);
        // Two compare-and-sets from the same value cannot both succeed.
        let h = history(&[
            (0, Call::Write(1), DONE, 0, 1),
            (0, Call::Cas { expect: 1, new: 2 }, DONE, 2, 5),
            (1, Call::Cas { expect: 1, new: 3 }, DONE, 2, 5),
        ]);
        assert_eq!(check(&h).violations.len(), 1);
    }

    fn seen(key: &str, revision: u64, value: Option<u64>) -> Seen {
        Seen { key: key.into(), revision, value }
    }

    #[test]
    fn a_watch_that_skips_repeats_or_goes_back_is_caught() {
        let mut ops = history(&[(0, Call::Write(1), DONE, 0, 1), (0, Call::Write(2), DONE, 2, 3)]);
        ops[0].revision = Some(10);
        ops[1].revision = Some(11);
        let good = Watched {
            name: "w".into(),
            from: 5,
            to: 20,
            changes: vec![seen("k", 10, Some(1)), seen("k", 11, Some(2))],
            ..Watched::default()
        };
        assert!(check_watch(&good, &ops).is_empty());
        let skipped = Watched { changes: vec![seen("k", 11, Some(2))], ..good.clone() };
        assert_eq!(check_watch(&skipped, &ops).len(), 1, "a gap");
        let twice = Watched {
            changes: vec![seen("k", 10, Some(1)), seen("k", 10, Some(1)), seen("k", 11, Some(2))],
            ..good.clone()
        };
        assert_eq!(check_watch(&twice, &ops).len(), 1, "a repeat");
        let back = Watched { changes: vec![seen("k", 11, Some(2)), seen("k", 10, Some(1))], ..good.clone() };
        assert_eq!(check_watch(&back, &ops).len(), 1, "out of order");
        let invented = Watched {
            changes: vec![seen("k", 10, Some(1)), seen("k", 11, Some(2)), seen("k", 12, Some(9))],
            ..good.clone()
        };
        assert_eq!(check_watch(&invented, &ops).len(), 1, "never written");
        // Outside the covered range nothing is owed.
        let late = Watched { from: 10, changes: vec![seen("k", 11, Some(2))], ..good.clone() };
        assert!(check_watch(&late, &ops).is_empty());
        assert!(check_agree(&good, &late).is_empty());
        assert_eq!(check_agree(&good, &skipped).len(), 1);
    }
}
