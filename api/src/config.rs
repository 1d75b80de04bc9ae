//! The client configuration file (like a kubeconfig): where the API server is, the CA that
//! signed its certificate, and the bearer token. The control plane writes it on start; the CLI
//! finds it with no flags.
//!
//! The file may also hold contexts of a user's own (other clusters, or other tokens for this
//! one: [`ConfigFile::contexts`]), which of them is current, and each one's default namespace.
//! The connection at the top level is the context named [`DEFAULT_CONTEXT`]; the control plane
//! rewrites only that, keeping the rest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "SHOAL_CONFIG";

/// How to reach and authenticate to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientConfig {
    /// Base URL of the API server, e.g. `https://127.0.0.1:7443`.
    pub server: String,
    /// PEM of the cluster CA that signed the server's certificate.
    pub ca: String,
    /// Bearer token.
    pub token: String,
}

/// The name of the context at the top level of the file.
pub const DEFAULT_CONTEXT: &str = "default";

/// A context of the config file's own: a connection and its default namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Context {
    /// As in [`ClientConfig`].
    pub server: String,
    /// As in [`ClientConfig`].
    pub ca: String,
    /// As in [`ClientConfig`].
    pub token: String,
    /// The namespace commands use when given none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The whole client config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// The [`DEFAULT_CONTEXT`]'s server, as the control plane wrote it.
    pub server: String,
    /// Its CA.
    pub ca: String,
    /// Its token.
    pub token: String,
    /// Its default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The context commands use (none: [`DEFAULT_CONTEXT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// The other contexts, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub contexts: std::collections::BTreeMap<String, Context>,
}

impl ConfigFile {
    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    /// The current context's name.
    pub fn current_name(&self) -> &str {
        self.current_context.as_deref().unwrap_or(DEFAULT_CONTEXT)
    }

    /// The context called `name`, or `None` if there is none.
    pub fn context(&self, name: &str) -> Option<Context> {
        if name == DEFAULT_CONTEXT {
            let (server, ca, token) = (self.server.clone(), self.ca.clone(), self.token.clone());
            return Some(Context { server, ca, token, namespace: self.namespace.clone() });
        }
        self.contexts.get(name).cloned()
    }

    /// The current context (an error naming it if the file has no such context).
    pub fn current(&self) -> Result<Context, String> {
        let name = self.current_name();
        self.context(name).ok_or_else(|| format!("the current context {name:?} is not in the file"))
    }

    /// Replaces (or adds) the context called `name`.
    pub fn set(&mut self, name: &str, context: Context) {
        if name == DEFAULT_CONTEXT {
            (self.server, self.ca, self.token, self.namespace) =
                (context.server, context.ca, context.token, context.namespace);
        } else {
            self.contexts.insert(name.to_owned(), context);
        }
    }

    /// Writes the file to `path` (readable by its owner only: it holds tokens), creating
    /// parent directories. The file is replaced atomically.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_yaml::to_string(self).expect("config serializes");
        // A temporary name of this writer's own: two control nodes started at once on one
        // machine both write the default config, and must not rename each other's file away.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let unique = format!("{}.{}.tmp", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed));
        let tmp = path.with_extension(unique);
        let written = write_private(&tmp, text.as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }
}

/// Why the config could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_yaml::Error,
    },
    /// The file names a current context it does not hold.
    #[error("{path}: {message}")]
    Context {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Neither `$SHOAL_CONFIG` nor `$HOME` is set.
    #[error("no config path: set ${CONFIG_ENV} or $HOME")]
    NoPath,
}

impl ClientConfig {
    /// `$SHOAL_CONFIG`, else `~/.config/shoal/config.yaml`.
    pub fn default_path() -> Result<PathBuf, ConfigError> {
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME").filter(|p| !p.is_empty()).ok_or(ConfigError::NoPath)?;
        Ok(PathBuf::from(home).join(".config/shoal/config.yaml"))
    }

    /// Reads the connection of the current context of the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let context = ConfigFile::load(path)?
            .current()
            .map_err(|message| ConfigError::Context { path: path.to_owned(), message })?;
        Ok(ClientConfig { server: context.server, ca: context.ca, token: context.token })
    }

    /// Writes this connection as the [`DEFAULT_CONTEXT`] of the file at `path`, keeping what
    /// else the file holds (a file that does not parse is replaced).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let (server, ca, token) = (self.server.clone(), self.ca.clone(), self.token.clone());
        let file = match ConfigFile::load(path) {
            Ok(file) => ConfigFile { server, ca, token, ..file },
            Err(_) => {
                ConfigFile { server, ca, token, namespace: None, current_context: None, contexts: Default::default() }
            }
        };
        file.save(path)
    }
}

/// Writes `bytes` to a new file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes `dir` (and its parents) if needed, and makes it usable by its owner only (0700): data
/// directories hold the store, keys, tenants' modules.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    restrict(dir, 0o700)
}

/// Makes the file at `path` readable and writable by its owner only (0600).
pub fn private_file(path: &Path) -> std::io::Result<()> {
    restrict(path, 0o600)
}

fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_saves_to_one_path_all_succeed_and_leave_one_whole_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let configs: Vec<ClientConfig> = (0..8)
            .map(|i| ClientConfig {
                server: format!("https://127.0.0.1:{}", 7000 + i),
                ca: "ca".into(),
                token: "t".into(),
            })
            .collect();
        std::thread::scope(|scope| {
            for config in &configs {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        config.save(path).expect("a concurrent save fails");
                    }
                });
            }
        });
        assert!(configs.contains(&ClientConfig::load(&path).unwrap()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("config.yaml")]);
    }

    #[test]
    fn a_save_by_the_control_plane_keeps_the_users_contexts_and_the_current_one_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let admin = ClientConfig { server: "https://a:1".into(), ca: "ca".into(), token: "admin".into() };
        admin.save(&path).unwrap();
        let mut file = ConfigFile::load(&path).unwrap();
        let tenant = Context { token: "tenant".into(), namespace: Some("alpha".into()), ..file.current().unwrap() };
        file.set("alpha", tenant);
        file.current_context = Some("alpha".into());
        file.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap().token, "tenant");
        // The control plane restarts with a new port: the default context changes, alpha stays.
        ClientConfig { server: "https://a:2".into(), ..admin }.save(&path).unwrap();
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.server, "https://a:2");
        assert_eq!(file.current().unwrap().namespace.as_deref(), Some("alpha"));
        let broken = ConfigFile { current_context: Some("gone".into()), ..file };
        broken.save(&path).unwrap();
        let err = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("\"gone\" is not in the file"), "{err}");
    }
}
