//! `shoal get KIND [NAME...]` or `shoal get KIND/NAME...`: list objects of a kind, or show
//! some; `-w` then follows their changes.

use std::process::ExitCode;

use anyhow::bail;
use futures::StreamExt;
use shoal_api::selector::LabelSelector;
use shoal_api::{AnyObject, Client, Kind};

use crate::connect::ConnectionArgs;
use crate::output::{self, Format, TableOptions};
use crate::targets::{self, Targets};

/// Flags of `shoal get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// A kind (namespaces, workloads, instances, services, nodes, events, secrets, configs,
    /// jobs, cronjobs, or a short name: ns, wl, inst, svc, no, ev, cfg, cj) and names, or
    /// KIND/NAME for each.
    #[arg(required = true, value_name = "KIND [NAME...] | KIND/NAME...")]
    targets: Vec<String>,
    /// Namespace to look in [default: the context's, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Look in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only objects whose labels match, e.g. `app=hello,tier!=db`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// table, wide, yaml, json, name, or jsonpath=TEMPLATE (e.g. `jsonpath={.spec.replicas}`).
    #[arg(short, long, default_value = "table")]
    output: String,
    /// Add a LABELS column.
    #[arg(long)]
    show_labels: bool,
    /// Print no header row.
    #[arg(long)]
    no_headers: bool,
    /// After listing, print each change as it happens (until interrupted).
    #[arg(short, long)]
    watch: bool,
    /// Show a Secret's values (one Secret, by name; the token must be for its namespace).
    /// Without it each value reads `<redacted>`.
    #[arg(long)]
    show_secrets: bool,
    /// Read a list this many objects at a time (as kubectl's --chunk-size; 0: all at once).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    chunk_size: u32,
}

impl GetArgs {
    fn table_options(&self, format: &Format) -> TableOptions {
        TableOptions {
            wide: matches!(format, Format::Wide),
            show_labels: self.show_labels,
            no_headers: self.no_headers,
        }
    }

    /// `objects` (of one kind) as `format` says; `single` when one object was asked for.
    fn render(&self, kind: Kind, objects: &[AnyObject], format: &Format, single: bool) -> String {
        match format {
            Format::Table | Format::Wide => output::table(kind, objects, self.table_options(format)),
            Format::Yaml => output::yaml(objects),
            Format::Json => output::json(objects, single) + "\n",
            Format::Name => objects.iter().map(|o| output::name(o) + "\n").collect(),
            Format::JsonPath(template) => {
                let value = match single {
                    true => serde_json::to_value(&objects[0]),
                    false => serde_json::to_value(serde_json::json!({ "items": objects })),
                };
                template.render(&value.expect("objects serialize"))
            }
        }
    }

