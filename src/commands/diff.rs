//! `shoal diff -f FILE|DIR|-`: what `apply` would change, as a unified diff per object of its
//! YAML as stored now and as it would be stored (the API server's dry run of the write, so its
//! defaults and admission are in it), leaving out status and the store's bookkeeping. Exit
//! codes as kubectl's: 0 no differences, 1 differences, 2 an error. Local modules are uploaded
//! (content-addressed) so that the objects can name them, as `apply --dry-run=server` does.

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_api::{AnyObject, Reason};

use crate::connect::ConnectionArgs;

/// Flags of `shoal diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Manifest file or directory (repeatable); `-` reads manifests from stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    /// The namespace of manifests that name none [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
}

/// An object as compared: no status, no resourceVersion, generation, uid or timestamps.
pub fn comparable(object: &AnyObject) -> serde_json::Value {
    let mut value = object.to_json();
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
    }
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for field in ["resourceVersion", "generation", "uid", "creationTimestamp"] {
            meta.remove(field);
        }
    }
    value
}

fn yaml(value: &serde_json::Value) -> String {
    serde_yaml::to_string(value).expect("values serialize")
}

impl DiffArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        match self.differences(connection).await {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        }
    }

    async fn differences(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        let manifests =
            match super::apply::prepared(&client, &self.files, Some(&connection.namespace(&self.namespace))).await? {
                Ok(manifests) => manifests,
                Err(_) => return Ok(ExitCode::from(2)),
            };
        let mut differ = false;
        for m in manifests {
            let object = &m.object;
            let name = object.meta().name.as_str();
            let live = match client.get(object.kind(), object.namespace(), name).await {
                Ok(live) => Some(comparable(&live)),
                Err(e) if e.reason() == Some(Reason::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            let mut object = object.clone();
            object.meta_mut().resource_version = None;
            let after = client
                .put_dry_run(&object)
                .await
                .map_err(|e| anyhow::anyhow!("{}:{}: {}: {e}", m.file.display(), m.line, object.display_name()))?;
            let after = comparable(&after);
            if live.as_ref() == Some(&after) {
                continue;
            }
            differ = true;
            let before = live.as_ref().map(yaml).unwrap_or_default();
            let shown = object.display_name();
            let after = yaml(&after);
            let diff = similar::TextDiff::from_lines(&before, &after);
            let (old, new) = (format!("live/{shown}"), format!("applied/{shown}"));
            print!("{}", diff.unified_diff().header(&old, &new));
        }
        Ok(if differ { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    }
}
