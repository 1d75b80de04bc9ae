//! Reading manifests: files or directories of multi-document YAML, each document one object.
//!
//! Every error names the file, line, column and field path, e.g.
//! `app.yaml:7:13: spec.replicas: invalid type: string "three", expected u32`.
//!
//! `serde_yaml` is only used here: documents are split on `---` lines first (so that each keeps
//! its line offset), the `kind` is read, and then the document is parsed again straight into its
//! typed resource with `serde_path_to_error`, so that the location and the field path come from
//! the parser itself rather than from a second, looser pass.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::meta::{FieldError, Kind};
use crate::object::{AnyObject, deserialize_kind};

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub file: PathBuf,
    /// 1-based line where its document starts.
    pub line: usize,
    /// The object.
    pub object: AnyObject,
    /// The document's text, to locate fields in later errors (e.g. a missing module file).
    text: String,
}

impl Manifest {
    /// An error about the field at `path` of this manifest, located in its file.
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> ManifestError {
        let (line, column) = locate_path(&self.text, path).unwrap_or((0, 1));
        ManifestError {
            file: self.file.clone(),
            line: self.line + line,
            column,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// What is wrong with a manifest, and exactly where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path, e.g. `spec.replicas`; empty when the error is about the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// All the errors found in a set of manifests (every document is checked, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads a manifest file, or every `.yaml`/`.yml` file under a directory (sorted by path).
pub fn load(path: &Path) -> Result<Vec<Manifest>, ManifestErrors> {
    let (manifests, errors) = load_partial(path);
    if errors.is_empty() { Ok(manifests) } else { Err(ManifestErrors(errors)) }
}

/// Like [`load`], but keeps what parsed beside the errors, so that a caller can go on checking
/// the good documents and report every problem at once.
pub fn load_partial(path: &Path) -> (Vec<Manifest>, Vec<ManifestError>) {
    let files = match manifest_files(path) {
        Ok(files) => files,
        Err(e) => return (Vec::new(), vec![io_error(path, e)]),
    };
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse_str(&file, &text) {
                Ok(found) => manifests.extend(found),
                Err(ManifestErrors(found)) => errors.extend(found),
            },
            Err(e) => errors.push(io_error(&file, e)),
        }
    }
    (manifests, errors)
}

fn io_error(file: &Path, e: std::io::Error) -> ManifestError {
    ManifestError { file: file.to_owned(), line: 0, column: 0, path: String::new(), message: e.to_string() }
}

fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Parses the multi-document YAML `text`, naming `file` in errors.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Manifest>, ManifestErrors> {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for (first_line, doc) in split_documents(text) {
        match parse_document(doc) {
            Ok(Some(object)) => {
                manifests.push(Manifest { file: file.to_owned(), line: first_line, object, text: doc.to_owned() })
            }
            Ok(None) => {}
            Err(e) => errors.push(ManifestError {
                file: file.to_owned(),
                line: first_line + e.line,
                column: e.column,
                path: e.path,
                message: e.message,
            }),
        }
    }
    if errors.is_empty() { Ok(manifests) } else { Err(ManifestErrors(errors)) }
}

/// Splits on `---` lines; yields each document with the 1-based line number its text starts on.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." || trimmed.starts_with("--- ") {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

/// An error inside one document; `line` is 0-based from the document's first line.
struct DocError {
    line: usize,
    column: usize,
    path: String,
    message: String,
}

#[derive(Deserialize)]
struct TypeMeta {
    kind: Option<serde_yaml::Value>,
}

fn parse_document(doc: &str) -> Result<Option<AnyObject>, DocError> {
    let is_blank = doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    });
    if is_blank {
        return Ok(None);
    }
    let at_start = |path: &str, message: String| DocError { line: 0, column: 1, path: path.to_owned(), message };
    let type_meta: TypeMeta = match serde_yaml::from_str::<serde_yaml::Value>(doc) {
        Err(e) => return Err(yaml_error("", &e)),
        Ok(serde_yaml::Value::Mapping(_)) => serde_yaml::from_str(doc).map_err(|e| yaml_error("", &e))?,
        Ok(_) => return Err(at_start("", "expected a mapping with apiVersion, kind, metadata and spec".into())),
    };
    let located = |path: &str, message: String| {
        let (line, column) = locate_path(doc, path).unwrap_or((0, 1));
        DocError { line, column, path: path.to_owned(), message }
    };
    let kind_name = match type_meta.kind {
        None => return Err(at_start("kind", "missing field `kind`".into())),
        Some(serde_yaml::Value::String(s)) => s,
        Some(other) => return Err(located("kind", format!("expected a string, found {other:?}"))),
    };
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_name) else {
        let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(located("kind", format!("unknown kind {kind_name:?}, expected one of {}", known.join(", "))));
    };
    let object = deserialize_kind(kind, serde_yaml::Deserializer::from_str(doc)).map_err(|e| {
        let path = e.path().to_string();
        yaml_error(if path == "." { "" } else { &path }, e.inner())
    })?;
    object.validate().map_err(|FieldError { path, message }| located(&path, message))?;
    Ok(Some(object))
}

