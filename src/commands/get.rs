//! `shoal get KIND [NAME]`: list objects of a kind, or show one.

use std::process::ExitCode;

use anyhow::bail;
use shoal_api::Kind;

use crate::connect::ConnectionArgs;
use crate::output::{self, Format};

/// Flags of `shoal get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Kind of object: namespaces, workloads, instances, services, nodes, events, secrets,
    /// configs (or a short name: ns, wl, inst, svc, no, ev, cfg).
    kind: String,
    /// Show only this object.
    name: Option<String>,
    /// Namespace to look in.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Look in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only objects whose labels match, e.g. `app=hello,tier!=db`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Show a Secret's values (one Secret, by name; the token must be for its namespace).
    /// Without it each value reads `<redacted>`.
    #[arg(long)]
    show_secrets: bool,
}

impl GetArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let Some(kind) = Kind::parse(&self.kind) else {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
            bail!("unknown kind {:?}: expected one of {}", self.kind, kinds.join(", "));
        };
        if self.show_secrets && (kind != Kind::Secret || self.name.is_none()) {
            bail!("--show-secrets shows one Secret: shoal get secret NAME --show-secrets");
        }
        let client = connection.client()?;
        let ns = (kind.namespaced() && !self.all_namespaces).then_some(self.namespace.as_str());
        let objects = match &self.name {
            Some(name) if self.show_secrets => vec![client.get_secret_shown(&self.namespace, name).await?],
            Some(name) => vec![client.get(kind, ns.or(Some(self.namespace.as_str())), name).await?],
            None => client.list(kind, ns, self.selector.as_deref()).await?.items,
        };
        let text = match self.output {
            Format::Table | Format::Wide => {
                if objects.is_empty() {
                    eprintln!("no {} found", kind.plural());
                    return Ok(ExitCode::SUCCESS);
                }
                output::table(kind, &objects, self.output == Format::Wide)
            }
            Format::Yaml => output::yaml(&objects),
            Format::Json => output::json(&objects, self.name.is_some()) + "\n",
        };
        print!("{text}");
        Ok(ExitCode::SUCCESS)
    }
}
