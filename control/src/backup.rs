//! Backups (`shoal snapshot save|restore|status`): a cluster's objects and module bytes in one
//! file, read at one revision by a linearizable read, and restored into a new member's data
//! directory as a raft snapshot taken at that same revision, so that revisions continue after
//! it and the resourceVersions clients hold stay valid.
//!
//! The file: the line `shoal-backup-1`, then records as in snapshot files (a `u32` little-endian
//! length and the key, a `u32` length and the value): first `meta` ([`BackupMeta`], JSON), then
//! `object/<store key>` for every object, then `module/<sha256>/<n>` for the bytes of every
//! module, in chunks, and last `end`, holding the sha256 of every record before it. A file cut
//! short or damaged fails [`verify`], which every restore runs first.
//!
//! No key material is in a backup: Secrets stay sealed. A restore needs the PKI directory of
//! the cluster it came from: its `secrets.key` opens the Secrets (every one is opened before
//! anything is written, so a wrong key is told at once), and its CA and tokens keep clients and
//! nodes working against the restored cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use openraft::storage::Snapshot;
use openraft::{BasicNode, CommittedLeaderId, Membership, SnapshotMeta, StoredMembership, Vote};
use ring::digest::{Context as Hasher, SHA256};
use serde::{Deserialize, Serialize};
use shoal_api::resources::secret::Secret;

use crate::pki::Pki;
use crate::store::peer::PeerClient;
use crate::store::snapshot_file::{MAX_RECORD, SnapshotFile, WriteError, put_record, records_of, write_records};
use crate::store::types::LogId;
use crate::store::{MemberId, Store, StoreOptions};

const MAGIC: &[u8] = b"shoal-backup-1\n";
const META: &str = "meta";
const END: &str = "end";
const OBJECT: &str = "object/";
const MODULE: &str = "module/";
/// The plural Secrets are stored under.
const SECRETS: &str = "secrets/";

/// How much of a module one record holds.
const CHUNK: usize = 16 << 20;
const _: () = assert!(CHUNK <= MAX_RECORD);

/// What a backup says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMeta {
    /// The revision the objects were read at.
    pub revision: u64,
    /// The raft term then.
    pub term: u64,
    /// When, in seconds since the Unix epoch.
    pub taken_unix: u64,
    /// How many objects it holds.
    pub objects: u64,
    /// How many modules' bytes it holds.
    pub modules: u64,
}

fn hash_record(hasher: &mut Hasher, key: &str, value: &[u8]) {
    for part in [key.as_bytes(), value] {
        hasher.update(&(part.len() as u32).to_le_bytes());
        hasher.update(part);
    }
}

/// Writes a backup, record by record.
pub struct BackupWriter<W: Write> {
    out: W,
    hasher: Hasher,
}

impl<W: Write> BackupWriter<W> {
    /// Begins a backup described by `meta` on `out`.
    pub fn new(mut out: W, meta: &BackupMeta) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut writer = BackupWriter { out, hasher: Hasher::new(&SHA256) };
        writer.put(META, &serde_json::to_vec(meta).expect("meta serializes"))?;
        Ok(writer)
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::io::Result<()> {
        hash_record(&mut self.hasher, key, value);
        put_record(&mut self.out, key, value)
    }

    /// One object, under its store key.
    pub fn object(&mut self, key: &str, value: &[u8]) -> std::io::Result<()> {
        self.put(&format!("{OBJECT}{key}"), value)
    }

    /// The bytes of module `hex`, read from `file`.
    pub fn module(&mut self, hex: &str, file: &Path) -> std::io::Result<()> {
        let mut input = std::fs::File::open(file)?;
        let mut chunk = vec![0u8; CHUNK];
        for n in 0.. {
            let mut filled = 0;
            while filled < CHUNK {
                match input.read(&mut chunk[filled..])? {
                    0 => break,
                    read => filled += read,
                }
            }
            // A module is never empty, so the first chunk always has bytes.
            if filled == 0 && n > 0 {
                break;
            }
            self.put(&format!("{MODULE}{hex}/{n}"), &chunk[..filled])?;
            if filled < CHUNK {
                break;
            }
        }
        Ok(())
    }

