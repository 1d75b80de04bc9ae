//! Tenant tokens: bearer tokens limited to a set of namespaces. The admin issues them; the
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
    pub namespaces: Vec<Name>,
}

/// A token as stored and listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its name.
    pub name: Name,
    /// The namespaces it may use.
    pub namespaces: Vec<Name>,
    /// When it was issued (RFC 3339).
    pub created_at: String,
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
