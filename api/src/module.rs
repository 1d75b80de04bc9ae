//! Module records: what the API says about a module uploaded to a namespace. The bytes are
//! content-addressed and stored once however many namespaces upload them; each namespace that
//! did holds a record, and is charged its size against `spec.quota.moduleBytes`.

use serde::{Deserialize, Serialize};

/// Key prefix ("kind") of module records in the store: `modules/<namespace>/<sha256 hex>`.
pub const MODULES: &str = "modules";

/// The most module records one namespace holds: each upload's quota check, and a namespace's
/// listing, read them all.
pub const MAX_MODULES_PER_NAMESPACE: usize = 1000;

/// A module uploaded to a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRecord {
    /// sha256 of the bytes, 64 lower-case hex digits.
    pub digest: String,
    /// Length of the bytes.
    pub size: u64,
    /// When the namespace first uploaded it (RFC 3339).
    pub uploaded: String,
    /// The store revision of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<u64>,
}
