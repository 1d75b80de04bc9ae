//! The values an instance takes from Secrets and Configs, resolved for the node it is bound to
//! when it starts the instance (`GET /api/v1/namespaces/{ns}/instances/{name}/values`). A node
//! reads no Secret directly: it gets what its own instances name, and only while they are bound
//! to it, as Kubernetes' node authorizer allows a kubelet. The values are read when asked, so
//! an instance started after a change gets the new ones (and the workload controller rolls the
//! workload out on such a change).
//!
//! A Secret, Config or key that is missing is a 422 that names it; the node reports it on the
//! instance and asks again later. So are values past [`MAX_VALUES_BYTES`] (what one instance
//! is given, its files included), and an instance that has ended gets none (409).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use shoal_api::agent::{InstanceValues, MAX_VALUES_BYTES};
use shoal_api::resources::instance::Instance;
use shoal_api::resources::secret::DataSpec;
use shoal_api::resources::workload::{EnvVar, Source};
use shoal_api::{Kind, Reason};

use super::auth::{Principal, may_touch_instance};
use super::error::ApiError;
use crate::sealing::Sealer;
use crate::store::{ObjectKey, Store};

/// The data of each Secret and Config an instance names, read (and opened) once each.
struct Sources {
    ns: String,
    read: BTreeMap<(Kind, String), BTreeMap<String, String>>,
}

impl Sources {
    fn read(store: &Store, sealer: &Sealer, ns: &str, instance: &Instance) -> Result<Sources, ApiError> {
        let mut read = BTreeMap::new();
        let mut read_bytes = 0usize;
        for source in instance.spec.sources() {
            let key = ObjectKey::new(source.kind().plural(), Some(ns), source.name().as_str());
            let Some(bytes) = store.reader().get(&key)? else {
                return Err(ApiError::new(Reason::Invalid, format!("{source} not found in namespace {ns:?}")));
            };
            let data = match source {
                Source::Secret(_) => {
                    let mut secret: shoal_api::resources::secret::Secret = parse(&bytes, source)?;
                    sealer.open_secret(&mut secret)?;
                    secret.spec.data
                }
                Source::Config(_) => parse::<shoal_api::resources::config::ConfigKind>(&bytes, source)?.spec.data,
            };
            read_bytes += data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            if read_bytes > 4 * MAX_VALUES_BYTES {
                return Err(ApiError::new(
                    Reason::Invalid,
                    format!(
                        "the Secrets and Configs instance {:?} names hold more than {} bytes",
                        instance.metadata.name.as_str(),
                        4 * MAX_VALUES_BYTES
                    ),
                ));
            }
            read.insert((source.kind(), source.name().to_string()), data);
        }
        Ok(Sources { ns: ns.to_owned(), read })
    }

    fn data(&self, source: Source<'_>) -> &BTreeMap<String, String> {
        &self.read[&(source.kind(), source.name().to_string())]
    }

    /// Each named value: its literal value, or the key it names.
    fn values(&self, field: &str, vars: &[EnvVar]) -> Result<Vec<(String, String)>, ApiError> {
        vars.iter()
            .map(|var| {
                let Some(from) = &var.value_from else { return Ok((var.name.clone(), var.value.clone())) };
                let source = from.source().map_err(|why| ApiError::new(Reason::Invalid, format!("{field}: {why}")))?;
                match self.data(source).get(&from.key) {
                    Some(value) => Ok((var.name.clone(), value.clone())),
                    None => Err(ApiError::new(
                        Reason::Invalid,
                        format!("{source} in namespace {:?} has no key {:?} ({field} {})", self.ns, from.key, var.name),
                    )),
                }
            })
            .collect()
    }
}

fn parse<R>(bytes: &[u8], source: Source<'_>) -> Result<shoal_api::Object<R>, ApiError>
where
    R: shoal_api::meta::Resource<Spec = DataSpec>,
{
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored {source} is damaged: {e}")))
}

/// `GET /api/v1/namespaces/{ns}/instances/{name}/values`: for the node the instance is bound
/// to (or the admin).
pub async fn instance_values(
    State(store): State<Arc<Store>>,
    Extension(principal): Extension<Principal>,
    Extension(sealer): Extension<Arc<Sealer>>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<InstanceValues>, ApiError> {
    if matches!(principal, Principal::Tenant { .. }) {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("{principal} may not read an instance's values: they are for its node (read the Secret itself)"),
        ));
    }
    store.linearize().await?;
    let key = ObjectKey::new(Kind::Instance.plural(), Some(&ns), &name);
    let bytes = store
        .reader()
        .get(&key)?
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("instances \"{ns}/{name}\" not found")))?;
    if !may_touch_instance(&principal, &bytes) {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("{principal} may not read the values of instances \"{ns}/{name}\": it is bound elsewhere"),
        ));
    }
    let instance: Instance = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored instance {ns}/{name} is damaged: {e}")))?;
    if instance.phase().is_terminal() {
        // It will not start again: its node has no use for values any more.
        return Err(ApiError::new(Reason::Conflict, format!("instances \"{ns}/{name}\" has ended: no values for it")));
    }
    let sources = Sources::read(&store, &sealer, &ns, &instance)?;
    let spec = &instance.spec;
    let files = spec
        .files
        .iter()
        .map(|from| {
            let source = from.source().map_err(|why| ApiError::new(Reason::Invalid, format!("spec.files: {why}")))?;
            Ok((from.path.clone(), sources.data(source).clone()))
        })
        .collect::<Result<_, ApiError>>()?;
    let values = InstanceValues {
        env: sources.values("spec.env", &spec.env)?,
        files,
        wasi_config: sources.values("spec.wasiConfig", &spec.wasi_config)?,
    };
    if values.bytes() > MAX_VALUES_BYTES {
        return Err(ApiError::new(
            Reason::Invalid,
            format!(
                "the values of instances \"{ns}/{name}\" come to {} bytes: at most {MAX_VALUES_BYTES}",
                values.bytes()
            ),
        ));
    }
    Ok(Json(values))
}
