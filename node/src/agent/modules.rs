//! The node's module cache: modules fetched from the control plane by digest, verified, kept on
//! disk (so a restart fetches nothing), and compiled once per node process (wasmtime's own cache
//! keeps the compiled artifact on disk, so a restart does not recompile either).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shoal_api::Client;
use tokio::sync::OnceCell;

use crate::runtime::{Program, Runtime};

/// Modules by digest.
pub struct ModuleCache {
    dir: PathBuf,
    runtime: Runtime,
    client: Client,
    loaded: Mutex<HashMap<String, Arc<OnceCell<Program>>>>,
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
        matches!(self, ModuleError::Fetch { .. })
    }
}

impl ModuleCache {
    /// A cache under `dir`.
    pub fn new(dir: PathBuf, runtime: Runtime, client: Client) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(ModuleCache { dir, runtime, client, loaded: Mutex::new(HashMap::new()) })
    }

    /// The compiled program for `reference` (`sha256:<hex>`), fetching and compiling it the
    /// first time. Concurrent callers for one module wait for one fetch.
    pub async fn get(&self, reference: &str) -> Result<Program, ModuleError> {
        let hex = reference
            .strip_prefix("sha256:")
            .filter(|h| shoal_api::digest::is_sha256_hex(h))
            .ok_or_else(|| ModuleError::BadReference(reference.to_owned()))?;
        let cell = self.loaded.lock().expect("module map lock").entry(hex.to_owned()).or_default().clone();
        cell.get_or_try_init(|| self.load(hex)).await.cloned()
    }

    async fn load(&self, hex: &str) -> Result<Program, ModuleError> {
        let path = self.dir.join(format!("{hex}.wasm"));
        let cached = tokio::fs::read(&path).await.ok().filter(|b| shoal_api::digest::sha256_hex(b) == hex);
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let fetch = |message: String| ModuleError::Fetch { digest: hex.to_owned(), message };
                let bytes = self.client.get_module(hex).await.map_err(|e| fetch(e.to_string()))?.to_vec();
                let partial = self.dir.join(format!("{hex}.wasm.partial"));
                tokio::fs::write(&partial, &bytes).await.map_err(|e| fetch(format!("{}: {e}", partial.display())))?;
                tokio::fs::rename(&partial, &path).await.map_err(|e| fetch(format!("{}: {e}", path.display())))?;
                bytes
            }
        };
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| ModuleError::Load { digest: hex.to_owned(), message: e.to_string() })?
            .map_err(|e| ModuleError::Load { digest: hex.to_owned(), message: e.to_string() })
    }
}
