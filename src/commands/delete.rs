//! `shoal delete KIND NAME...`, `KIND/NAME...`, `KIND -l SELECTOR`, `KIND --all`, or
//! `-f FILE|DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use shoal_api::{Kind, Reason};

use crate::connect::ConnectionArgs;
use crate::targets::{self, Targets};

/// Flags of `shoal delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// A kind and names, or KIND/NAME for each (not with -f).
    #[arg(value_name = "KIND [NAME...] | KIND/NAME...")]
    targets: Vec<String>,
    /// Namespace of the objects [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Delete what these manifests declare instead.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", conflicts_with = "targets")]
    files: Vec<PathBuf>,
    /// Delete the objects of the kind whose labels match, e.g. `app=hello`.
    #[arg(short = 'l', long, conflicts_with = "files")]
    selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long, conflicts_with_all = ["files", "selector"])]
    all: bool,
    /// An object that is not there is no error.
    #[arg(long)]
    ignore_not_found: bool,
}

impl DeleteArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let namespace = connection.namespace(&self.namespace);
        let client = connection.client()?;
        let targets: Vec<(Kind, Option<String>, String)> = if !self.files.is_empty() {
            let (mut manifests, errors) = super::apply::load_all(&self.files);
            super::apply::in_namespace(&mut manifests, Some(&namespace));
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
            if self.targets.is_empty() {
                bail!("name a kind and names, KIND/NAME, a kind with -l or --all, or pass -f FILE");
            }
            let ns_of = |kind: Kind| kind.namespaced().then(|| namespace.clone());
            match targets::parse(&self.targets)? {
                Targets::Named(named) if self.selector.is_some() || self.all => {
                    bail!(
                        "-l and --all choose among all objects of a kind: name a kind and no names ({} given)",
                        named.len()
                    )
                }
                Targets::Named(named) => named.into_iter().map(|(kind, name)| (kind, ns_of(kind), name)).collect(),
                Targets::Kind(kind) if self.selector.is_none() && !self.all => {
                    bail!("name the {} to delete, or choose them with -l SELECTOR or --all", kind.plural())
                }
                Targets::Kind(kind) => {
                    let list = client.list(kind, ns_of(kind).as_deref(), self.selector.as_deref()).await?;
                    if list.items.is_empty() {
                        eprintln!("no {} found", kind.plural());
                    }
                    list.items.iter().map(|o| (kind, ns_of(kind), o.meta().name.to_string())).collect()
                }
            }
        };
        let mut code = ExitCode::SUCCESS;
        for (kind, ns, name) in targets {
            let shown = match &ns {
                Some(ns) => format!("{}/{ns}/{name}", kind.plural()),
                None => format!("{}/{name}", kind.plural()),
            };
            match client.delete(kind, ns.as_deref(), &name).await {
                Ok(_) => println!("{shown} deleted"),
                Err(e) if e.reason() == Some(Reason::NotFound) && self.ignore_not_found => {}
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
