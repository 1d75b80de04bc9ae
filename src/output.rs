//! Printing objects: aligned tables (one row per object, columns per kind), YAML, JSON,
//! `KIND/NAME` names, and jsonpath templates.

use std::time::{Duration, SystemTime};

use shoal_api::resources::instance::Phase;
use shoal_api::{AnyObject, Kind};

/// How `get` prints (`-o`).
#[derive(Debug, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// Wide table: more columns.
    Wide,
    /// YAML documents.
    Yaml,
    /// JSON.
    Json,
    /// `kind/name`, one a line.
    Name,
    /// A jsonpath template, filled from each object (or from the list).
    JsonPath(crate::jsonpath::Template),
}

impl Format {
    /// Reads `-o`: `table`, `wide`, `yaml`, `json`, `name` or `jsonpath=TEMPLATE`.
    pub fn parse(text: &str) -> anyhow::Result<Format> {
        Ok(match text {
            "table" => Format::Table,
            "wide" => Format::Wide,
            "yaml" => Format::Yaml,
            "json" => Format::Json,
            "name" => Format::Name,
            other => match other.strip_prefix("jsonpath=") {
                Some(template) => Format::JsonPath(crate::jsonpath::parse(template)?),
                None => anyhow::bail!("-o {other:?}: expected table, wide, yaml, json, name or jsonpath=TEMPLATE"),
            },
        })
    }
}

/// What a table shows besides the kind's columns.
#[derive(Debug, Default, Clone, Copy)]
pub struct TableOptions {
    /// More columns.
    pub wide: bool,
    /// A LABELS column.
    pub show_labels: bool,
    /// No header row.
    pub no_headers: bool,
}

/// `kind/name`, as `-o name` prints an object.
pub fn name(object: &AnyObject) -> String {
    format!("{}/{}", object.kind().as_str().to_lowercase(), object.meta().name)
}

