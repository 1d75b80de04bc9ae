//! `-o jsonpath=TEMPLATE`, read as kubectl reads it: text with `{EXPR}` parts, each EXPR a path
//! into the object (`{.metadata.name}`, `{.items[*].metadata.name}`, `{.spec.ports[0].port}`;
//! RFC 9535 JSONPath with the leading `$` implied) or a JSON string (`{"\n"}`). What a path
//! finds is printed, several matches separated by spaces, strings bare and anything else as
//! JSON. kubectl's `{range}`...`{end}` is not supported, and says so.

use anyhow::{Context, bail};
use serde_json::Value;
use serde_json_path::JsonPath;

/// A parsed template.
#[derive(Debug)]
pub struct Template(Vec<Part>);

#[derive(Debug)]
enum Part {
    Text(String),
    Path(JsonPath),
}

/// Parses `template`.
pub fn parse(template: &str) -> anyhow::Result<Template> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').with_context(|| format!("jsonpath {template:?}: a {{ with no }}"))?;
        let expr = rest[open + 1..open + close].trim();
        if expr.starts_with('"') {
            let text: String =
                serde_json::from_str(expr).with_context(|| format!("jsonpath {template:?}: {expr} is not a string"))?;
            parts.push(Part::Text(text));
        } else if expr.starts_with("range") || expr == "end" {
            bail!("jsonpath {template:?}: {{{expr}}} is not supported (use {{.items[*].field}})");
        } else {
            let path = match expr {
                "" | "." | "$" => "$".to_owned(),
                e if e.starts_with('$') => e.to_owned(),
                e if e.starts_with('.') || e.starts_with('[') => format!("${e}"),
                e => format!("$.{e}"),
            };
            let parsed =
                JsonPath::parse(&path).map_err(|e| anyhow::anyhow!("jsonpath {template:?}: {{{expr}}}: {e}"))?;
            parts.push(Part::Path(parsed));
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Template(parts))
}

impl Template {
    /// The template filled from `value`.
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Path(path) => {
                    let found: Vec<String> = path
                        .query(value)
                        .all()
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    out.push_str(&found.join(" "));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_strings_and_text_are_filled_as_kubectl_fills_them() {
        let object = serde_json::json!({
            "metadata": {"name": "web", "labels": {"app": "shop"}},
            "spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]},
        });
        let list = serde_json::json!({"items": [object.clone(), {"metadata": {"name": "db"}}]});
        let fill = |t: &str, v: &Value| parse(t).unwrap().render(v);
        assert_eq!(fill("{.metadata.name}", &object), "web");
        assert_eq!(fill("{.spec.replicas}", &object), "3");
        assert_eq!(fill("name={.metadata.name}{\"\\n\"}", &object), "name=web\n");
        assert_eq!(fill("{.spec.ports[*].port}", &object), "80 443");
        assert_eq!(fill("{.metadata.labels}", &object), r#"{"app":"shop"}"#);
        assert_eq!(fill("{.items[*].metadata.name}", &list), "web db");
        assert_eq!(fill("{.missing}", &object), "");
        assert!(parse("{.metadata.name").unwrap_err().to_string().contains("no }"));
        assert!(parse("{range .items[*]}{.x}{end}").unwrap_err().to_string().contains("not supported"));
        assert!(parse("{.a[}").is_err());
    }
}