    pub async fn execute(&self, connection: &ConnectionArgs) -> anyhow::Result<ExitCode> {
        let format = Format::parse(&self.output)?;
        let targets = targets::parse(&self.targets)?;
        let namespace = connection.namespace(&self.namespace);
        let ns_of = |kind: Kind| (kind.namespaced() && !self.all_namespaces).then_some(namespace.as_str());
        let client = connection.client()?;
        let mut code = ExitCode::SUCCESS;
        let groups: Vec<(Kind, Vec<AnyObject>, bool, u64)> = match &targets {
            Targets::Kind(kind) => {
                if self.show_secrets {
                    bail!("--show-secrets shows one Secret: shoal get secret NAME --show-secrets");
                }
                let selector = self.selector.as_deref();
                let list = match self.chunk_size {
                    0 => client.list(*kind, ns_of(*kind), selector).await?,
                    n => client.list_paged(*kind, ns_of(*kind), selector, n as usize).await?,
                };
                vec![(*kind, list.items, false, list.resource_version)]
            }
            Targets::Named(named) => {
                if self.selector.is_some() {
                    bail!("-l selects among all objects of a kind: name a kind and no names");
                }
                if self.show_secrets && !(named.len() == 1 && named[0].0 == Kind::Secret) {
                    bail!("--show-secrets shows one Secret: shoal get secret NAME --show-secrets");
                }
                let single = named.len() == 1;
                let mut groups: Vec<(Kind, Vec<AnyObject>, bool, u64)> = Vec::new();
                for (kind, name) in named {
                    let got = match self.show_secrets {
                        true => client.get_secret_shown(&namespace, name).await,
                        false => client.get(*kind, kind.namespaced().then_some(namespace.as_str()), name).await,
                    };
                    let object = match got {
                        Ok(object) => object,
                        Err(e) if e.reason() == Some(shoal_api::Reason::NotFound) => {
                            eprintln!("error: {e}");
                            code = ExitCode::FAILURE;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let revision = object.meta().resource_version.unwrap_or(0);
                    match groups.iter_mut().find(|g| g.0 == *kind) {
                        Some(group) => {
                            group.1.push(object);
                            group.3 = group.3.max(revision);
                        }
                        None => groups.push((*kind, vec![object], single, revision)),
                    }
                }
                groups
            }
        };
        if self.watch && groups.len() > 1 {
            bail!("-w follows one kind at a time");
        }
        let mut printed_any = false;
        for (kind, objects, single, _) in &groups {
            if objects.is_empty() {
                continue;
            }
            if printed_any && matches!(format, Format::Table | Format::Wide) {
                println!();
            }
            // A watch fills a template from each object, as it will each change.
            let each = self.watch && matches!(format, Format::JsonPath(_));
            match each {
                true => objects
                    .iter()
                    .for_each(|o| print!("{}", self.render(*kind, std::slice::from_ref(o), &format, true))),
                false => print!("{}", self.render(*kind, objects, &format, *single)),
            }
            printed_any = true;
        }
        if !printed_any && !self.watch && matches!(targets, Targets::Kind(_)) {
            eprintln!("no {} found", groups[0].0.plural());
        }
        if self.watch {
            let Some((kind, _, _, revision)) = groups.into_iter().next() else { bail!("nothing to watch") };
            // Named objects are watched from the kind's revision now, not from each one's own
            // (which may be older than the history a watch can resume from).
            let revision = match &targets {
                Targets::Named(_) => client.list(kind, ns_of(kind), None).await?.resource_version.max(revision),
                Targets::Kind(_) => revision,
            };
            let names: Option<Vec<String>> = match &targets {
                Targets::Named(named) => Some(named.iter().map(|(_, n)| n.clone()).collect()),
                Targets::Kind(_) => None,
            };
            return self.follow(&client, kind, ns_of(kind), names, revision, &format).await;
        }
        Ok(code)
    }

    /// Prints each change to objects of `kind` after `revision` (of `names` only, if given, and
    /// of those the selector matches), one row or document each, until the watch ends.
    async fn follow(
        &self,
        client: &Client,
        kind: Kind,
        namespace: Option<&str>,
        names: Option<Vec<String>>,
        revision: u64,
        format: &Format,
    ) -> anyhow::Result<ExitCode> {
        let selector: Option<LabelSelector> = self.selector.as_deref().map(str::parse).transpose()?;
        let mut events = Box::pin(client.watch(kind, namespace, revision).await?);
        let options = TableOptions { no_headers: true, ..self.table_options(format) };
        while let Some(event) = events.next().await {
            let object = event?.object;
            let meta = object.meta();
            if names.as_ref().is_some_and(|n| !n.iter().any(|n| n.as_str() == meta.name.as_str()))
                || selector.as_ref().is_some_and(|s| !s.matches(&meta.labels))
            {
                continue;
            }
            let single = std::slice::from_ref(&object);
            let text = match format {
                Format::Table | Format::Wide => output::table(kind, single, options),
                _ => self.render(kind, single, format, true),
            };
            print!("{text}");
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        bail!("the watch ended")
    }
}