/// `5s`, `3m`, `2h`, `4d`: how long ago an RFC 3339 time was.
pub fn age(timestamp: Option<&str>) -> String {
    let Some(then) = timestamp.and_then(|t| humantime::parse_rfc3339(t).ok()) else { return "<unknown>".into() };
    let secs = SystemTime::now().duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn header(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut h = match kind {
        Kind::Namespace => vec!["NAME", "INSTANCES", "MEMORY", "CPU", "MODULES", "AGE"],
        Kind::Workload => vec!["NAMESPACE", "NAME", "TYPE", "READY", "UP-TO-DATE", "AGE"],
        Kind::Instance => vec!["NAMESPACE", "NAME", "WORKLOAD", "NODE", "PHASE", "READY", "RESTARTS", "AGE"],
        Kind::Service => vec!["NAMESPACE", "NAME", "SELECTOR", "PORTS", "ENDPOINTS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ADDRESS", "AGE"],
        Kind::Event => vec!["NAMESPACE", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        Kind::Secret | Kind::Config => vec!["NAMESPACE", "NAME", "KEYS", "AGE"],
        Kind::CronJob => vec!["NAMESPACE", "NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST-SCHEDULE", "AGE"],
        Kind::Job => vec!["NAMESPACE", "NAME", "STATUS", "COMPLETIONS", "ACTIVE", "FAILED", "AGE"],
    };
    if wide {
        h.push("RESOURCE-VERSION");
    }
    h
}

/// Bytes in the largest binary unit they fill, to one decimal (`100.1Mi`).
pub fn rounded_bytes(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit {
            let value = bytes as f64 / unit as f64;
            return if bytes.is_multiple_of(unit) {
                format!("{}{suffix}", bytes / unit)
            } else {
                format!("{value:.1}{suffix}")
            };
        }
    }
    bytes.to_string()
}

fn row(object: &AnyObject, options: TableOptions) -> Vec<String> {
    let wide = options.wide;
    let meta = object.meta();
    let ns = object.namespace().unwrap_or("").to_owned();
    let age = age(meta.creation_timestamp.as_deref());
    let name = meta.name.to_string();
    let mut r = match object {
        AnyObject::Namespace(n) => {
            // Usage, and the quota's bound after a slash when there is one.
            let used = n.status.clone().unwrap_or_default().usage;
            let quota = n.spec.quota.clone().unwrap_or_default();
            let pair = |used: Option<String>, max: Option<String>| match max {
                Some(max) => format!("{}/{max}", used.unwrap_or_else(|| "0".into())),
                None => used.unwrap_or_else(|| "0".into()),
            };
            vec![
                name,
                pair(used.instances.map(|v| v.to_string()), quota.instances.map(|v| v.to_string())),
                pair(used.memory.map(|v| v.to_string()), quota.memory.map(|v| v.to_string())),
                pair(used.cpu.map(|v| v.to_string()), quota.cpu.map(|v| v.to_string())),
                pair(used.module_bytes.map(|v| rounded_bytes(v.0)), quota.module_bytes.map(|v| v.to_string())),
                age,
            ]
        }
        AnyObject::Workload(w) => {
            let s = w.status.clone().unwrap_or_default();
            vec![
                ns,
                name,
                format!("{:?}", w.spec.type_).to_lowercase(),
                // An autoscaled workload's wanted count is the autoscaler's.
                format!("{}/{}", s.ready_replicas, s.desired_replicas.unwrap_or(w.spec.replicas)),
                s.updated_replicas.to_string(),
                age,
            ]
        }
        AnyObject::Instance(i) => {
            let s = i.status.clone().unwrap_or_default();
            let phase = if i.spec.node.is_none() && s.phase == Phase::Pending {
                "Pending".into()
            } else if !s.reason.is_empty() {
                // Why it is stuck says more than the phase, e.g. `ValuesUnavailable`.
                s.reason.clone()
            } else {
                format!("{:?}", s.phase)
            };
            vec![
                ns,
                name,
                i.spec.workload.as_ref().map_or("<none>".into(), |w| w.to_string()),
                i.spec.node.as_ref().map_or("<none>".into(), |n| n.to_string()),
                phase,
                s.ready.to_string(),
                s.restarts.to_string(),
                age,
            ]
        }
        AnyObject::Service(s) => {
            let selector = match &s.spec.selector.workload {
                Some(w) => format!("workload={w}"),
                None => s.spec.selector.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            };
            let ports = s.spec.ports.iter().map(|p| format!("{}:{}", p.name, p.port)).collect::<Vec<_>>().join(",");
            let endpoints = s.status.as_ref().map_or(0, |st| st.endpoints.len());
            vec![ns, name, selector, ports, endpoints.to_string(), age]
        }
        AnyObject::Node(n) => {
            let ready = n.status.as_ref().and_then(|s| s.ready()).map_or("Unknown".into(), |c| {
                if c.status == "True" { "Ready".to_owned() } else { "NotReady".to_owned() }
            });
            vec![name, ready, n.spec.address.clone(), age]
        }
        AnyObject::Secret(sec) => vec![ns, name, sec.spec.data.len().to_string(), age],
        AnyObject::Config(c) => vec![ns, name, c.spec.data.len().to_string(), age],
        AnyObject::CronJob(c) => {
            let s = c.status.clone().unwrap_or_default();
            let last = s
                .last_schedule_time
                .as_deref()
                .map_or("<none>".to_owned(), |t| format!("{} ago", crate::output::age(Some(t))));
            vec![ns, name, c.spec.schedule.clone(), c.spec.suspend.to_string(), s.active.len().to_string(), last, age]
        }
        AnyObject::Job(j) => {
            let s = j.status.clone().unwrap_or_default();
            let state = j.finished().map_or("Running".to_owned(), |c| c.type_.clone());
            let completions = format!("{}/{}", s.succeeded, j.spec.completions);
            vec![ns, name, state, completions, s.active.to_string(), s.failed.to_string(), age]
        }
        AnyObject::Event(e) => {
            let o = &e.spec.involved_object;
            vec![
                ns,
                format!("{:?}", e.spec.type_),
                e.spec.reason.clone(),
                format!("{}/{}", o.kind.plural(), o.name),
                e.spec.count.to_string(),
                e.spec.message.clone(),
            ]
        }
    };
    if wide {
        r.push(meta.resource_version.map_or(String::new(), |v| v.to_string()));
    }
    if options.show_labels {
        let labels: Vec<String> = meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        r.push(if labels.is_empty() { "<none>".into() } else { labels.join(",") });
    }
    r
}

/// Renders objects of one kind as an aligned table.
pub fn table(kind: Kind, objects: &[AnyObject], options: TableOptions) -> String {
    let mut head: Vec<String> = header(kind, options.wide).into_iter().map(str::to_owned).collect();
    if options.show_labels {
        head.push("LABELS".into());
    }
    let mut rows = vec![head];
    rows.extend(objects.iter().map(|o| row(o, options)));
    if options.no_headers {
        rows.remove(0);
    }
    align(rows)
}

/// Rows (the first a header) as aligned columns.
pub fn align(rows: Vec<Vec<String>>) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let widths: Vec<usize> =
        (0..first.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Renders objects as YAML documents separated by `---`.
pub fn yaml(objects: &[AnyObject]) -> String {
    objects.iter().map(|o| serde_yaml::to_string(o).expect("objects serialize")).collect::<Vec<_>>().join("---\n")
}

/// Renders one object, or a list of them, as JSON.
pub fn json(objects: &[AnyObject], single: bool) -> String {
    let value = if single {
        serde_json::to_value(&objects[0])
    } else {
        serde_json::to_value(serde_json::json!({ "items": objects }))
    };
    serde_json::to_string_pretty(&value.expect("objects serialize")).expect("json values serialize")
}
