//! The wasm runtime of a node: one wasmtime [`Engine`] with the pooling allocator, epoch
//! interruption and an on-disk compilation cache, shared by every instance on the node; and,
//! optionally, a baseline tier: a second engine that compiles with Winch, a single-pass compiler
//! several times faster than Cranelift, so a module never seen before starts serving at once
//! while the optimizing compile runs behind it (see `agent::modules`).
//!
//! # Layout
//! - [`limits`]: per-instance memory limit, CPU share and deadline.
//! - [`log`]: bounded per-instance stdout/stderr buffers.
//! - [`host`]: the per-instance host state (WASI, wasi-http) and how a guest's sandbox is built.
//! - [`command`]: running `wasi:cli/run` components and preview-1 command modules.
//! - [`http`]: serving requests with `wasi:http/proxy` components, a fresh store per request.
//! - [`egress`]: a guest's requests to the world, fenced after name resolution.
//! - [`fair`]: the node's threads shared between tenants: a guest holds a slot only while it
//!   runs, and one namespace never holds them all.

pub mod command;
pub mod egress;
pub mod fair;
pub mod host;
pub mod http;
pub mod limits;
pub mod log;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

/// How often the engine's epoch advances: the granularity of deadlines and CPU shares.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why the runtime could not start or load a program.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("configuring the wasm engine: {0}")]
    Engine(String),
    /// The bytes are neither a wasm module nor a component.
    #[error("not a wasm module or component")]
    NotWasm,
    /// Compilation failed.
    #[error("compiling: {0}")]
    Compile(String),
    /// The program does not have what its use needs (e.g. an HTTP workload without
    /// `wasi:http/incoming-handler`).
    #[error("{0}")]
    Shape(String),
    /// Linking or instantiating failed.
    #[error("instantiating: {0}")]
    Instantiate(String),
}

/// How to build the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (absolute), so a restart does not recompile.
    pub cache_dir: Option<PathBuf>,
    /// How many instances may exist at once (slots in the pooling allocator).
    pub max_instances: u32,
    /// The largest linear memory any one instance may have.
    pub max_memory: u64,
    /// Whether to build the baseline (Winch) tier as well.
    pub baseline: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cache_dir: None, max_instances: 1000, max_memory: 1 << 30, baseline: false }
    }
}

/// A loaded program: a component or a core module.
#[derive(Clone)]
pub enum Program {
    /// A component (`wasi:cli/run` or `wasi:http/proxy`).
    Component(Component),
    /// A preview-1 core module.
    Module(Module),
}

impl Program {
    /// The engine (tier) it was compiled for.
    pub fn engine(&self) -> &Engine {
        match self {
            Program::Component(c) => c.engine(),
            Program::Module(m) => m.engine(),
        }
    }
}

/// One compilation tier: an engine and the linkers made for it.
struct Tier {
    engine: Engine,
    linkers: host::Linkers,
}

impl Tier {
    fn new(config: &Config) -> Result<Tier, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let engine = Engine::new(config).map_err(engine_err)?;
        let linkers = host::Linkers::new(&engine).map_err(engine_err)?;
        Ok(Tier { engine, linkers })
    }

    fn load(&self, bytes: &[u8]) -> Result<Program, RuntimeError> {
        let compile = |e: wasmtime::Error| RuntimeError::Compile(format!("{e:#}"));
        match shoal_api::digest::wasm_kind(bytes) {
            Some(shoal_api::digest::WasmKind::Component) => {
                Ok(Program::Component(Component::new(&self.engine, bytes).map_err(compile)?))
            }
            Some(shoal_api::digest::WasmKind::Module) => {
                Ok(Program::Module(Module::new(&self.engine, bytes).map_err(compile)?))
            }
            None => Err(RuntimeError::NotWasm),
        }
    }
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The node's runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    optimized: Arc<Tier>,
    baseline: Option<Arc<Tier>>,
    _ticker: Arc<EpochTicker>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        // A component instance holds a few core instances (the guest, its adapter, shims).
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(4))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .total_stacks(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .max_memory_size(config.max_memory as usize)
            // Reset the memories of finished instances 32 at a time: one madvise and one TLB
            // shootdown per batch instead of per request (14.2 -> 9.6 µs per instantiation).
            .decommit_batch_size(32);
        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .memory_reservation(config.max_memory)
            .max_wasm_stack(1 << 20);
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Engine(format!("{}: {e}", dir.display())))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir.canonicalize().map_err(|e| RuntimeError::Engine(e.to_string()))?);
            wasm.cache(Some(wasmtime::Cache::new(cache).map_err(engine_err)?));
        }
        if config.baseline {
            // With a baseline tier, optimizing compiles run in the background; one thread
            // each leaves the other cores to new workloads' baseline compiles and to serving.
            wasm.parallel_compilation(false);
        }
        let optimized = Arc::new(Tier::new(&wasm)?);
        // The baseline tier serves only until the optimized code is ready, so it allocates on
        // demand rather than reserving a second pool, and caches nothing on disk.
        let baseline = if config.baseline {
            let mut winch = Config::new();
            winch
                .strategy(wasmtime::Strategy::Winch)
                .epoch_interruption(true)
                .memory_reservation(config.max_memory)
                .max_wasm_stack(1 << 20);
            Some(Arc::new(Tier::new(&winch)?))
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let engines: Vec<_> =
            std::iter::once(&optimized).chain(baseline.as_ref()).map(|tier| tier.engine.weak()).collect();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for weak in &engines {
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => return,
                        }
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Runtime { optimized, baseline, _ticker: Arc::new(EpochTicker { stop }) })
    }

    /// The optimizing engine.
    pub fn engine(&self) -> &Engine {
        &self.optimized.engine
    }

    /// The linkers made for `engine` (either tier's).
    pub(crate) fn linkers_for(&self, engine: &Engine) -> &host::Linkers {
        match &self.baseline {
            Some(baseline) if Engine::same(engine, &baseline.engine) => &baseline.linkers,
            _ => &self.optimized.linkers,
        }
    }

    /// Whether there is a baseline tier.
    pub fn has_baseline(&self) -> bool {
        self.baseline.is_some()
    }

    /// Compiles (or loads from the cache) a component or core module with the optimizing
    /// compiler.
    pub fn load(&self, bytes: &[u8]) -> Result<Program, RuntimeError> {
        self.optimized.load(bytes)
    }

    /// Compiles a component or core module with the baseline compiler (the optimizing one when
    /// there is no baseline tier).
    pub fn load_baseline(&self, bytes: &[u8]) -> Result<Program, RuntimeError> {
        self.baseline.as_ref().unwrap_or(&self.optimized).load(bytes)
    }
}
