//! Room on the data directory's file system, and the reserve below which this member refuses
//! writes. redb cannot be trusted past a failed commit (it asks to be reopened), and raft
//! treats a failed append as fatal, so the disk must never fill under them: writes are refused
//! while any voting member has less than its reserve free, the way etcd raises its NOSPACE alarm
//! for the whole cluster when one member's backend is full. What is in flight when the line is
//! crossed still has the reserve to land in; reads, watches and heartbeats go on; and writes are
//! taken again as soon as space is freed, without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::types::MemberId;

/// How long a free-space reading is used before the file system is asked again.
const READING_TTL: Duration = Duration::from_millis(200);

/// How long a member's report of a low disk counts without being repeated (members repeat it
/// every [`REPORT_EVERY`] while it lasts).
pub const REPORT_TTL: Duration = Duration::from_secs(3);

/// How often a member whose disk is low tells the leader.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// One member's disk, as it tells the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskReport {
    /// The member.
    pub id: MemberId,
    /// Why its disk is too full for writes, or `None` when it has room again.
    pub low: Option<String>,
}

/// The reserve of one data directory.
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    reading: Mutex<Option<(Instant, u64)>>,
    /// Members whose disks are low, as they reported it (on the leader).
    low_members: Mutex<HashMap<MemberId, (Instant, String)>>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the file system of `dir`.
    pub fn new(dir: PathBuf, reserve: u64) -> Self {
        DiskGuard { dir, reserve, reading: Mutex::new(None), low_members: Mutex::default() }
    }

    /// Bytes free (for an unprivileged writer) on the data directory's file system, if it
    /// can be read.
    fn free(&self, now: Instant) -> Option<u64> {
        let mut reading = self.reading.lock().expect("disk reading lock");
        if let Some((at, free)) = *reading
            && now.duration_since(at) < READING_TTL
        {
            return Some(free);
        }
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        *reading = Some((now, free));
        Some(free)
    }

    /// Why this member's disk is too full for writes, if it is.
    pub fn own_refusal(&self, now: Instant) -> Option<String> {
        self.own_refusal_of(0, now)
    }

    /// Why this member's disk has no room for `bytes` more above its reserve, if it has not.
    fn own_refusal_of(&self, bytes: u64, now: Instant) -> Option<String> {
        let free = self.free(now)?;
        (free < self.reserve.saturating_add(bytes)).then(|| {
            let wanted = if bytes > 0 { format!(" (for {} more)", mib(bytes)) } else { String::new() };
            format!(
                "the data directory {} has {} free, less than its reserve of {}{wanted} (--disk-reserve): \
                 writes are refused until space is freed",
                self.dir.display(),
                mib(free),
                mib(self.reserve)
            )
        })
    }

    /// Records what member `report.id` said of its disk.
    pub fn record(&self, report: DiskReport, now: Instant) {
        let mut low = self.low_members.lock().expect("disk reports lock");
        match report.low {
            Some(why) => {
                low.insert(report.id, (now, why));
            }
            None => {
                low.remove(&report.id);
            }
        }
    }

    /// Why writes are refused now: this member's disk, or (on the leader) one of the `voters`
    /// that reported a low disk within [`REPORT_TTL`].
    /// `bytes` is what the write itself will take here beyond raft's log (a module's bytes).
    pub fn refusal(&self, voters: impl FnOnce() -> Vec<MemberId>, bytes: u64, now: Instant) -> Option<String> {
        if let Some(why) = self.own_refusal_of(bytes, now) {
            return Some(why);
        }
        let mut low = self.low_members.lock().expect("disk reports lock");
        low.retain(|_, (at, _)| now.duration_since(*at) < REPORT_TTL);
        if low.is_empty() {
            // The common case: no member low, and no need to ask raft who votes.
            return None;
        }
        voters().iter().find_map(|id| low.get(id).map(|(_, why)| format!("member {id}: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_while_a_voter_reports_a_low_disk() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let roomy = DiskGuard::new(dir.path().to_owned(), 0);
        assert_eq!(roomy.refusal(|| vec![1, 2, 3], 0, now), None);
        let full = DiskGuard::new(dir.path().to_owned(), u64::MAX);
        let why = full.refusal(|| vec![1], 0, now).expect("no file system has u64::MAX bytes free");
        assert!(why.contains("--disk-reserve") && why.contains(&dir.path().display().to_string()), "{why}");
        let why = roomy.refusal(|| vec![1], u64::MAX, now).expect("no room for u64::MAX bytes more");
        assert!(why.contains("more"), "{why}");

        roomy.record(DiskReport { id: 2, low: Some("the data directory is full".into()) }, now);
        let why = roomy.refusal(|| vec![1, 2, 3], 0, now).expect("member 2 is low");
        assert!(why.starts_with("member 2: "), "{why}");
        assert_eq!(roomy.refusal(|| vec![1, 3], 0, now), None, "a member that is not a voter does not count");
        assert_eq!(roomy.refusal(|| vec![1, 2, 3], 0, now + REPORT_TTL), None, "a report not repeated expires");
        roomy.record(DiskReport { id: 2, low: Some("full".into()) }, now);
        roomy.record(DiskReport { id: 2, low: None }, now);
        assert_eq!(roomy.refusal(|| vec![1, 2, 3], 0, now), None, "member 2 has room again");
    }
}
