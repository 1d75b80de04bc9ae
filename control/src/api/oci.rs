//! Modules from OCI registries. A Workload, Job or CronJob whose module is
//! `oci://REGISTRY/REPOSITORY:TAG` (or `...@sha256:DIGEST`) is admitted with the module pulled
//! into its namespace, as an upload would put it there (charged to the namespace, checked
//! as wasm), and `spec.module` rewritten to the digest of its bytes; the reference is kept in the
//! `shoal.dev/module-source` annotation. Nodes then fetch it from the control plane like any
//! module, and a tag that moves changes nothing that runs until the object is written again.
//!
//! The artifact is read as the CNCF wasm OCI artifact layout describes it: an image manifest
//! with one layer of `application/wasm` (the module's bytes), as `shoal push` writes it.
//!
//! Fences, since a tenant names the reference:
//! - only registries the cluster's admin allows (`shoal control --allow-registry HOST[:PORT]`)
//!   are contacted, so no tenant can make the control plane fetch an address of its choosing;
//! - credentials come from a Secret of the object's own namespace, and every pull gets a client
//!   of its own: oci-client keeps tokens per registry, and a shared client would lend one
//!   tenant's login to another's pull;
//! - the manifest has a deadline, the layer's declared size is checked against the module limit
//!   and the namespace's quota before a byte of it is fetched, its bytes must come at 1 MiB/s
//!   and may not exceed what the manifest declared; a pull holds one of the tenant's upload
//!   slots;
//! - a layer that lists `urls` (a "foreign" layer, fetched from wherever they point) is
//!   refused.
//!
//! An allowed registry is trusted as far as where it sends the puller: its token service and
//! its redirects are followed (as every registry client does), to any address. What a tenant
//! hears of a failure is its status and URL, never the body of the answer. Allow only
//! registries whose operators are trusted, and that want credentials for anything private:
//! the allow-list is per registry, so any tenant may name any repository the control plane
//! itself can read there.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use shoal_api::meta::FieldError;
use shoal_api::module::{OCI_SCHEME, WASM_LAYER_MEDIA_TYPE};
use shoal_api::quantity::Memory;
use shoal_api::resources::secret::Secret;
use shoal_api::{Kind, Name, Reason};

use super::MAX_MODULE_BYTES;
use super::auth::Principal;
use super::error::ApiError;
use super::per_principal::PerPrincipal;
use crate::blobs::Blobs;
use crate::sealing::Sealer;
use crate::store::{ObjectKey, Store};

/// The registries the control plane may pull modules from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    /// `HOST[:PORT]` of each registry pulls may name; none by default.
    pub allowed: Vec<String>,
    /// Those of them spoken to over plain HTTP (a registry on loopback, in a test).
    pub plain_http: Vec<String>,
}

impl Registries {
    /// The registries `allowed` over HTTPS and `insecure` over plain HTTP, each `HOST[:PORT]`
    /// as a reference names it (lower-cased); anything else is refused, so that an entry that
    /// could never match (`index.docker.io` for `docker.io`, a scheme, a path) is told at once.
    pub fn new(allowed: &[String], insecure: &[String]) -> Result<Registries, String> {
        let check = |entry: &String| {
            let entry = entry.to_ascii_lowercase();
            let parsed: Result<Reference, _> = format!("{entry}/probe").parse();
            match parsed {
                Ok(reference) if reference.registry() == entry => Ok(entry),
                Ok(reference) => Err(format!(
                    "registry {entry:?}: references name it {:?} (a host needs a '.' or a port)",
                    reference.registry()
                )),
                Err(e) => Err(format!("registry {entry:?} is not HOST[:PORT]: {e}")),
            }
        };
        let insecure: Vec<String> = insecure.iter().map(check).collect::<Result<_, _>>()?;
        let mut all: Vec<String> = allowed.iter().map(check).collect::<Result<_, _>>()?;
        all.extend(insecure.iter().cloned());
        Ok(Registries { allowed: all, plain_http: insecure })
    }
}

/// The media type of a wasm layer written before the CNCF layout settled (wasm-to-oci).
const LEGACY_WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// How long a registry has to answer with the manifest.
const MANIFEST_DEADLINE: Duration = Duration::from_secs(15);

/// Pulls modules for admission.
pub struct Puller {
    /// Which registries, and how to speak to them.
    pub registries: Registries,
    /// The store (pull Secrets, module records).
    pub store: Arc<Store>,
    /// The module bytes.
    pub blobs: Arc<Blobs>,
    /// Opens pull Secrets.
    pub sealer: Arc<Sealer>,
    /// The tenants' upload slots, which pulls share.
    pub uploads: Arc<PerPrincipal>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").field("registries", &self.registries).finish_non_exhaustive()
    }
}

