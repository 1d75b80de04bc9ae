//! Who a certificate of the node CA speaks for. The node CA signs two kinds: a node's (for the
//! host it joined with, and `spiffe://shoal/node/<name>/<generation>`) and the control plane's
//! client certificate (`spiffe://shoal/control-plane`, client use only). The generation counts
//! the node's revocations: peers refuse a node's certificates of an older generation than the
//! one the control plane tells them, so a revocation needs no clock. Node agents and the control
//! plane read the name from the URI, never from a host name: on one machine every node's
//! certificate names 127.0.0.1, and a node may ask for any host name at its first join.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The URI a node's certificate of `generation` carries.
pub fn node_uri(node: &str, generation: u64) -> String {
    format!("{NODE_URI_PREFIX}{node}/{generation}")
}

const NODE_URI_PREFIX: &str = "spiffe://shoal/node/";

/// The URI the control plane's client certificate carries.
pub const CONTROL_PLANE_URI: &str = "spiffe://shoal/control-plane";

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Node `name`, in a generation of its credentials.
    Node {
        /// The node's name.
        name: String,
        /// How many times the node had been revoked when this was issued.
        generation: u64,
    },
    /// The control plane.
    ControlPlane,
}

impl Identity {
    /// The node's name, for a node's certificate.
    pub fn node(&self) -> Option<&str> {
        match self {
            Identity::Node { name, .. } => Some(name),
            Identity::ControlPlane => None,
        }
    }
}

/// Why a certificate names nobody.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not a parseable X.509 certificate.
    #[error("the certificate cannot be read: {0}")]
    Parse(String),
    /// No Shoal identity in its names, or more than one.
    #[error("the certificate names no node and not the control plane")]
    Nobody,
}

/// Who the (already verified) certificate `der` speaks for.
pub fn of_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let names = cert.subject_alternative_name().map_err(|e| IdentityError::Parse(e.to_string()))?;
    let mut identities = names.iter().flat_map(|n| n.value.general_names.iter()).filter_map(|name| match name {
        GeneralName::URI(uri) if *uri == CONTROL_PLANE_URI => Some(Identity::ControlPlane),
        GeneralName::URI(uri) => {
            let (name, generation) = uri.strip_prefix(NODE_URI_PREFIX)?.split_once('/')?;
            crate::Name::new(name).ok()?;
            Some(Identity::Node { name: name.to_owned(), generation: generation.parse().ok()? })
        }
        _ => None,
    });
    let (Some(identity), None) = (identities.next(), identities.next()) else { return Err(IdentityError::Nobody) };
    Ok(identity)
}
