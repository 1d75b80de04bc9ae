//! Module bytes on this member's disk: one file per sha256 under `<data dir>/modules/`. A file
//! is written under a temporary name, synced, renamed into place and its directory synced, so
//! that a file under its final name is whole, durable, and hashes to its name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

/// The directory of module files.
#[derive(Debug, Clone)]
pub struct BlobDir {
    dir: PathBuf,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

impl BlobDir {
    /// Opens (or makes, private to this user) the directory, and removes what an interrupted
    /// write left behind.
    pub fn open(dir: &Path) -> std::io::Result<BlobDir> {
        shoal_api::config::private_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "partial") {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(BlobDir { dir: dir.to_owned() })
    }

    /// Where the bytes of `hex` live.
    pub fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    /// Whether the bytes of `hex` are here.
    pub fn has(&self, hex: &str) -> bool {
        self.path(hex).is_file()
    }

    /// Makes `bytes` (already checked to hash to `hex`) durable under `hex`. If they are here
    /// already, their time is renewed instead, so that the sweep of unrecorded files (which
    /// spares young ones) does not take bytes an upload is about to record.
    pub async fn write(&self, hex: &str, bytes: Bytes) -> std::io::Result<()> {
        let (dir, path) = (self.dir.clone(), self.path(hex));
        let partial = self.dir.join(format!("{hex}.{}.partial", uuid::Uuid::new_v4().simple()));
        blocking(move || {
            if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                return file.set_modified(SystemTime::now());
            }
            let written = (|| {
                let mut file = std::fs::File::create(&partial)?;
                shoal_api::config::private_file(&partial)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&partial, &path)?;
                std::fs::File::open(&dir)?.sync_all()
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written
        })
        .await
    }

    /// Renews the time of the bytes of `hex` if they are here (a push found them here and
    /// counts on them: the sweep of unrecorded files must not take them now); whether they are.
    pub fn renew(&self, hex: &str) -> bool {
        std::fs::File::options()
            .append(true)
            .open(self.path(hex))
            .is_ok_and(|f| f.set_modified(SystemTime::now()).is_ok())
    }

    /// The bytes of `hex`, if they are here.
    pub async fn read(&self, hex: &str) -> std::io::Result<Option<Bytes>> {
        match tokio::fs::read(self.path(hex)).await {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every complete file here, with when it was last written or renewed.
    pub fn list(&self) -> std::io::Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if shoal_api::digest::is_sha256_hex(&name) {
                out.push((name, entry.metadata()?.modified()?));
            }
        }
        Ok(out)
    }

    /// Removes the bytes of `hex`.
    pub fn remove(&self, hex: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(hex)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_file_is_whole_private_and_listed_and_a_rewrite_renews_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("left.abc.partial"), b"half").unwrap();
        let dir = BlobDir::open(tmp.path()).unwrap();
        assert!(!tmp.path().join("left.abc.partial").exists(), "an interrupted write is cleared");
        let hex = shoal_api::digest::sha256_hex(b"bytes");
        dir.write(&hex, Bytes::from_static(b"bytes")).await.unwrap();
        assert_eq!(dir.read(&hex).await.unwrap().as_deref(), Some(&b"bytes"[..]));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path(&hex)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777, 0o700);
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().append(true).open(dir.path(&hex)).unwrap().set_modified(old).unwrap();
        dir.write(&hex, Bytes::from_static(b"bytes")).await.unwrap();
        let listed = dir.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].1 > old + std::time::Duration::from_secs(60), "renewed");
        std::fs::File::options().append(true).open(dir.path(&hex)).unwrap().set_modified(old).unwrap();
        assert!(dir.renew(&hex), "present, and renewed");
        assert!(dir.list().unwrap()[0].1 > old + std::time::Duration::from_secs(60));
        dir.remove(&hex).unwrap();
        dir.remove(&hex).unwrap();
        assert!(!dir.renew(&hex), "gone");
        assert_eq!(dir.read(&hex).await.unwrap(), None);
    }
}
