//! Module records: what the API says about a module uploaded to a namespace. The bytes are
//! content-addressed and stored once however many namespaces upload them; each namespace that
//! did holds a record, and is charged its size against `spec.quota.moduleBytes`.

use serde::{Deserialize, Serialize};

use crate::meta::FieldError;

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

/// How a module in a registry is named: `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST`.
/// The API server pulls it (from a registry the cluster allows) into the namespace and stores
/// the object with `sha256:<digest>` in its place, naming the source in
/// [`MODULE_SOURCE_ANNOTATION`].
pub const OCI_SCHEME: &str = "oci://";

/// The annotation that says which registry reference (with the manifest's digest) a module was
/// pulled from. The API server's own: a write may carry it back beside the module it was set
/// with; otherwise it is dropped.
pub const MODULE_SOURCE_ANNOTATION: &str = "shoal.dev/module-source";

/// The config media type of a wasm OCI artifact (the CNCF wasm OCI artifact layout).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// The media type of the one layer of a wasm OCI artifact: the module's bytes.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The longest `oci://` reference taken.
pub const MAX_REFERENCE_LEN: usize = 1024;

/// Checks a module field (`field` names it in errors): a local path (the CLI uploads it), a
/// `sha256:` digest, or an `oci://` reference; and a pull secret only beside an `oci://` one.
pub fn check_module(field: &str, module: &str, pull_secret: Option<&crate::Name>) -> Result<(), FieldError> {
    let secret_field = || field.replace("module", "modulePullSecret");
    if module.is_empty() {
        return Err(FieldError::new(field, "missing: a path to a .wasm file, a sha256: digest or an oci:// reference"));
    }
    if let Some(digest) = module.strip_prefix("sha256:")
        && !crate::digest::is_sha256_hex(digest)
    {
        return Err(FieldError::new(field, "a sha256: digest must be 64 lower-case hex digits"));
    }
    if let Some(reference) = module.strip_prefix(OCI_SCHEME) {
        if reference.is_empty() || !reference.contains('/') {
            return Err(FieldError::new(
                field,
                "an oci:// reference is oci://REGISTRY/REPOSITORY:TAG (or @sha256:...)",
            ));
        }
        if module.len() > MAX_REFERENCE_LEN {
            return Err(FieldError::new(field, format!("an oci:// reference is at most {MAX_REFERENCE_LEN} bytes")));
        }
    } else if pull_secret.is_some() {
        return Err(FieldError::new(
            secret_field(),
            "is only taken with an oci:// module (it is the registry's credentials)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_fields_take_paths_digests_and_oci_references_and_a_pull_secret_only_with_oci() {
        let secret = crate::Name::new("creds").unwrap();
        assert!(check_module("spec.module", "app.wasm", None).is_ok());
        assert!(check_module("spec.module", &format!("sha256:{}", "0".repeat(64)), None).is_ok());
        assert!(check_module("spec.module", "oci://127.0.0.1:5000/app:v1", Some(&secret)).is_ok());
        assert_eq!(check_module("spec.module", "", None).unwrap_err().path, "spec.module");
        assert!(check_module("spec.module", "sha256:abc", None).is_err());
        assert!(check_module("spec.module", "oci://", None).is_err());
        assert!(check_module("spec.module", "oci://app", None).is_err());
        let long = format!("oci://r/{}", "a".repeat(MAX_REFERENCE_LEN));
        assert!(check_module("spec.module", &long, None).is_err());
        let stray = check_module("spec.template.module", "app.wasm", Some(&secret)).unwrap_err();
        assert_eq!(stray.path, "spec.template.modulePullSecret");
    }
}