    /// Ends the backup with its checksum, and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let digest = hex::encode(self.hasher.finish().as_ref());
        put_record(&mut self.out, END, digest.as_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record of a backup, as [`walk`] hands it over.
enum Part<'a> {
    Object { key: &'a str, value: &'a [u8] },
    ModuleChunk { hex: &'a str, bytes: &'a [u8] },
    ModuleEnd { hex: &'a str },
}

/// Reads the backup at `path` through, checking its structure and checksum, every module
/// against its digest and the counts against its meta; hands every part to `visit` on the way.
fn walk(path: &Path, mut visit: impl FnMut(Part<'_>) -> anyhow::Result<()>) -> anyhow::Result<BackupMeta> {
    let at = || format!("backup {}", path.display());
    let mut records = records_of(path, MAGIC, "a Shoal backup").with_context(at)?;
    let mut hasher = Hasher::new(&SHA256);
    let (key, value) = records.next().context("it is empty")?.with_context(at)?;
    if key != META {
        bail!("{}: it begins with {key:?}, not its meta", at());
    }
    hash_record(&mut hasher, &key, &value);
    let meta: BackupMeta = serde_json::from_slice(&value).with_context(|| format!("{}: its meta", at()))?;
    let (mut objects, mut modules) = (0u64, BTreeSet::new());
    // The module whose chunks are being read: its digest, the next chunk number, its hash.
    let mut module: Option<(String, u64, Hasher)> = None;
    let end_module = |module: &mut Option<(String, u64, Hasher)>,
                      visit: &mut dyn FnMut(Part<'_>) -> anyhow::Result<()>|
     -> anyhow::Result<()> {
        if let Some((hex, _, hasher)) = module.take() {
            if hex::encode(hasher.finish().as_ref()) != hex {
                bail!("module {hex}: its bytes do not hash to its name");
            }
            visit(Part::ModuleEnd { hex: &hex })?;
        }
        Ok(())
    };
    let mut ended = false;
    for record in records {
        let (key, value) = record.with_context(at)?;
        if ended {
            bail!("{}: a record ({key:?}) after its end", at());
        }
        if key == END {
            end_module(&mut module, &mut visit)?;
            let expected = hex::encode(hasher.clone().finish().as_ref());
            if value != expected.as_bytes() {
                bail!("{}: its checksum does not match (damaged)", at());
            }
            ended = true;
            continue;
        }
        hash_record(&mut hasher, &key, &value);
        if let Some(object) = key.strip_prefix(OBJECT) {
            if !modules.is_empty() || module.is_some() {
                bail!("{}: object {object:?} after the modules", at());
            }
            objects += 1;
            visit(Part::Object { key: object, value: &value })?;
        } else if let Some((hex, n)) = key.strip_prefix(MODULE).and_then(|rest| rest.split_once('/')) {
            let n: u64 = n.parse().with_context(|| format!("{}: record {key:?}", at()))?;
            if module.as_ref().is_none_or(|(current, _, _)| current != hex) {
                end_module(&mut module, &mut visit)?;
                if !shoal_api::digest::is_sha256_hex(hex) || !modules.insert(hex.to_owned()) {
                    bail!("{}: module {hex:?} is not a digest, or appears twice", at());
                }
                module = Some((hex.to_owned(), 0, Hasher::new(&SHA256)));
            }
            let (_, next, module_hasher) = module.as_mut().expect("set above");
            if n != *next {
                bail!("{}: module {hex} chunk {n} where chunk {next} belongs", at());
            }
            *next += 1;
            module_hasher.update(&value);
            visit(Part::ModuleChunk { hex, bytes: &value })?;
        } else {
            bail!("{}: an unknown record {key:?}", at());
        }
    }
    if !ended {
        bail!("{}: it ends before its end record (cut short)", at());
    }
    if objects != meta.objects || modules.len() as u64 != meta.modules {
        bail!(
            "{}: it holds {objects} objects and {} modules, its meta says {} and {}",
            at(),
            modules.len(),
            meta.objects,
            meta.modules
        );
    }
    Ok(meta)
}

/// Checks the backup at `path` through and returns what it says of itself.
pub fn verify(path: &Path) -> anyhow::Result<BackupMeta> {
    walk(path, |_| Ok(()))
}

/// Where to restore a backup to.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// A new member's data directory (it must hold no store yet).
    pub data_dir: PathBuf,
    /// The PKI directory of the cluster the backup came from.
    pub pki_from: PathBuf,
    /// The new member's id.
    pub id: MemberId,
    /// The new member's raft address, `host:port`.
    pub raft_address: String,
}

/// Restores the backup at `backup` into `target`: its PKI (copied from `pki_from`), its module
/// bytes, and a one-member store at the backup's revision. `shoal control --data-dir` on it
/// then starts the restored cluster; more members join it as usual.
pub async fn restore(backup: &Path, target: &RestoreTarget) -> anyhow::Result<BackupMeta> {
    let meta = verify(backup)?;
    let store_path = target.data_dir.join("shoal.redb");
    if store_path.exists() {
        bail!("{} holds a store already: restore into a new data directory", target.data_dir.display());
    }
    shoal_api::config::private_dir(&target.data_dir)
        .with_context(|| format!("creating {}", target.data_dir.display()))?;
    let pki_dir = target.data_dir.join("pki");
    copy_pki(&target.pki_from, &pki_dir)?;
    let pki = Pki::load_or_create(&pki_dir).context("loading the PKI")?;
    let sealer = crate::sealing::Sealer::new(&pki.secrets_key);

    // One pass writes the objects into a snapshot file and the modules into the module
    // directory, opening every Secret on the way.
    let objects_file = target.data_dir.join("restoring.snap");
    let modules = crate::blobs::files::BlobDir::open(&target.data_dir.join("modules"))?;
    let (backup_path, snapshot_path) = (backup.to_owned(), objects_file.clone());
    tokio::task::spawn_blocking(move || write_parts(&backup_path, &snapshot_path, &modules, &sealer))
        .await
        .context("restoring")??;

    let peers = PeerClient::new(&pki.ca_pem, &pki.cluster_token)?;
    let options = StoreOptions {
        id: target.id,
        history_revisions: 100_000,
        snapshot_every: 5000,
        disk_reserve: 0,
        raft_heartbeat: std::time::Duration::from_millis(50),
    };
    let store = Store::open(&store_path, &options, peers).await.context("opening the new store")?;
    let installed = install(&store, &meta, target, &objects_file).await;
    store.shutdown().await;
    drop(store);
    let _ = std::fs::remove_file(&objects_file);
    if installed.is_err() {
        // Not a half-made store that a retry refuses, or that `shoal control` would found an
        // empty cluster on.
        let _ = std::fs::remove_file(&store_path);
        let _ = std::fs::remove_dir_all(target.data_dir.join("snapshots"));
    }
    installed?;
    Ok(meta)
}

/// Installs the objects in `objects_file` as the snapshot at the backup's revision, with a
/// membership of the new member alone.
async fn install(store: &Store, meta: &BackupMeta, target: &RestoreTarget, objects_file: &Path) -> anyhow::Result<()> {
    let id = target.id;
    let log_id: LogId = LogId::new(CommittedLeaderId::new(meta.term, id), meta.revision);
    let nodes = BTreeMap::from([(id, BasicNode::new(&target.raft_address))]);
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![BTreeSet::from([id])], nodes));
    let snapshot_meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("restored-{}", meta.revision),
    };
    let file = SnapshotFile::open(objects_file.to_owned())?;
    store
        .raft()
        .install_full_snapshot(
            Vote::new_committed(meta.term, id),
            Snapshot { meta: snapshot_meta, snapshot: Box::new(file) },
        )
        .await
        .context("installing the snapshot")?;
    store
        .raft()
        .wait(Some(std::time::Duration::from_secs(30)))
        .applied_index_at_least(Some(meta.revision), "restored snapshot")
        .await
        .context("waiting for the snapshot to be applied")?;
    Ok(())
}

