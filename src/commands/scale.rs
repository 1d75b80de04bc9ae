//! `shoal scale workload/NAME... --replicas N` (or `workload NAME...`): sets how many replicas
//! a workload wants. An autoscaled workload is refused: its autoscaler decides its replicas
//! (change `spec.autoscale` instead).

use std::process::ExitCode;

use anyhow::bail;
use shoal_api::{AnyObject, Kind, Reason};

use crate::connect::ConnectionArgs;
use crate::targets::{self, Targets};

/// How often a scale is retried when someone else changed the workload meanwhile.
const CONFLICT_RETRIES: usize = 5;

/// Flags of `shoal scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// `workload NAME...` or `workload/NAME...`.
    #[arg(required = true, value_name = "workload NAME... | workload/NAME...")]
    targets: Vec<String>,
    /// How many replicas each should want.
    #[arg(long)]
    replicas: u32,
    /// The namespace [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
}

impl ScaleArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let names = match targets::parse(&self.targets)? {
            Targets::Named(named) => named,
            Targets::Kind(kind) => bail!("name the {} to scale", kind.plural()),
        };
        if let Some((kind, _)) = names.iter().find(|(kind, _)| *kind != Kind::Workload) {
            bail!("only workloads scale, not {}", kind.plural());
        }
        let namespace = connection.namespace(&self.namespace);
        let client = connection.client()?;
        for (_, name) in names {
            for attempt in 1.. {
                let AnyObject::Workload(mut workload) = client.get(Kind::Workload, Some(&namespace), &name).await?
                else {
                    bail!("{name}: not a workload");
                };
                if let Some(autoscale) = &workload.spec.autoscale {
                    bail!(
                        "workload {namespace}/{name} is autoscaled ({} to {} replicas): change its spec.autoscale instead",
                        autoscale.min,
                        autoscale.max
                    );
                }
                workload.spec.replicas = self.replicas;
                // A spec write keeps the stored status: sending it back only costs bytes.
                workload.status = None;
                match client.put(&AnyObject::Workload(workload)).await {
                    Ok(_) => break,
                    Err(e) if e.reason() == Some(Reason::Conflict) && attempt < CONFLICT_RETRIES => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            println!("workload/{name} scaled to {}", self.replicas);
        }
        Ok(ExitCode::SUCCESS)
    }
}
