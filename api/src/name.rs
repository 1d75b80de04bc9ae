//! Names of objects: DNS-1123 labels, because a name ends up in DNS (`<svc>.<ns>.svc.<domain>`)
//! and in `Host` headers. Checked when a manifest or request is parsed, so a bad name is an error
//! at its field, never a surprise later.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A DNS-1123 label: 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending with an
/// alphanumeric character.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {input:?}: {reason}")]
pub struct NameError {
    input: String,
    reason: &'static str,
}

impl Name {
    /// Checks `input` and wraps it.
    pub fn new(input: impl Into<String>) -> Result<Self, NameError> {
        let input = input.into();
        let reason = if input.is_empty() {
            Some("must not be empty")
        } else if input.len() > 63 {
            Some("must be at most 63 characters (a DNS-1123 label)")
        } else if !input.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            Some("must consist of lower case letters, digits and '-' (a DNS-1123 label)")
        } else if input.starts_with('-') || input.ends_with('-') {
            Some("must start and end with a letter or digit (a DNS-1123 label)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(NameError { input, reason }),
            None => Ok(Name(input)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::checked::deserialize_checked_str(d, "a DNS-1123 label", |s| Name::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "hello", "hello-world", "a1", "0", &"x".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        for bad in ["", "Hello", "hello_world", "-a", "a-", "a.b", &"x".repeat(64)] {
            let err = Name::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid name"), "{bad}: {err}");
        }
    }
}