fn write_parts(
    backup: &Path,
    snapshot: &Path,
    modules: &crate::blobs::files::BlobDir,
    sealer: &crate::sealing::Sealer,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(64);
    let snapshot_path = snapshot.to_owned();
    // The snapshot file is written as the objects come, beside the walk.
    let writer = std::thread::spawn(move || write_records::<()>(&snapshot_path, rx.into_iter().map(Ok)));
    let mut partial: Option<(PathBuf, std::fs::File)> = None;
    let walked = walk(backup, |part| {
        match part {
            Part::Object { key, value } => {
                if key.starts_with(SECRETS) {
                    let mut secret: Secret =
                        serde_json::from_slice(value).with_context(|| format!("secret {key:?} does not parse"))?;
                    sealer.open_secret(&mut secret).context(
                        "the PKI given is not the one of the cluster the backup came from (its secrets.key does \
                         not open the backup's Secrets)",
                    )?;
                }
                tx.send((key.to_owned(), value.to_vec())).context("the snapshot writer stopped")?;
            }
            Part::ModuleChunk { hex, bytes } => {
                if partial.is_none() {
                    let path = modules.path(&format!("{hex}.restoring.partial"));
                    let file = std::fs::File::create(&path)?;
                    shoal_api::config::private_file(&path)?;
                    partial = Some((path, file));
                }
                partial.as_mut().expect("opened above").1.write_all(bytes)?;
            }
            Part::ModuleEnd { hex } => {
                let (path, file) = partial.take().expect("a module has a chunk");
                file.sync_all()?;
                std::fs::rename(&path, modules.path(hex))?;
            }
        }
        Ok(())
    });
    drop(tx);
    let written = writer.join().map_err(|_| anyhow::anyhow!("the snapshot writer panicked"))?;
    if let Some((path, _)) = partial {
        let _ = std::fs::remove_file(path);
    }
    walked?;
    written.map_err(|e| match e {
        WriteError::Io(e) => anyhow::Error::from(e),
        WriteError::Source(()) => anyhow::anyhow!("the snapshot writer failed"),
    })
}