fn yaml_error(path: &str, e: &serde_yaml::Error) -> DocError {
    let (line, column) = e.location().map_or((0, 1), |l| (l.line().saturating_sub(1), l.column()));
    DocError { line, column, path: path.to_owned(), message: message_without_location(e) }
}

/// `serde_yaml` puts its own path in front of its messages and " at line L column C" after
/// them; both are reported separately (the path from `serde_path_to_error`, which also names the
/// unknown field itself), so they are cut here.
fn message_without_location(e: &serde_yaml::Error) -> String {
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ")
        && message[i..].contains(" column ")
    {
        message.truncate(i);
    }
    let is_path = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._[]-".contains(&b));
    match message.split_once(": ") {
        Some((prefix, rest)) if is_path(prefix) && !rest.is_empty() => rest.to_owned(),
        _ => message,
    }
}

/// Finds the key of a dotted field path (`spec.rollout.maxSurge`, `spec.env[1].name`) in a YAML
/// document written in block style. Returns a 0-based line and a 1-based column.
fn locate_path(doc: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut from = 0;
    let mut min_indent = 0;
    let mut found = None;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let (line, indent) = (from..lines.len()).find_map(|i| {
            let l = lines[i];
            let indent = l.len() - l.trim_start_matches([' ', '-']).len();
            let body = &l[indent..];
            (indent >= min_indent && body.strip_prefix(key).is_some_and(|r| r.starts_with(':'))).then_some((i, indent))
        })?;
        found = Some((line, indent + 1));
        from = line + 1;
        min_indent = indent + 1;
        if let Some(n) = index {
            // Skip to the n-th list item below the key.
            let items: Vec<usize> = (from..lines.len()).filter(|&i| lines[i].trim_start().starts_with("- ")).collect();
            let item = *items.get(n)?;
            found = Some((item, lines[item].len() - lines[item].trim_start().len() + 1));
            from = item;
            min_indent = lines[item].len() - lines[item].trim_start().len();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse_str(Path::new("app.yaml"), text).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    }

    const GOOD: &str = "\
apiVersion: shoal.dev/v1
kind: Namespace
metadata:
  name: shop
---
# the app
apiVersion: shoal.dev/v1
kind: Workload
metadata:
  name: hello
  namespace: shop
  labels: {app: hello}
spec:
  module: ./hello.wasm
  replicas: 3
  resources: {memory: 64Mi, cpu: 250m}
";

    #[test]
    fn parses_multiple_documents_with_their_lines() {
        let found = parse_str(Path::new("app.yaml"), GOOD).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].object.kind(), Kind::Namespace);
        assert_eq!(found[1].line, 6);
        let AnyObject::Workload(w) = &found[1].object else { panic!("not a workload") };
        assert_eq!(w.spec.replicas, 3);
        assert_eq!(w.spec.resources.memory, Some(crate::quantity::Memory(64 << 20)));
        assert_eq!(found[1].error_at("spec.module", "x").to_string(), "app.yaml:14:3: spec.module: x");
    }

    #[test]
    fn wrong_type_names_line_column_and_field() {
        let text = GOOD.replace("replicas: 3", "replicas: three");
        assert_eq!(errors(&text), ["app.yaml:15:13: spec.replicas: invalid type: string \"three\", expected u32"]);
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let text = GOOD.replace("replicas: 3", "replica: 3");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("app.yaml:15:3: spec.replica: unknown field `replica`, expected one of"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_quantity_and_bad_name_are_reported_at_their_value() {
        let errs = errors(&GOOD.replace("64Mi", "64Mx"));
        assert!(
            errs[0].starts_with("app.yaml:16:23: spec.resources.memory: invalid memory quantity \"64Mx\""),
            "{errs:?}"
        );
        let errs = errors(&GOOD.replace("name: hello", "name: Hello_World"));
        assert!(errs[0].starts_with("app.yaml:10:9: metadata.name: invalid name \"Hello_World\""), "{errs:?}");
    }

    #[test]
    fn unknown_kind_and_missing_kind() {
        let errs = errors(&GOOD.replace("kind: Workload", "kind: Deployment"));
        assert!(errs[0].starts_with("app.yaml:8:1: kind: unknown kind \"Deployment\""), "{errs:?}");
        let errs = errors("apiVersion: shoal.dev/v1\nmetadata: {name: x}\n");
        assert_eq!(errs, ["app.yaml:1:1: kind: missing field `kind`"]);
    }

    #[test]
    fn cross_field_rules_are_located() {
        let text = format!("{GOOD}  rollout: {{maxSurge: 0, maxUnavailable: 0}}\n");
        let errs = errors(&text);
        assert!(errs[0].starts_with("app.yaml:17:3: spec.rollout: maxSurge and maxUnavailable"), "{errs:?}");
    }

    #[test]
    fn syntax_errors_are_located() {
        let errs = errors("apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: [x\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("app.yaml:"), "{errs:?}");
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let errs = errors(&GOOD.replacen("shoal.dev/v1", "v2", 1));
        assert!(errs[0].starts_with("app.yaml:1:13: apiVersion: unsupported apiVersion \"v2\""), "{errs:?}");
    }
}
