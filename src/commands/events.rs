//! `shoal events [-w] [--for KIND/NAME]`: the namespace's Events, oldest first by when each
//! last happened, as `kubectl events` shows them; `-w` then prints each new or repeated one.

use std::process::ExitCode;

use anyhow::bail;
use futures::StreamExt;
use shoal_api::{AnyObject, Kind};

use crate::connect::ConnectionArgs;
use crate::output::{self, TableOptions};

/// Flags of `shoal events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// The namespace [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only Events about this object, e.g. `workload/web`.
    #[arg(long = "for", value_name = "KIND/NAME")]
    about: Option<String>,
    /// After listing, print each Event as it is recorded or repeated (until interrupted).
    #[arg(short, long)]
    watch: bool,
    /// Print no header row.
    #[arg(long)]
    no_headers: bool,
}

fn last_time(event: &AnyObject) -> String {
    match event {
        AnyObject::Event(e) => e.spec.last_timestamp.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

impl EventsArgs {
    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let about = match &self.about {
            Some(target) => match crate::targets::parse(std::slice::from_ref(target))? {
                crate::targets::Targets::Named(mut named) if named.len() == 1 => Some(named.remove(0)),
                _ => bail!("--for {target:?}: expected KIND/NAME"),
            },
            None => None,
        };
        let wanted = |event: &AnyObject| match (event, &about) {
            (AnyObject::Event(e), Some((kind, name))) => {
                e.spec.involved_object.kind == *kind && e.spec.involved_object.name.as_str() == name
            }
            _ => true,
        };
        let namespace = connection.namespace(&self.namespace);
        let ns = (!self.all_namespaces).then_some(namespace.as_str());
        let client = connection.client()?;
        let list = client.list(Kind::Event, ns, None).await?;
        let mut events: Vec<AnyObject> = list.items.into_iter().filter(|e| wanted(e)).collect();
        events.sort_by_key(last_time);
        let options = TableOptions { no_headers: self.no_headers, ..Default::default() };
        if events.is_empty() && !self.watch {
            eprintln!("no events found");
        } else {
            print!("{}", output::table(Kind::Event, &events, options));
        }
        if !self.watch {
            return Ok(ExitCode::SUCCESS);
        }
        let mut changes = Box::pin(client.watch(Kind::Event, ns, list.resource_version).await?);
        let options = TableOptions { no_headers: true, ..options };
        while let Some(change) = changes.next().await {
            let change = change?;
            if change.type_ == shoal_api::status::EventType::Deleted || !wanted(&change.object) {
                continue;
            }
            print!("{}", output::table(Kind::Event, std::slice::from_ref(&change.object), options));
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        bail!("the watch ended")
    }
}