/// Copies the PKI files from `from` to `to` (new, private), after checking `from` holds a
/// whole PKI: a restore must never make new keys in place of missing ones.
fn copy_pki(from: &Path, to: &Path) -> anyhow::Result<()> {
    for name in crate::pki::FILES {
        if !from.join(name).is_file() {
            bail!("{} holds no {name}: give the PKI directory of the cluster the backup came from", from.display());
        }
    }
    shoal_api::config::private_dir(to).with_context(|| format!("creating {}", to.display()))?;
    for name in crate::pki::FILES {
        let target = to.join(name);
        std::fs::copy(from.join(name), &target).with_context(|| format!("copying {name}"))?;
        shoal_api::config::private_file(&target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(objects: u64, modules: u64) -> BackupMeta {
        BackupMeta { revision: 42, term: 3, taken_unix: 1, objects, modules }
    }

    fn backup(dir: &Path, module: &[u8]) -> PathBuf {
        let path = dir.join("b.backup");
        let module_file = dir.join("m");
        std::fs::write(&module_file, module).unwrap();
        let mut writer = BackupWriter::new(std::fs::File::create(&path).unwrap(), &meta(2, 1)).unwrap();
        writer.object("namespaces//a", b"{}").unwrap();
        writer.object("configs/a/c", b"{\"x\":1}").unwrap();
        writer.module(&shoal_api::digest::sha256_hex(module), &module_file).unwrap();
        writer.finish().unwrap();
        path
    }

    #[test]
    fn a_backup_reads_back_and_damage_anywhere_is_found() {
        let dir = tempfile::tempdir().unwrap();
        // Over one chunk, so that a module spans records.
        let module: Vec<u8> = (0..CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let path = backup(dir.path(), &module);
        let mut seen = Vec::new();
        let read = walk(&path, |part| {
            seen.push(match part {
                Part::Object { key, .. } => format!("object {key}"),
                Part::ModuleChunk { bytes, .. } => format!("chunk {}", bytes.len()),
                Part::ModuleEnd { .. } => "end".into(),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(read, meta(2, 1));
        assert_eq!(seen, ["object namespaces//a", "object configs/a/c", &format!("chunk {CHUNK}"), "chunk 5", "end"]);

        let bytes = std::fs::read(&path).unwrap();
        // The end record: two lengths, "end" and 64 hex digits.
        std::fs::write(&path, &bytes[..bytes.len() - 75]).unwrap();
        assert!(format!("{:#}", verify(&path).unwrap_err()).contains("cut short"));
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        assert!(verify(&path).is_err(), "cut inside the end record");
        let mut flipped = bytes.clone();
        let at = bytes.len() / 2;
        flipped[at] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(verify(&path).is_err(), "a flipped bit in a module");
        let mut flipped = bytes.clone();
        let at = bytes.windows(6).position(|w| w == b"{\"x\":1").unwrap() + 5;
        flipped[at] = b'2';
        std::fs::write(&path, &flipped).unwrap();
        let err = format!("{:#}", verify(&path).unwrap_err());
        assert!(err.contains("checksum"), "{err}");
        std::fs::write(&path, b"shoal-snapshot-1\n").unwrap();
        assert!(format!("{:#}", verify(&path).unwrap_err()).contains("not a Shoal backup"));
    }

    #[test]
    fn counts_that_disagree_with_the_meta_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let mut writer = BackupWriter::new(std::fs::File::create(&path).unwrap(), &meta(3, 0)).unwrap();
        writer.object("namespaces//a", b"{}").unwrap();
        writer.finish().unwrap();
        assert!(format!("{:#}", verify(&path).unwrap_err()).contains("its meta says 3"));
    }
}
