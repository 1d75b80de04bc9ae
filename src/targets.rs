//! Naming objects on the command line as kubectl does: `KIND NAME...`, or `KIND/NAME...`
//! (kinds may then differ), kinds by plural, singular or short name.

use anyhow::bail;
use shoal_api::Kind;

/// What the arguments name: each object's kind and name, or a kind alone (every object of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every object of a kind (the names are given some other way: a selector, `--all`).
    Kind(Kind),
    /// These objects.
    Named(Vec<(Kind, String)>),
}

fn kind(name: &str) -> anyhow::Result<Kind> {
    match Kind::parse(name) {
        Some(kind) => Ok(kind),
        None => {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
            bail!("unknown kind {name:?}: expected one of {}", kinds.join(", "))
        }
    }
}

/// Reads `args`: `KIND [NAME...]` or `KIND/NAME...`.
pub fn parse(args: &[String]) -> anyhow::Result<Targets> {
    let Some(first) = args.first() else { bail!("name a kind, e.g. `workloads`, or `workload/NAME`") };
    if first.contains('/') {
        let named = args
            .iter()
            .map(|arg| match arg.split_once('/') {
                Some((k, name)) if !name.is_empty() && !name.contains('/') => Ok((kind(k)?, name.to_owned())),
                _ => bail!("{arg:?}: expected KIND/NAME when the first is KIND/NAME"),
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok(Targets::Named(named));
    }
    let kind = kind(first)?;
    match &args[1..] {
        [] => Ok(Targets::Kind(kind)),
        names => {
            if let Some(bad) = names.iter().find(|n| n.contains('/')) {
                bail!("{bad:?}: after a kind come names only (or write every one as KIND/NAME)");
            }
            Ok(Targets::Named(names.iter().map(|n| (kind, n.clone())).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn kinds_names_and_kind_slash_name_are_read_as_kubectl_reads_them() {
        assert_eq!(parse(&args(&["wl"])).unwrap(), Targets::Kind(Kind::Workload));
        assert_eq!(
            parse(&args(&["workloads", "a", "b"])).unwrap(),
            Targets::Named(vec![(Kind::Workload, "a".into()), (Kind::Workload, "b".into())])
        );
        assert_eq!(
            parse(&args(&["workload/a", "svc/b"])).unwrap(),
            Targets::Named(vec![(Kind::Workload, "a".into()), (Kind::Service, "b".into())])
        );
        assert!(parse(&args(&["workload/a", "b"])).unwrap_err().to_string().contains("KIND/NAME"));
        assert!(parse(&args(&["workloads", "svc/b"])).unwrap_err().to_string().contains("names only"));
        assert!(parse(&args(&["gadgets"])).unwrap_err().to_string().contains("unknown kind"));
        assert!(parse(&args(&[])).is_err());
    }
}
