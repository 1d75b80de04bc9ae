//! `shoal delete KIND NAME` and `shoal delete -f FILE|DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use shoal_api::{Kind, Reason};

use crate::connect::ConnectionArgs;

/// Flags of `shoal delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Kind of object, e.g. `workload` (not with -f).
    kind: Option<String>,
    /// Names of the objects.
    names: Vec<String>,
    /// Namespace of the objects.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Delete what these manifests declare instead.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", conflicts_with = "kind")]
    files: Vec<PathBuf>,
}

impl DeleteArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let targets: Vec<(Kind, Option<String>, String)> = if !self.files.is_empty() {
            let (mut manifests, errors) = super::apply::load_all(&self.files);
            if !errors.is_empty() {
                return Ok(super::apply::report(&shoal_api::manifest::ManifestErrors(errors)));
            }
            // Dependents before what they live in.
            manifests.sort_by_key(|m| std::cmp::Reverse(Kind::ALL.iter().position(|k| *k == m.object.kind())));
            manifests
                .iter()
                .map(|m| (m.object.kind(), m.object.namespace().map(str::to_owned), m.object.meta().name.to_string()))
                .collect()
        } else {
            let Some(kind_name) = &self.kind else { bail!("name a kind and names, or pass -f FILE") };
            let Some(kind) = Kind::parse(kind_name) else { bail!("unknown kind {kind_name:?}") };
            if self.names.is_empty() {
                bail!("name at least one {} to delete", kind.as_str());
            }
            let ns = kind.namespaced().then(|| self.namespace.clone());
            self.names.iter().map(|n| (kind, ns.clone(), n.clone())).collect()
        };
        let client = connection.client()?;
        let mut code = ExitCode::SUCCESS;
        for (kind, ns, name) in targets {
            let shown = match &ns {
                Some(ns) => format!("{}/{ns}/{name}", kind.plural()),
                None => format!("{}/{name}", kind.plural()),
            };
            match client.delete(kind, ns.as_deref(), &name).await {
                Ok(_) => println!("{shown} deleted"),
                Err(e) if e.reason() == Some(Reason::NotFound) => {
                    eprintln!("{shown} not found");
                    code = ExitCode::FAILURE;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(code)
    }
}
