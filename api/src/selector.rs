//! Label selectors, as `kubectl -l` writes them: `app=hello,tier!=db,canary,!legacy`.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement on an object's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value`: absent, or a different value.
    NotEquals(String, String),
    /// `key`: present.
    Exists(String),
    /// `!key`: absent.
    NotExists(String),
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Why a selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    input: String,
    reason: String,
}

/// Whether `value` may be a label's value in a selector (as Kubernetes has them: empty, or at
/// most 63 letters, digits, `-`, `_` and `.`).
fn valid_value(value: &str) -> bool {
    value.len() <= 63 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError { input: input.to_owned(), reason };
        let valid_key = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let mut requirements = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(err(format!("bad key {key:?} in {part:?}")));
            }
            if let Requirement::Equals(_, value) | Requirement::NotEquals(_, value) = &requirement
                && !valid_value(value)
            {
                return Err(err(format!(
                    "bad value {value:?} in {part:?}: at most 63 letters, digits, '-', '_' and '.'"
                )));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn all_operators() {
        let s: LabelSelector = "app=hello,tier!=db,canary,!legacy".parse().unwrap();
        assert!(s.matches(&labels(&[("app", "hello"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("app", "hello")])));
        assert!(!s.matches(&labels(&[("app", "hello"), ("canary", ""), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "hello"), ("canary", ""), ("legacy", "1")])));
        assert_eq!(s.to_string(), "app=hello,tier!=db,canary,!legacy");
        assert!("".parse::<LabelSelector>().unwrap().matches(&labels(&[])));
        assert!("a b=c".parse::<LabelSelector>().is_err());
    }
}
