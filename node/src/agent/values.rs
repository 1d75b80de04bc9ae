//! The values an instance takes from Secrets and Configs. The node keeps none of them: it asks
//! the control plane for an instance's values each time it starts one (which answers only for
//! instances bound to this node), gives them to the guest as its env, as `wasi:config`, and as
//! read-only directories of files, and removes those files when the instance stops.
//!
//! The files are written under the node's data directory, readable by the node's user alone,
//! one directory per run of an instance, cleared at start-up as well (a node that died left
//! its own; until it starts again they stay on its disk, which is why the data directory is its
//! user's alone). What one instance is given, files included, is at most
//! [`shoal_api::agent::MAX_VALUES_BYTES`].

use std::path::{Path, PathBuf};

use shoal_api::agent::InstanceValues;
use shoal_api::resources::instance::Instance;

use crate::runtime::host::Preopen;

/// What a guest gets of its values. Its `Debug` shows names only.
#[derive(Default)]
pub struct Values {
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// What `wasi:config/store` answers.
    pub wasi_config: Vec<(String, String)>,
    /// Its directories of files.
    pub dirs: Vec<Preopen>,
    /// Where the files are on this node; removed when dropped.
    files: Option<FilesDir>,
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        f.debug_struct("Values")
            .field("env", &names(&self.env))
            .field("wasi_config", &names(&self.wasi_config))
            .field("dirs", &self.dirs)
            .finish()
    }
}

/// A directory that is removed with everything in it when dropped.
#[derive(Debug)]
struct FilesDir(PathBuf);

impl Drop for FilesDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// The values of an instance that names no Secret or Config: its literal env and `wasi:config`.
pub fn literal(instance: &Instance) -> InstanceValues {
    let pairs = |vars: &[shoal_api::resources::workload::EnvVar]| {
        vars.iter().map(|v| (v.name.clone(), v.value.clone())).collect::<Vec<_>>()
    };
    InstanceValues { env: pairs(&instance.spec.env), files: Vec::new(), wasi_config: pairs(&instance.spec.wasi_config) }
}

/// Clears what instances of an earlier run of this node left in `root`, and makes it.
pub fn prepare_root(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    shoal_api::config::private_dir(root)
}

/// Writes `values`' files for the instance `name` (of namespace `ns`) under `root`, and hands
/// the guest what it is given.
pub fn materialize(root: &Path, ns: &str, name: &str, values: InstanceValues) -> std::io::Result<Values> {
    let InstanceValues { env, files, wasi_config } = values;
    let mut out = Values { env, wasi_config, ..Values::default() };
    if files.is_empty() {
        return Ok(out);
    }
    // Names are DNS labels, so `ns.name.` starts one directory per run; the random rest keeps
    // a run that starts while an older one of the same name is still stopping from sharing
    // (and then losing) its files.
    let run: u64 = rand::random();
    let base = root.join(format!("{ns}.{name}.{run:016x}"));
    shoal_api::config::private_dir(&base)?;
    let guard = FilesDir(base.clone());
    for (i, (guest, entries)) in files.into_iter().enumerate() {
        let host = base.join(i.to_string());
        shoal_api::config::private_dir(&host)?;
        for (key, value) in entries {
            // Keys are checked to be plain file names when the Secret or Config is written.
            write_read_only(&host.join(&key), value.as_bytes())?;
        }
        out.dirs.push(Preopen { host, guest, read_only: true });
    }
    out.files = Some(guard);
    Ok(out)
}

/// Writes a new file readable by its owner only. Not synced: it lives as long as the
/// instance, and is written anew at every start.
fn write_read_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn files_are_written_private_and_removed_with_the_values() {
        let root = tempfile::tempdir().unwrap();
        prepare_root(root.path()).unwrap();
        let values = InstanceValues {
            env: vec![("A".into(), "1".into())],
            files: vec![("/etc/db".into(), BTreeMap::from([("password".into(), "hunter2".into())]))],
            wasi_config: Vec::new(),
        };
        let made = materialize(root.path(), "alpha", "web-x", values).unwrap();
        assert_eq!(made.dirs.len(), 1);
        let file = made.dirs[0].host.join("password");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hunter2");
        assert!(made.dirs[0].read_only && made.dirs[0].guest == "/etc/db");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o077, 0, "owner only");
        drop(made);
        assert!(!file.exists(), "removed when the instance stops");
        assert!(root.path().exists());
    }
}
