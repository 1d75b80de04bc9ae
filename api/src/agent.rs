//! What the control plane and node agents say to each other besides objects: a node's
//! credentials (issued at join), and the node agent's own small API, which only the control
//! plane calls (to stream an instance's logs to `shoal logs`, whichever node it runs on).

use serde::{Deserialize, Serialize};

/// A node asks for credentials for these host names or addresses (where others reach it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsRequest {
    /// The one name or address its certificate is for: the host others reach it by. Fixed by
    /// the node's first request; later ones must ask for the same.
    pub hosts: Vec<String>,
}

/// What a node gets at join: a server certificate signed by the cluster CA (so the control
/// plane can verify it is talking to that node), and the secret the control plane will present
/// when it calls the node's agent API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeCredentials {
    /// The certificate chain, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
    /// The bearer secret the control plane presents to the node.
    pub secret: String,
    /// When to ask for fresh credentials (seconds from now): well before the certificate
    /// expires.
    #[serde(default)]
    pub renew_after_secs: u64,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials").field("cert", &self.cert).finish_non_exhaustive()
    }
}

/// The agent API path of an instance's logs.
pub fn logs_path(namespace: &str, instance: &str) -> String {
    format!("/logs/{namespace}/{instance}")
}
