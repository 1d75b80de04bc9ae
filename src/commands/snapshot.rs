//! `shoal snapshot save|restore|status`: backups of a cluster (etcdctl's habits). `save` asks a
//! control member for one; `restore` makes a new member's data directory from one, offline;
//! `status` checks one through. What a backup holds, and what a restore needs besides it (the
//! old cluster's PKI directory), is in `shoal_control::backup`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use shoal_control::backup::{BackupMeta, RestoreTarget};
use tokio::io::AsyncWriteExt;

use crate::connect::ConnectionArgs;

/// Flags of `shoal snapshot`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(clap::Subcommand, Debug)]
enum SnapshotAction {
    /// Save a backup of every object, Secret (sealed) and module to FILE.
    Save {
        /// Where to write it (written whole, or not at all).
        file: PathBuf,
    },
    /// Make a new control member's data directory from a backup; then start it with
    /// `shoal control --data-dir DIR --id ID` (more members join it as usual).
    Restore {
        /// The backup.
        file: PathBuf,
        /// The new data directory (it must hold no store).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The PKI directory of the cluster the backup came from: its secrets key opens the
        /// Secrets, its CA and tokens keep clients and nodes working. Copied into DIR/pki.
        #[arg(long, value_name = "DIR")]
        pki_from: PathBuf,
        /// The new member's raft member id.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// The new member's raft address, as others will reach it: start it with this
        /// `--raft-listen` (or `--advertise` and this port).
        #[arg(long, value_name = "HOST:PORT")]
        raft_address: String,
    },
    /// Check a backup through and say what it holds.
    Status {
        /// The backup.
        file: PathBuf,
    },
}

fn describe(meta: &BackupMeta, bytes: u64) -> String {
    format!(
        "revision {}, {} objects, {} modules, {:.1} MiB",
        meta.revision,
        meta.objects,
        meta.modules,
        bytes as f64 / (1 << 20) as f64
    )
}

impl SnapshotArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        match &self.action {
            SnapshotAction::Save { file } => {
                let client = connection.client()?;
                let partial = file.with_extension("partial");
                let mut out = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("creating {}", partial.display()))?;
                shoal_api::config::private_file(&partial)?;
                let saved = async {
                    let mut stream = std::pin::pin!(client.snapshot().await?);
                    while let Some(chunk) = stream.next().await {
                        out.write_all(&chunk?).await?;
                    }
                    out.sync_all().await?;
                    let meta = shoal_control::backup::verify(&partial)?;
                    std::fs::rename(&partial, file)?;
                    anyhow::Ok(meta)
                }
                .await;
                let meta = match saved {
                    Ok(meta) => meta,
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e.context(format!("saving a backup to {}", file.display())));
                    }
                };
                let bytes = std::fs::metadata(file)?.len();
                println!("saved {}: {}", file.display(), describe(&meta, bytes));
            }
            SnapshotAction::Restore { file, data_dir, pki_from, id, raft_address } => {
                let target = RestoreTarget {
                    data_dir: data_dir.clone(),
                    pki_from: pki_from.clone(),
                    id: *id,
                    raft_address: raft_address.clone(),
                };
                let meta = shoal_control::backup::restore(file, &target)
                    .await
                    .with_context(|| format!("restoring {} into {}", file.display(), data_dir.display()))?;
                let bytes = std::fs::metadata(file)?.len();
                println!("restored {}: {}", file.display(), describe(&meta, bytes));
                println!(
                    "start it with: shoal control --data-dir {} --id {id} --raft-listen {raft_address} (or --advertise \
                     and that port)",
                    data_dir.display()
                );
            }
            SnapshotAction::Status { file } => {
                let meta = shoal_control::backup::verify(file)?;
                let bytes = std::fs::metadata(file)?.len();
                let taken = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.taken_unix);
                println!(
                    "{}: {}, taken {}, term {}",
                    file.display(),
                    describe(&meta, bytes),
                    humantime::format_rfc3339_seconds(taken),
                    meta.term
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