/// An error about `field`, as validation words them (a 422 naming it).
fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(FieldError::new(field, message))
}

/// What a pull found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// `sha256:<hex>` of the module's bytes.
    pub module: String,
    /// The reference with the manifest's digest: exactly what was pulled.
    pub source: String,
}

/// A registry's failure as the tenant is told it: what and where, never the body of an
/// answer (which, behind a redirect, could be any address's); a registry that cannot be
/// reached or fails itself is a 503 (try again), anything else a 422 on the field.
fn registry_failure(field: &str, module: &str, e: &OciDistributionError) -> ApiError {
    use OciDistributionError as E;
    let (unavailable, what) = match e {
        E::ServerError { code, url, .. } => (*code >= 500, format!("the registry answered {code} for {url}")),
        E::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            (false, format!("the registry refused {url}: {}", codes.join(", ")))
        }
        E::AuthenticationFailure(_) => (false, "the registry refused the credentials".to_owned()),
        E::ImageIndexParsingNoPlatformResolverError => {
            (false, "it names an image index: name the wasm artifact's own manifest".to_owned())
        }
        E::RequestError(e) if e.is_timeout() || e.is_connect() => {
            let how = if e.is_timeout() { "it did not answer in time" } else { "the connection failed" };
            (true, format!("could not reach the registry: {how}"))
        }
        other => {
            let mut text = other.to_string();
            text.truncate(text.floor_char_boundary(200));
            (false, text)
        }
    };
    let message = format!("pulling {module}: {what}");
    match unavailable {
        true => ApiError::new(Reason::Unavailable, format!("{field}: {message}")),
        false => invalid(field, message),
    }
}

/// A refusal about `field` (403) that names it.
fn forbidden(field: &str, message: String) -> ApiError {
    let mut error = ApiError::new(Reason::Forbidden, format!("{field}: {message}"));
    error.0.field = Some(field.to_owned());
    error
}

