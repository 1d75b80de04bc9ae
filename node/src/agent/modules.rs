//! The node's module cache: modules fetched from the control plane by digest, verified, kept on
//! disk (so a restart fetches nothing), and compiled once per node process (wasmtime's own cache
//! keeps the compiled artifact on disk, so a restart does not recompile either).
//!
//! Tiers: a module this node has never compiled is first compiled with the baseline compiler
//! (Winch: a few times faster to compile), which is what its first instances start with. The
//! optimizing compile (Cranelift) then runs in the background, one module at a time and only
//! while no baseline compile is waiting, and the instances move to its code when it is ready
//! (HTTP instances at once, command instances at their next start). A marker file records that
//! the optimized code is in wasmtime's cache, so after a restart the module loads optimized
//! straight away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shoal_api::Client;
use tokio::sync::{OnceCell, mpsc, watch};

use crate::runtime::http::HttpApp;
use crate::runtime::{Program, Runtime, RuntimeError};

/// A module as compiled so far: the best code there is now, and a change when better code
/// (the optimized tier) replaces it.
pub type Compiled = watch::Receiver<Arc<Code>>;

/// One tier's code for a module, shared by all its instances on this node.
pub struct Code {
    /// The compiled module.
    pub program: Program,
    /// Its HTTP handler, linked once on first use (every HTTP instance of the module uses it).
    http: OnceLock<Result<HttpApp, String>>,
}

impl Code {
    fn new(program: Program) -> Arc<Code> {
        Arc::new(Code { program, http: OnceLock::new() })
    }

    /// The module as an HTTP handler, or why it is not one.
    pub fn http_app(&self, runtime: &Runtime) -> Result<HttpApp, String> {
        self.http
            .get_or_init(|| match &self.program {
                Program::Component(component) => HttpApp::new(runtime, component).map_err(|e| e.to_string()),
                Program::Module(_) => {
                    Err("an http workload needs a wasi:http/proxy component, not a core module".into())
                }
            })
            .clone()
    }
}

/// How long the optimizer waits before each optimizing compile, and between its checks that no
/// baseline compile is under way, so that a burst of new workloads is not slowed by tier-ups.
const OPTIMIZER_QUIET: Duration = Duration::from_millis(100);

/// One module waiting for its optimized code.
struct TierUp {
    hex: String,
    bytes: Arc<Vec<u8>>,
    marker: PathBuf,
    publish: watch::Sender<Arc<Code>>,
}

/// Modules by digest.
pub struct ModuleCache {
    dir: PathBuf,
    runtime: Runtime,
    client: Client,
    loaded: Mutex<HashMap<String, Arc<OnceCell<Compiled>>>>,
    /// Baseline compiles under way (the optimizer waits for none).
    baseline_compiles: Arc<AtomicUsize>,
    tier_ups: mpsc::UnboundedSender<TierUp>,
}

/// Compiles off the async runtime.
async fn compile(
    hex: &str,
    runtime: Runtime,
    bytes: Arc<Vec<u8>>,
    how: fn(&Runtime, &[u8]) -> Result<Program, RuntimeError>,
) -> Result<Program, ModuleError> {
    let load = |message: String| ModuleError::Load { digest: hex.to_owned(), message };
    tokio::task::spawn_blocking(move || how(&runtime, &bytes))
        .await
        .map_err(|e| load(e.to_string()))?
        .map_err(|e| load(e.to_string()))
}

/// Compiles queued modules with the optimizing compiler, one at a time, when no baseline
/// compile is under way; publishes each result to the module's instances.
async fn optimize(runtime: Runtime, mut queue: mpsc::UnboundedReceiver<TierUp>, baseline_compiles: Arc<AtomicUsize>) {
    while let Some(job) = queue.recv().await {
        loop {
            tokio::time::sleep(OPTIMIZER_QUIET).await;
            if baseline_compiles.load(Ordering::Acquire) == 0 {
                break;
            }
        }
        match compile(&job.hex, runtime.clone(), job.bytes, Runtime::load).await {
            Ok(program) => {
                job.publish.send_replace(Code::new(program));
                tracing::info!("sha256:{}: optimized code ready", job.hex);
                if let Err(e) = tokio::fs::write(&job.marker, b"").await {
                    tracing::info!("{}: {e}", job.marker.display());
                }
            }
            Err(e) => tracing::warn!("{e}; its instances keep the baseline code"),
        }
    }
}

