//! Secret: named values a workload takes as env, files or `wasi:config` (like Kubernetes'
//! Secret). The API server encrypts each value before it is written to the store, and answers
//! reads with [`REDACTED`] in place of each value unless asked (`?showSecrets=true`) by a
//! token for the Secret's namespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{FieldError, Kind, Object, Resource};

/// Marker for the Secret kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretKind;

/// A Secret object.
pub type Secret = Object<SecretKind>;

/// What a read shows in place of a value it does not reveal. A write that carries it back (a
/// redacted read, edited and applied) is refused rather than taken as the new value.
pub const REDACTED: &str = "<redacted>";

/// The most bytes of keys and values one Secret or Config holds (as Kubernetes bounds its
/// Secrets and ConfigMaps).
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// The most keys one Secret or Config holds.
pub const MAX_KEYS: usize = 1000;

/// The longest key.
pub const MAX_KEY_LEN: usize = 253;

impl Resource for SecretKind {
    const KIND: Kind = Kind::Secret;
    type Spec = DataSpec;
    type Status = ();

    fn validate(object: &Secret) -> Result<(), FieldError> {
        validate_data(&object.spec.data)?;
        match object.spec.data.iter().find(|(_, v)| v.as_str() == REDACTED) {
            Some((key, _)) => Err(FieldError::new(
                format!("spec.data.{key}"),
                format!("{REDACTED} is what a read shows in place of the value; write the value itself"),
            )),
            None => Ok(()),
        }
    }
}

/// The spec of a Secret or a Config: key → value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataSpec {
    /// The values, by key. A key is also the file name when the values are mounted as files.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// Whether `key` may name a value: letters, digits, `-`, `_` and `.` (it becomes a file name),
/// not `.` or `..`, at most [`MAX_KEY_LEN`] bytes.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The checks a Secret's and a Config's data share: key names, count and total size.
pub fn validate_data(data: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if data.len() > MAX_KEYS {
        return Err(FieldError::new("spec.data", format!("{} keys: at most {MAX_KEYS}", data.len())));
    }
    if let Some(key) = data.keys().find(|k| !is_valid_key(k)) {
        return Err(FieldError::new(
            format!("spec.data.{key}"),
            format!("keys are letters, digits, '-', '_' and '.' (not . or ..), at most {MAX_KEY_LEN} bytes"),
        ));
    }
    let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_DATA_BYTES {
        return Err(FieldError::new(
            "spec.data",
            format!("{bytes} bytes of keys and values: at most {MAX_DATA_BYTES} (1 MiB)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_file_names_and_the_data_is_bounded() {
        for good in ["password", "tls.crt", "a_b-c"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"k".repeat(254)] {
            assert!(!is_valid_key(bad), "{bad}");
        }
        let big = BTreeMap::from([("k".to_owned(), "v".repeat(MAX_DATA_BYTES))]);
        assert!(validate_data(&big).unwrap_err().message.contains("at most"));
        let many: BTreeMap<String, String> = (0..=MAX_KEYS).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_data(&many).is_err());
    }
}
