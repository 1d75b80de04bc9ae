//! `shoal apply -f FILE|DIR`: create or update what the manifests declare. A Workload's local
//! `.wasm` module is uploaded once (by digest) and the object stores the digest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use shoal_api::digest::{sha256_hex, wasm_kind};
use shoal_api::manifest::{self, Manifest, ManifestError, ManifestErrors};
use shoal_api::{AnyObject, Client, Kind, Reason};

use crate::connect::ConnectionArgs;

/// Flags of `shoal apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file or directory (repeatable).
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// Check everything locally and print what would be applied, changing nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Loads manifests from every path: what parsed, and every error.
pub fn load_all(paths: &[PathBuf]) -> (Vec<Manifest>, Vec<ManifestError>) {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let (found, failed) = manifest::load_partial(path);
        manifests.extend(found);
        errors.extend(failed);
    }
    (manifests, errors)
}

/// Prints manifest errors, one per line, and gives the failing exit code.
pub fn report(errors: &ManifestErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::FAILURE
}

/// A local module a workload refers to, read and checked.
struct LocalModule {
    bytes: Vec<u8>,
    digest: String,
}

/// Reads the local module file of a workload manifest, if it names one.
fn read_module(m: &Manifest) -> Result<Option<LocalModule>, ManifestError> {
    let (module, field) = match &m.object {
        AnyObject::Workload(w) => (&w.spec.module, "spec.module"),
        AnyObject::Job(j) => (&j.spec.template.module, "spec.template.module"),
        AnyObject::CronJob(c) => (&c.spec.job_template.template.module, "spec.jobTemplate.template.module"),
        _ => return Ok(None),
    };
    if module.starts_with("sha256:") || module.starts_with("https://") {
        return Ok(None);
    }
    let base = m.file.parent().unwrap_or(Path::new("."));
    let path = base.join(module);
    let bytes = std::fs::read(&path).map_err(|e| m.error_at(field, format!("cannot read {}: {e}", path.display())))?;
    if wasm_kind(&bytes).is_none() {
        return Err(m.error_at(field, format!("{} is not a wasm module or component", path.display())));
    }
    let digest = sha256_hex(&bytes);
    Ok(Some(LocalModule { bytes, digest }))
}

impl ApplyArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        if self.dry_run {
            return apply_paths(None, &self.files).await;
        }
        apply_paths(Some(&connection.client()?), &self.files).await
    }
}

/// Applies every manifest under `paths` with `client` (or, without one, only checks them):
/// nothing is written unless every manifest and module checks out.
pub async fn apply_paths(client: Option<&Client>, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (mut manifests, mut errors) = load_all(paths);
    manifests.sort_by_key(|m| Kind::ALL.iter().position(|k| *k == m.object.kind()));
    let mut modules = Vec::new();
    for m in &manifests {
        match read_module(m) {
            Ok(module) => modules.push(module),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Ok(report(&ManifestErrors(errors)));
    }
    let Some(client) = client else {
        for m in &manifests {
            println!("{} checked (dry run)", m.object.display_name());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut uploaded = HashSet::new();
    let mut failed = false;
    for (m, module) in manifests.iter_mut().zip(modules) {
        if let Some(module) = module {
            let ns = m.object.namespace().unwrap_or("default").to_owned();
            let named = match &mut m.object {
                AnyObject::Workload(w) => &mut w.spec.module,
                AnyObject::Job(j) => &mut j.spec.template.module,
                AnyObject::CronJob(c) => &mut c.spec.job_template.template.module,
                _ => unreachable!("only workloads, jobs and cronjobs name local modules"),
            };
            if !uploaded.contains(&(ns.clone(), module.digest.clone())) {
                if !client.has_module(&ns, &module.digest).await? {
                    client
                        .put_module(&ns, module.bytes)
                        .await
                        .map_err(|e| anyhow!("{}: uploading {named}: {e}", m.file.display()))?;
                }
                uploaded.insert((ns, module.digest.clone()));
            }
            *named = format!("sha256:{}", module.digest);
        }
        match apply_one(client, &m.object).await {
            Ok(outcome) => println!("{} {outcome}", m.object.display_name()),
            Err(e) => {
                failed = true;
                eprintln!("{}:{}: {}: {e}", m.file.display(), m.line, m.object.display_name());
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Writes one object; says whether it was created, configured or left unchanged.
async fn apply_one(client: &Client, object: &AnyObject) -> Result<&'static str, shoal_api::ClientError> {
    let name = object.meta().name.as_str();
    let before = match client.get(object.kind(), object.namespace(), name).await {
        Ok(o) => o.meta().resource_version,
        Err(e) if e.reason() == Some(Reason::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut object = object.clone();
    object.meta_mut().resource_version = None;
    let after = client.put(&object).await?;
    Ok(match before {
        None => "created",
        Some(rv) if Some(rv) == after.meta().resource_version => "unchanged",
        Some(_) => "configured",
    })
}
