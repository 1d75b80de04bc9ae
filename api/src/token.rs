//! Tenant and node tokens: bearer tokens limited to a set of namespaces, or to one node. The admin issues them; the
//! secret is shown once, and the control plane keeps only its sha256.

use serde::{Deserialize, Serialize};

use crate::name::Name;

/// What the admin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRequest {
    /// A name to list and revoke the token by.
    pub name: Name,
    /// The namespaces the token may use (and nothing else).
    #[serde(default)]
    pub namespaces: Vec<Name>,
    /// A node token: it acts as the Node called `name`, and may touch only that Node and the
    /// Instances bound to it (what `shoal node --join` takes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node: bool,
}

/// A token as stored and listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its name.
    pub name: Name,
    /// The namespaces it may use.
    #[serde(default)]
    pub namespaces: Vec<Name>,
    /// Whether it is a node token (acting as the Node called `name`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node: bool,
    /// When it was issued (RFC 3339).
    pub created_at: String,
}

/// Who the server takes the caller to be (`GET /api/v1/whoami`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "role")]
pub enum Identity {
    /// The cluster administrator.
    Admin,
    /// A tenant limited to some namespaces.
    Tenant {
        /// The token's name.
        name: String,
        /// Its namespaces.
        namespaces: Vec<String>,
    },
    /// A node agent.
    Node {
        /// The Node it acts as.
        name: String,
    },
}

/// The answer to an issue request: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuedToken {
    /// What was issued.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token.
    pub token: String,
}

/// Compares secrets in time independent of where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
