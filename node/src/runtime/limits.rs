//! What one instance may use, and how it is enforced.
//!
//! - **Memory** is a hard limit: [`MemoryGuard`] refuses any growth of a linear memory past it,
//!   which traps the guest with [`MemoryLimitExceeded`]. The requests an HTTP instance serves at
//!   once share one limit (a [`MemoryPool`]): each request's fresh store charges the pool for
//!   what its memories grow by and gives it back when the request ends, so `resources.memory`
//!   bounds the instance, not each of its requests.
//! - **CPU** is a share of one core, enforced like a CFS quota: the engine's epoch ticks every
//!   [`EPOCH_TICK`](super::EPOCH_TICK); at each tick the instance's running time in the current
//!   100 ms period is added up, and once it reaches the quota (e.g. 25 ms for `250m`) the
//!   instance is suspended until the period ends. Suspension is an async yield, so the thread
//!   serves other instances meanwhile.
//! - **Deadline**: past it, the instance is stopped with [`DeadlineExceeded`].

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

/// The accounting period of CPU shares.
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

/// Limits of one instance (or one request of an HTTP workload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory.
    pub memory: Option<u64>,
    /// Share of a core in millicores (1000 = a whole core).
    pub cpu_millis: Option<u64>,
    /// How long it may run in all.
    pub timeout: Option<Duration>,
}

/// The guest tried to grow its memory past its limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("memory limit exceeded: growing to {desired} bytes, limit {limit}")]
pub struct MemoryLimitExceeded {
    /// What the guest asked for.
    pub desired: usize,
    /// The limit.
    pub limit: usize,
}

/// The guest ran past its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("deadline exceeded after {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// The memory of one instance, shared by the stores of its requests in flight.
#[derive(Debug)]
pub struct MemoryPool {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl MemoryPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: u64) -> std::sync::Arc<MemoryPool> {
        std::sync::Arc::new(MemoryPool { limit: limit as usize, used: Default::default() })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `bytes`, or says how much was in use if they do not fit.
    fn charge(&self, bytes: usize) -> Result<(), usize> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The guest's requests in flight together would pass its instance's memory limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "memory limit exceeded: growing by {growing} bytes while the instance's requests in flight use {used}, limit {limit}"
)]
pub struct SharedMemoryExceeded {
    /// What this store asked to grow by.
    pub growing: usize,
    /// What the instance's stores held at that moment.
    pub used: usize,
    /// The instance's limit.
    pub limit: usize,
}

/// The most elements of one table.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// What one table element is charged (a reference, with room for the engine's bookkeeping).
const TABLE_ELEMENT_BYTES: usize = 16;

/// The store's resource limiter.
pub struct MemoryGuard {
    limit: usize,
    /// The instance's pool, and what this store has taken from it.
    pool: Option<(std::sync::Arc<MemoryPool>, usize)>,
}

impl MemoryGuard {
    /// A guard for `limits` (no memory limit: only the engine's own maximum applies), charging
    /// `pool` when given.
    pub fn new(limits: &Limits, pool: Option<std::sync::Arc<MemoryPool>>) -> Self {
        MemoryGuard { limit: limits.memory.map_or(usize::MAX, |m| m as usize), pool: pool.map(|p| (p, 0)) }
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        if let Some((pool, taken)) = &self.pool {
            pool.release(*taken);
        }
    }
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired, limit: self.limit }));
        }
        if let Some((pool, taken)) = &mut self.pool {
            let growing = desired.saturating_sub(current);
            if let Err(used) = pool.charge(growing) {
                return Err(wasmtime::Error::new(SharedMemoryExceeded { growing, used, limit: pool.limit }));
            }
            *taken += growing;
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        // Tables take memory too: charged to the instance's pool as their elements' bytes.
        if let Some((pool, taken)) = &mut self.pool {
            let growing = desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES);
            if let Err(used) = pool.charge(growing) {
                return Err(wasmtime::Error::new(SharedMemoryExceeded { growing, used, limit: pool.limit }));
            }
            *taken += growing;
        }
        Ok(true)
    }
}

struct Budget {
    deadline: Option<(Instant, Duration)>,
    quota: Option<Duration>,
    period_start: Instant,
    used: Duration,
    last: Instant,
}

impl Budget {
    fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        let now = Instant::now();
        if let Some((at, timeout)) = self.deadline
            && now >= at
        {
            return Err(wasmtime::Error::new(DeadlineExceeded(timeout)));
        }
        self.used += now.saturating_duration_since(self.last);
        self.last = now;
        if now.duration_since(self.period_start) >= CPU_PERIOD {
            self.period_start = now;
            self.used = Duration::ZERO;
        }
        if let Some(quota) = self.quota
            && self.used >= quota
        {
            let wake = self.period_start + CPU_PERIOD;
            self.period_start = wake;
            self.used = Duration::ZERO;
            self.last = wake;
            return Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep_until(wake.into()))));
        }
        // Yield at every tick so that a busy guest never holds a runtime thread for long.
        Ok(UpdateDeadline::Yield(1))
    }
}

/// Arms the store's epoch deadline with `limits`' CPU share and deadline.
pub fn arm<T: Send + 'static>(store: &mut Store<T>, limits: &Limits) {
    let now = Instant::now();
    let mut budget = Budget {
        deadline: limits.timeout.map(|t| (now + t, t)),
        // A whole core or more: an instance runs on one thread at a time, so nothing to throttle.
        quota: limits.cpu_millis.filter(|m| *m < 1000).map(|m| CPU_PERIOD.mul_f64(m as f64 / 1000.0)),
        period_start: now,
        used: Duration::ZERO,
        last: now,
    };
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| budget.tick());
}
