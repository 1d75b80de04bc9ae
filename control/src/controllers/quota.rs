//! Namespace quotas: how many of the instances a workload wants its namespace's quota admits,
//! counting what the cache shows (every live instance of the namespace) and the creates still in
//! flight (decided, not yet applied: rounds overlap, so two workloads of one namespace must not
//! both spend the same room).
//!
//! An instance that requests no memory (or CPU) in a namespace whose quota bounds memory (or
//! CPU) is refused rather than counted as zero: a namespace's `defaultRequests` give Workloads
//! that set none their requests when they are written, so leaving requests out cannot dodge a
//! quota.

use std::collections::HashMap;

use shoal_api::quantity::{Cpu, Memory};
use shoal_api::resources::namespace::Quota;
use shoal_api::resources::workload::Resources;

use super::cache::Allocated;

/// How many of the wanted instances may be created, and, when fewer than wanted, why not.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    /// How many may be created.
    pub count: usize,
    /// Which limit stopped the rest, e.g. `quota exceeded: instances 2/2`.
    pub refused: Option<String>,
}

/// How many of `wanted` instances, each requesting `requests`, fit in `quota` when `used` is
/// spent already.
pub fn admit(quota: &Quota, used: Allocated, requests: &Resources, wanted: usize) -> Admitted {
    if wanted == 0 {
        return Admitted { count: 0, refused: None };
    }
    let missing = |what: &str, field: &str| Admitted {
        count: 0,
        refused: Some(format!(
            "quota: namespace bounds {what}, so each instance must request it (set spec.resources.{field} or the namespace's spec.defaultRequests.{field})"
        )),
    };
    if quota.memory.is_some() && requests.memory.is_none() {
        return missing("memory", "memory");
    }
    // A request of 0 would be free under the quota: it counts as none.
    if quota.cpu.is_some() && requests.cpu.is_none_or(|c| c.0 == 0) {
        return missing("cpu", "cpu");
    }
    let memory = requests.memory.map_or(0, |m| m.0);
    let cpu = requests.cpu.map_or(0, |c| c.0);
    // Per limit: how many more fit; the one that stops first is named with the figures it has
    // once those are made.
    let instances_left = quota.instances.map(|max| u64::from(max).saturating_sub(u64::from(used.instances)));
    let memory_left = quota.memory.filter(|_| memory > 0).map(|max| max.0.saturating_sub(used.memory) / memory);
    let cpu_left = quota.cpu.filter(|_| cpu > 0).map(|max| max.0.saturating_sub(used.cpu) / cpu);
    let tightest = [(0, instances_left), (1, memory_left), (2, cpu_left)]
        .into_iter()
        .filter_map(|(which, left)| left.map(|l| (which, l)))
        .min_by_key(|(_, left)| *left);
    let Some((which, left)) = tightest.filter(|(_, left)| *left < wanted as u64) else {
        return Admitted { count: wanted, refused: None };
    };
    let detail = match which {
        0 => format!("instances {}/{}", u64::from(used.instances) + left, quota.instances.unwrap_or_default()),
        1 => format!(
            "memory {}/{}, each instance requests {}",
            Memory(used.memory.saturating_add(left.saturating_mul(memory))),
            quota.memory.unwrap_or_default(),
            Memory(memory)
        ),
        _ => format!(
            "cpu {}/{}, each instance requests {}",
            Cpu(used.cpu.saturating_add(left.saturating_mul(cpu))),
            quota.cpu.unwrap_or_default(),
            Cpu(cpu)
        ),
    };
    Admitted { count: left as usize, refused: Some(format!("quota exceeded: {detail}")) }
}

/// Creates in flight, charged to their namespace until the cache shows them.
#[derive(Default)]
pub struct Charges {
    by_key: HashMap<String, (String, Allocated)>,
    by_namespace: HashMap<String, Allocated>,
}

impl Charges {
    /// What the creates in flight in `ns` request together.
    pub fn of(&self, ns: &str) -> Allocated {
        self.by_namespace.get(ns).copied().unwrap_or_default()
    }

