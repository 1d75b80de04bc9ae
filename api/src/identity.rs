//! Who a certificate of the node CA speaks for. The node CA signs two kinds: a node's (for the
//! host it joined with, and `spiffe://shoal/node/<name>`) and the control plane's client
//! certificate (`spiffe://shoal/control-plane`, client use only). Node agents and the control
//! plane read the name from the URI, never from a host name: on one machine every node's
//! certificate names 127.0.0.1, and a node may ask for any host name at its first join.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The URI a node's certificate carries.
pub fn node_uri(node: &str) -> String {
    format!("{NODE_URI_PREFIX}{node}")
}

const NODE_URI_PREFIX: &str = "spiffe://shoal/node/";

/// The URI the control plane's client certificate carries.
pub const CONTROL_PLANE_URI: &str = "spiffe://shoal/control-plane";

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Node `name`.
    Node(String),
    /// The control plane.
    ControlPlane,
}

/// What a verified peer certificate says: who, and since when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Who it speaks for.
    pub identity: Identity,
    /// Its `notBefore`, in seconds since the epoch: a revocation refuses the certificates of
    /// a node that begin before it.
    pub not_before: i64,
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
pub fn of_certificate(der: &[u8]) -> Result<PeerCertificate, IdentityError> {
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let names = cert.subject_alternative_name().map_err(|e| IdentityError::Parse(e.to_string()))?;
    let mut identities = names.iter().flat_map(|n| n.value.general_names.iter()).filter_map(|name| match name {
        GeneralName::URI(uri) if *uri == CONTROL_PLANE_URI => Some(Identity::ControlPlane),
        GeneralName::URI(uri) => uri
            .strip_prefix(NODE_URI_PREFIX)
            .filter(|n| crate::Name::new(*n).is_ok())
            .map(|n| Identity::Node(n.to_owned())),
        _ => None,
    });
    let (Some(identity), None) = (identities.next(), identities.next()) else { return Err(IdentityError::Nobody) };
    Ok(PeerCertificate { identity, not_before: cert.validity().not_before.timestamp() })
}