impl Puller {
    /// Pulls `module` (an `oci://` reference in `field` of an object of `ns`, written by
    /// `principal`) into `ns` unless it is there. A dry run reads the manifest only: it says
    /// what would be pulled, and whether it would fit, storing nothing.
    pub async fn pull(
        &self,
        principal: &Principal,
        ns: &str,
        module: &str,
        pull_secret: Option<&Name>,
        field: &str,
        dry_run: bool,
    ) -> Result<Pulled, ApiError> {
        let text = module.strip_prefix(OCI_SCHEME).unwrap_or(module);
        let reference: Reference =
            text.parse().map_err(|e| invalid(field, format!("{module:?} is not an OCI reference: {e}")))?;
        let registry = reference.registry().to_ascii_lowercase();
        // Without a '.', a ':port' or `localhost`, a first part is a path on docker.io: a
        // reference that looks like REGISTRY/REPOSITORY must be one.
        if !text.split('/').next().is_some_and(|first| first.eq_ignore_ascii_case(&registry)) {
            return Err(invalid(
                field,
                format!(
                    "{module:?}: its registry would be {registry}; write it out (oci://{registry}/{}) or name a \
                     registry host with a '.' or a port",
                    reference.repository()
                ),
            ));
        }
        if !self.registries.allowed.contains(&registry) {
            return Err(forbidden(
                field,
                format!(
                    "registry {registry} is not one this cluster pulls from (an admin allows registries with shoal \
                     control --allow-registry)"
                ),
            ));
        }
        let auth = self.auth(ns, pull_secret, field)?;
        // The tenant's slot is held from the first request to the registry: one tenant's pulls
        // cannot fill a member's memory with manifests and answers.
        let _pulling = self.uploads.take(principal)?;
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.registries.plain_http.clone()),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(MANIFEST_DEADLINE),
            // An index is not followed: a wasm artifact is one manifest.
            platform_resolver: None,
            ..ClientConfig::default()
        });
        let pulling = |e: String| invalid(field, format!("pulling {module}: {e}"));
        let (manifest, manifest_digest) =
            tokio::time::timeout(MANIFEST_DEADLINE, client.pull_image_manifest(&reference, &auth))
                .await
                .map_err(|_| {
                    ApiError::new(
                        Reason::Unavailable,
                        format!(
                            "{field}: pulling {module}: the registry sent no manifest within {MANIFEST_DEADLINE:?}"
                        ),
                    )
                })?
                .map_err(|e| registry_failure(field, module, &e))?;
        let source = match module.contains('@') {
            true => module.to_owned(),
            false => format!("{module}@{manifest_digest}"),
        };
        let wasm = |media: &str| media == WASM_LAYER_MEDIA_TYPE || media == LEGACY_WASM_LAYER_MEDIA_TYPE;
        let layer = match manifest.layers.as_slice() {
            [layer] if wasm(&layer.media_type) => layer.clone(),
            layers => {
                let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
                return Err(pulling(format!(
                    "a wasm artifact has one layer of {WASM_LAYER_MEDIA_TYPE}; this one has {types:?}"
                )));
            }
        };
        if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
            // A "foreign" layer would be fetched from the addresses it lists: anywhere at all.
            return Err(pulling(
                "the layer lists urls to fetch it from; only the registry's own blobs are pulled".into(),
            ));
        }
        let Some(hex) = layer.digest.strip_prefix("sha256:").filter(|h| shoal_api::digest::is_sha256_hex(h)) else {
            return Err(pulling(format!("the layer's digest {:?} is not a sha256 digest", layer.digest)));
        };
        let hex = hex.to_owned();
        let pulled = Pulled { module: format!("sha256:{hex}"), source };
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > MAX_MODULE_BYTES as u64 {
            return Err(pulling(format!(
                "a module is at most {} ({size} bytes declared)",
                Memory(MAX_MODULE_BYTES as u64)
            )));
        }
        if self.blobs.recorded(ns, &hex)?.is_some() {
            return Ok(pulled);
        }
        let namespace = super::admission::namespace(&self.store, ns)?;
        super::modules::check_room(&self.store, ns, namespace.as_ref(), size).map_err(|e| {
            let mut status = e.0;
            status.message = format!("{field}: pulling {module}: {}", status.message);
            ApiError(status)
        })?;
        if dry_run {
            return Ok(pulled);
        }
        let _memory = self.blobs.upload_memory().await;
        let deadline = Duration::from_secs(10 + (size >> 20));
        let body = tokio::time::timeout(deadline, async {
            let mut stream = client.pull_blob_stream(&reference, &layer).await.map_err(|e| e.to_string())?.stream;
            // Grown as the bytes come, not allocated as declared before any arrives.
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                if (body.len() + chunk.len()) as u64 > size {
                    return Err(format!("the layer is longer than the {size} bytes its manifest declares"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        })
        .await
        .map_err(|_| pulling(format!("the layer did not arrive within {deadline:?}")))?
        .map_err(pulling)?;
        super::modules::store_module(&self.store, &self.blobs, ns.to_owned(), hex, body).await?;
        Ok(pulled)
    }

    /// The credentials in Secret `name` of `ns` (keys `username` and `password`), or none.
    fn auth(&self, ns: &str, name: Option<&Name>, field: &str) -> Result<RegistryAuth, ApiError> {
        let Some(name) = name else { return Ok(RegistryAuth::Anonymous) };
        let secret_field = field.replace("module", "modulePullSecret");
        let key = ObjectKey::new(Kind::Secret.plural(), Some(ns), name.as_str());
        let Some(bytes) = self.store.reader().get(&key)? else {
            return Err(invalid(&secret_field, format!("secret {ns}/{name} not found")));
        };
        let mut secret: Secret = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(Reason::Internal, format!("stored secret {ns}/{name} is damaged: {e}")))?;
        self.sealer.open_secret(&mut secret)?;
        let value = |key: &str| {
            secret.spec.data.get(key).cloned().ok_or_else(|| {
                invalid(
                    &secret_field,
                    format!("secret {ns}/{name} has no key {key:?} (it needs username and password)"),
                )
            })
        };
        Ok(RegistryAuth::Basic(value("username")?, value("password")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_registries_are_entries_a_reference_can_name() {
        let made = Registries::new(&["Registry.Example.com".into()], &["127.0.0.1:5000".into()]).unwrap();
        assert_eq!(made.allowed, vec!["registry.example.com".to_owned(), "127.0.0.1:5000".to_owned()]);
        assert_eq!(made.plain_http, vec!["127.0.0.1:5000".to_owned()]);
        assert!(Registries::new(&["index.docker.io".into()], &[]).is_err(), "references say docker.io");
        assert!(Registries::new(&["myregistry".into()], &[]).is_err(), "a bare word is a docker.io path");
        assert!(Registries::new(&["https://r.example.com".into()], &[]).is_err());
        assert!(Registries::new(&["docker.io".into(), "localhost:5000".into()], &[]).is_ok());
    }
}