    /// Charges the create of the instance at `key` to `ns`.
    pub fn charge(&mut self, key: String, ns: &str, memory: u64, cpu: u64) {
        let charge = Allocated::one(memory, cpu);
        let total = self.by_namespace.entry(ns.to_owned()).or_default();
        *total = total.plus(charge);
        if let Some((old_ns, old)) = self.by_key.insert(key, (ns.to_owned(), charge)) {
            self.take_back(&old_ns, old);
        }
    }

    /// The instance at `key` is in the cache now (or its create failed): the cache counts it,
    /// or nothing does.
    pub fn release(&mut self, key: &str) {
        if let Some((ns, charge)) = self.by_key.remove(key) {
            self.take_back(&ns, charge);
        }
    }

    /// Forgets every charge (a new term).
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_namespace.clear();
    }

    fn take_back(&mut self, ns: &str, charge: Allocated) {
        if let Some(total) = self.by_namespace.get_mut(ns) {
            *total = total.minus(charge);
            if total.instances == 0 {
                self.by_namespace.remove(ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(n: u64) -> Memory {
        Memory(n << 20)
    }

    fn used(instances: u32, memory_mib: u64) -> Allocated {
        Allocated { instances, memory: memory_mib << 20, cpu: 0 }
    }

    #[test]
    fn the_tightest_limit_decides_and_says_its_figures() {
        let quota = Quota { instances: Some(2), memory: Some(mib(64)), ..Default::default() };
        let each = Resources { memory: Some(mib(32)), cpu: None };
        let first = admit(&quota, used(0, 0), &each, 5);
        assert_eq!(first.count, 2);
        assert_eq!(
            first.refused.as_deref(),
            Some("quota exceeded: instances 2/2"),
            "the figures once the two are made"
        );
        let full = admit(&quota, used(2, 64), &each, 3);
        assert_eq!(full.count, 0);
        assert_eq!(full.refused.as_deref(), Some("quota exceeded: instances 2/2"));
        let roomy = Quota { instances: Some(10), ..quota.clone() };
        let by_memory = admit(&roomy, used(1, 48), &each, 3);
        assert_eq!(by_memory.count, 0, "16Mi left, 32Mi each");
        assert_eq!(by_memory.refused.as_deref(), Some("quota exceeded: memory 48Mi/64Mi, each instance requests 32Mi"));
        assert_eq!(admit(&roomy, used(0, 0), &each, 2), Admitted { count: 2, refused: None });
    }

    #[test]
    fn leaving_requests_out_under_a_quota_is_refused_not_free() {
        let quota = Quota { memory: Some(mib(64)), ..Default::default() };
        let refused = admit(&quota, used(0, 0), &Resources::default(), 1);
        assert_eq!(refused.count, 0);
        assert!(refused.refused.unwrap().contains("spec.resources.memory"));
        let cpu_quota = Quota { cpu: Some(Cpu(1000)), ..Default::default() };
        let zero = Resources { memory: None, cpu: Some(Cpu(0)) };
        assert_eq!(admit(&cpu_quota, used(0, 0), &zero, 1).count, 0, "cpu: 0m is not free under a cpu quota");
        let only_count = Quota { instances: Some(3), ..Default::default() };
        assert_eq!(admit(&only_count, used(0, 0), &Resources::default(), 5).count, 3);
    }

    #[test]
    fn creates_in_flight_count_until_released() {
        let mut charges = Charges::default();
        charges.charge("instances/a/x".into(), "a", 10, 5);
        charges.charge("instances/a/y".into(), "a", 10, 5);
        assert_eq!(charges.of("a"), Allocated { memory: 20, cpu: 10, instances: 2 });
        assert_eq!(charges.of("b"), Allocated::default());
        charges.release("instances/a/x");
        charges.release("instances/a/x");
        assert_eq!(charges.of("a"), Allocated { memory: 10, cpu: 5, instances: 1 });
        charges.release("instances/a/y");
        assert_eq!(charges.of("a"), Allocated::default());
    }
}
