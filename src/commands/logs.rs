//! `shoal logs INSTANCE | workload/NAME | job/NAME [-f]`: what instances wrote to stdout and stderr,
//! streamed through the API server from whichever node they run on. For a workload, every
//! instance's lines, each prefixed with the instance's name when there are several.
//! `--tail`, `--since`, `--timestamps` and `--previous` (a command's run before its last
//! restart) are kubectl's, done on the node.

use std::process::ExitCode;

use anyhow::bail;
use futures::StreamExt;
use shoal_api::agent::LogOptions;
use shoal_api::resources::instance::WORKLOAD_LABEL;
use shoal_api::resources::job::JOB_LABEL;
use shoal_api::{Client, Kind};
use tokio::io::AsyncWriteExt;

use crate::connect::ConnectionArgs;

/// Flags of `shoal logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// An instance name (or `instance/NAME`), or `workload/NAME` or `job/NAME` for all of
    /// theirs.
    target: String,
    /// The namespace [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Keep streaming what they write.
    #[arg(short, long, conflicts_with = "previous")]
    follow: bool,
    /// Only the last N lines of what each instance kept.
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
    /// Only lines begun this recently, e.g. `5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// Begin each line with when it began (RFC 3339).
    #[arg(long)]
    timestamps: bool,
    /// The run before the last restart (a command's).
    #[arg(short, long)]
    previous: bool,
}

/// Streams one instance's log to stdout, each line prefixed with `prefix`.
async fn stream_one(
    client: Client,
    namespace: String,
    instance: String,
    options: LogOptions,
    prefix: String,
) -> anyhow::Result<()> {
    let mut chunks = Box::pin(client.logs(&namespace, &instance, &options).await?);
    let mut pending: Vec<u8> = Vec::new();
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = chunks.next().await {
        pending.extend_from_slice(&chunk?);
        let mut out = Vec::new();
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            out.extend_from_slice(prefix.as_bytes());
            out.extend(pending.drain(..=end));
        }
        // stdout is locked per write, so lines of different instances never interleave.
        stdout.write_all(&out).await?;
        stdout.flush().await?;
    }
    if !pending.is_empty() {
        stdout.write_all(format!("{prefix}{}\n", String::from_utf8_lossy(&pending)).as_bytes()).await?;
    }
    Ok(())
}

impl LogsArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let client = connection.client()?;
        let namespace = connection.namespace(&self.namespace);
        let (kind, name) = self.target.split_once('/').unwrap_or(("instance", &self.target));
        let instances: Vec<String> = match Kind::parse(kind) {
            Some(Kind::Instance) => vec![name.to_owned()],
            Some(kind @ (Kind::Workload | Kind::Job)) => {
                let label = if kind == Kind::Job { JOB_LABEL } else { WORKLOAD_LABEL };
                let selector = format!("{label}={name}");
                let list = client.list(Kind::Instance, Some(&namespace), Some(&selector)).await?;
                let names: Vec<String> = list.items.iter().map(|i| i.meta().name.to_string()).collect();
                if names.is_empty() {
                    bail!("{} {}/{name} has no instances", kind.as_str().to_lowercase(), namespace);
                }
                names
            }
            _ => bail!("{:?}: expected INSTANCE, instance/NAME, workload/NAME or job/NAME", self.target),
        };
        let several = instances.len() > 1;
        let options = LogOptions {
            follow: self.follow,
            tail: self.tail,
            // A part of a second asks for that whole second.
            since_seconds: self.since.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            timestamps: self.timestamps,
            previous: self.previous,
        };
        let streams = instances.into_iter().map(|instance| {
            let prefix = if several { format!("[{instance}] ") } else { String::new() };
            tokio::spawn(stream_one(client.clone(), namespace.clone(), instance, options.clone(), prefix))
        });
        for result in futures::future::join_all(streams).await {
            result??;
        }
        Ok(ExitCode::SUCCESS)
    }
}
