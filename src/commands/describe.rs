//! `shoal describe KIND NAME`: the object in full, then the events about it.

use std::process::ExitCode;

use anyhow::bail;
use shoal_api::{AnyObject, Kind};

use crate::connect::ConnectionArgs;
use crate::output;

/// Flags of `shoal describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Kind of object.
    kind: String,
    /// Its name.
    name: String,
    /// Its namespace [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// For a Secret: show its values (the token must be for its namespace).
    #[arg(long)]
    show_secrets: bool,
}

impl DescribeArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let Some(kind) = Kind::parse(&self.kind) else { bail!("unknown kind {:?}", self.kind) };
        let client = connection.client()?;
        let namespace = connection.namespace(&self.namespace);
        if self.show_secrets && kind != Kind::Secret {
            bail!("--show-secrets is for secrets");
        }
        let object = match self.show_secrets {
            true => client.get_secret_shown(&namespace, &self.name).await?,
            false => client.get(kind, kind.namespaced().then_some(namespace.as_str()), &self.name).await?,
        };
        print!("{}", output::yaml(std::slice::from_ref(&object)));
        let events_ns = object.namespace().unwrap_or("default").to_owned();
        let events: Vec<AnyObject> = client
            .list(Kind::Event, Some(&events_ns), None)
            .await?
            .items
            .into_iter()
            .filter(|e| match e {
                AnyObject::Event(e) => {
                    e.spec.involved_object.kind == kind && e.spec.involved_object.name.as_str() == self.name
                }
                _ => false,
            })
            .collect();
        println!("events:");
        if events.is_empty() {
            println!("  <none>");
        } else {
            for line in output::table(Kind::Event, &events, Default::default()).lines() {
                println!("  {line}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
