//! `shoal apply -f FILE|DIR|-`: create or update what the manifests declare. A Workload's local
//! `.wasm` module is uploaded once (by digest) and the object stores the digest.
//!
//! `--dry-run` (or `--dry-run=client`) checks the manifests and modules here and writes
//! nothing; `--dry-run=server` has the API server check and admit each object as it would be
//! written, and prints what would be stored, writing no object (modules are still uploaded:
//! they are content-addressed, and collected after the module grace if nothing uses them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use shoal_api::digest::{sha256_hex, wasm_kind};
use shoal_api::manifest::{self, Manifest, ManifestError, ManifestErrors};
use shoal_api::{AnyObject, Client, Kind, Reason};

use crate::connect::ConnectionArgs;

/// Where a dry run stops.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    /// Check the manifests and modules here.
    Client,
    /// Have the API server check and admit each object, and print what it would store.
    Server,
}

/// Flags of `shoal apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file or directory (repeatable); `-` reads manifests from stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    /// Write nothing: `client` (a bare `--dry-run`) checks here, `server` has the API server
    /// check and admit.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    dry_run: Option<DryRun>,
    /// The namespace of manifests that name none [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
}

/// The name stdin's manifests go by in errors.
pub const STDIN: &str = "<stdin>";

/// Loads manifests from every path (`-`: stdin, read once): what parsed, and every error.
pub fn load_all(paths: &[PathBuf]) -> (Vec<Manifest>, Vec<ManifestError>) {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        let (found, failed) = if path.as_os_str() == "-" {
            if std::mem::replace(&mut stdin_read, true) {
                continue;
            }
            let mut text = String::new();
            let file = Path::new(STDIN);
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => match manifest::parse_str(file, &text) {
                    Ok(found) => (found, Vec::new()),
                    Err(ManifestErrors(failed)) => (Vec::new(), failed),
                },
                Err(e) => {
                    let message = format!("reading stdin: {e}");
                    let error =
                        ManifestError { file: file.to_owned(), line: 0, column: 0, path: String::new(), message };
                    (Vec::new(), vec![error])
                }
            }
        } else {
            manifest::load_partial(path)
        };
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
    if module.starts_with("sha256:")
        || module.starts_with("https://")
        || module.starts_with(shoal_api::module::OCI_SCHEME)
    {
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
        let namespace = connection.namespace(&self.namespace);
        let ns = Some(namespace.as_str());
        match self.dry_run {
            Some(DryRun::Client) => apply_with(None, &self.files, ns, false).await,
            Some(DryRun::Server) => apply_with(Some(&connection.client()?), &self.files, ns, true).await,
            None => apply_with(Some(&connection.client()?), &self.files, ns, false).await,
        }
    }
}

/// Applies every manifest under `paths` with `client` (or, without one, only checks them):
/// nothing is written unless every manifest and module checks out.
pub async fn apply_paths(client: Option<&Client>, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    apply_with(client, paths, None, false).await
}

/// The manifests under `paths`, loaded and checked with their local modules read (in the order
/// they are applied: what others live in first); or the errors, printed, and the failing exit
/// code.
fn checked(paths: &[PathBuf], namespace: Option<&str>) -> Result<(Vec<Manifest>, Vec<Option<LocalModule>>), ExitCode> {
    let (mut manifests, mut errors) = load_all(paths);
    in_namespace(&mut manifests, namespace);
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
        return Err(report(&ManifestErrors(errors)));
    }
    Ok((manifests, modules))
}

/// Puts the manifests of namespaced kinds that name no namespace in `namespace` (the
/// context's or `-n`'s), if given.
pub fn in_namespace(manifests: &mut [Manifest], namespace: Option<&str>) {
    let Some(name) = namespace.and_then(|ns| shoal_api::Name::new(ns).ok()) else { return };
    for m in manifests {
        if m.object.kind().namespaced() && m.object.meta().namespace.is_none() {
            m.object.meta_mut().namespace = Some(name.clone());
        }
    }
}

/// As [`checked`], with the local modules uploaded and named by digest (what `apply` writes).
pub async fn prepared(
    client: &Client,
    paths: &[PathBuf],
    namespace: Option<&str>,
) -> anyhow::Result<Result<Vec<Manifest>, ExitCode>> {
    let (mut manifests, modules) = match checked(paths, namespace) {
        Ok(found) => found,
        Err(code) => return Ok(Err(code)),
    };
    let mut uploaded = HashSet::new();
    for (m, module) in manifests.iter_mut().zip(modules) {
        upload(client, m, module, &mut uploaded).await?;
    }
    Ok(Ok(manifests))
}

/// Uploads `m`'s local module, unless `uploaded` says it is in its namespace already, and
/// names it by digest in the manifest.
async fn upload(
    client: &Client,
    m: &mut Manifest,
    module: Option<LocalModule>,
    uploaded: &mut HashSet<(String, String)>,
) -> anyhow::Result<()> {
    let Some(module) = module else { return Ok(()) };
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
    Ok(())
}

/// As [`apply_paths`]; with `server_dry_run`, each write is the server's dry run.
async fn apply_with(
    client: Option<&Client>,
    paths: &[PathBuf],
    namespace: Option<&str>,
    server_dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (mut manifests, modules) = match checked(paths, namespace) {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    let Some(client) = client else {
        for m in &manifests {
            println!("{} checked (dry run)", m.object.display_name());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (mut uploaded, mut failed) = (HashSet::new(), false);
    // Each module goes up just before its object: the namespace it goes to may be made by an
    // object before it.
    for (m, module) in manifests.iter_mut().zip(modules) {
        upload(client, m, module, &mut uploaded).await?;
        match apply_one(client, &m.object, server_dry_run).await {
            Ok(outcome) if server_dry_run => println!("{} {outcome} (server dry run)", m.object.display_name()),
            Ok(outcome) => println!("{} {outcome}", m.object.display_name()),
            Err(e) => {
                failed = true;
                eprintln!("{}:{}: {}: {e}", m.file.display(), m.line, m.object.display_name());
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Writes one object (or, with `dry_run`, has the server check it); says whether it was (or
/// would be) created, configured or left unchanged.
async fn apply_one(client: &Client, object: &AnyObject, dry_run: bool) -> Result<&'static str, shoal_api::ClientError> {
    let name = object.meta().name.as_str();
    let before = match client.get(object.kind(), object.namespace(), name).await {
        Ok(o) => Some(o),
        Err(e) if e.reason() == Some(Reason::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut object = object.clone();
    object.meta_mut().resource_version = None;
    let after = match dry_run {
        true => client.put_dry_run(&object).await?,
        false => client.put(&object).await?,
    };
    Ok(match before {
        None => "created",
        Some(before) if !dry_run && before.meta().resource_version == after.meta().resource_version => "unchanged",
        Some(before) if dry_run && super::diff::comparable(&before) == super::diff::comparable(&after) => "unchanged",
        Some(_) => "configured",
    })
}
