//! Config: named values a workload takes as env, files or `wasi:config` (like Kubernetes'
//! ConfigMap). Not secret: stored and shown as written.

use crate::meta::{FieldError, Kind, Object, Resource};
use crate::resources::secret::{DataSpec, validate_data};

/// Marker for the Config kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKind;

/// A Config object.
pub type Config = Object<ConfigKind>;

impl Resource for ConfigKind {
    const KIND: Kind = Kind::Config;
    type Spec = DataSpec;
    type Status = ();

    fn validate(object: &Config) -> Result<(), FieldError> {
        validate_data(&object.spec.data)
    }
}