/// Why a module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The reference is not `sha256:<hex>`.
    #[error("module {0:?} is not a sha256: digest")]
    BadReference(String),
    /// The control plane could not be asked, or did not have it.
    #[error("fetching module {digest}: {message}")]
    Fetch {
        /// Which module.
        digest: String,
        /// Why.
        message: String,
    },
    /// The node's module cache has no room for it (its disk is full); tried again later.
    #[error("caching module {digest}: {message} (the node's module cache is full)")]
    CacheFull {
        /// Which module.
        digest: String,
        /// Why.
        message: String,
    },
    /// It did not compile.
    #[error("loading module {digest}: {message}")]
    Load {
        /// Which module.
        digest: String,
        /// Why.
        message: String,
    },
}

impl ModuleError {
    /// Whether trying again later may help (a fetch), or not (a module that does not compile).
    pub fn is_transient(&self) -> bool {
        matches!(self, ModuleError::Fetch { .. } | ModuleError::CacheFull { .. })
    }

    /// The reason an instance waiting for it shows.
    pub fn reason(&self) -> &'static str {
        match self {
            ModuleError::CacheFull { .. } => "ModuleCacheFull",
            ModuleError::Fetch { .. } => "FetchFailed",
            ModuleError::BadReference(_) | ModuleError::Load { .. } => "InvalidModule",
        }
    }
}

impl ModuleCache {
    /// A cache under `dir`; with a baseline tier, starts the optimizer (so it must be called
    /// within a tokio runtime).
    pub fn new(dir: PathBuf, runtime: Runtime, client: Client) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tier_ups, queue) = mpsc::unbounded_channel();
        let baseline_compiles = Arc::new(AtomicUsize::new(0));
        if runtime.has_baseline() {
            tokio::spawn(optimize(runtime.clone(), queue, baseline_compiles.clone()));
        }
        Ok(ModuleCache { dir, runtime, client, loaded: Mutex::new(HashMap::new()), baseline_compiles, tier_ups })
    }

    /// The compiled program for `reference` (`sha256:<hex>`), fetching and compiling it the
    /// first time. Concurrent callers for one module wait for one fetch.
    pub async fn get(&self, reference: &str) -> Result<Compiled, ModuleError> {
        let hex = reference
            .strip_prefix("sha256:")
            .filter(|h| shoal_api::digest::is_sha256_hex(h))
            .ok_or_else(|| ModuleError::BadReference(reference.to_owned()))?;
        let cell = self.loaded.lock().expect("module map lock").entry(hex.to_owned()).or_default().clone();
        cell.get_or_try_init(|| self.load(hex)).await.cloned()
    }

    async fn load(&self, hex: &str) -> Result<Compiled, ModuleError> {
        let path = self.dir.join(format!("{hex}.wasm"));
        let cached = tokio::fs::read(&path).await.ok().filter(|b| shoal_api::digest::sha256_hex(b) == hex);
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let fetch = |message: String| ModuleError::Fetch { digest: hex.to_owned(), message };
                let bytes = self.client.get_module(None, hex).await.map_err(|e| fetch(e.to_string()))?.to_vec();
                let partial = self.dir.join(format!("{hex}.wasm.partial"));
                let written = match tokio::fs::write(&partial, &bytes).await {
                    Ok(()) => tokio::fs::rename(&partial, &path).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    // What did not fit is not left to take the room others need.
                    let _ = tokio::fs::remove_file(&partial).await;
                    let message = format!("{}: {e}", partial.display());
                    return Err(match e.kind() {
                        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                            ModuleError::CacheFull { digest: hex.to_owned(), message }
                        }
                        _ => fetch(message),
                    });
                }
                bytes
            }
        };
        let marker = self.dir.join(format!("{hex}.optimized"));
        let optimized_before = tokio::fs::try_exists(&marker).await.unwrap_or(false);
        if !self.runtime.has_baseline() || optimized_before {
            let program = compile(hex, self.runtime.clone(), Arc::new(bytes), Runtime::load).await?;
            return Ok(watch::channel(Code::new(program)).1);
        }
        let bytes = Arc::new(bytes);
        self.baseline_compiles.fetch_add(1, Ordering::AcqRel);
        let baseline = compile(hex, self.runtime.clone(), bytes.clone(), Runtime::load_baseline).await;
        self.baseline_compiles.fetch_sub(1, Ordering::AcqRel);
        let (publish, compiled) = watch::channel(Code::new(baseline?));
        tracing::info!("sha256:{hex}: serving baseline code; optimizing in the background");
        let _ = self.tier_ups.send(TierUp { hex: hex.to_owned(), bytes, marker, publish });
        Ok(compiled)
    }
}
