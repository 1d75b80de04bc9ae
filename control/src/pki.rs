//! The cluster's keys and secrets, made on first start: a CA (which signs each control node's
//! server certificate, and which clients trust), the admin bearer token, and the cluster token
//! control nodes present to each other. Kept in one directory, readable by its owner only;
//! further control nodes of the same cluster are started with the same directory's contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the PKI could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed, or a stored one is damaged.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the key or certificate.
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// A stored PEM file is damaged.
    #[error("{path}: not a valid PEM file")]
    Pem {
        /// The file.
        path: PathBuf,
    },
}

/// The loaded PKI.
pub struct Pki {
    /// The CA certificate (PEM), trusted by clients.
    pub ca_pem: String,
    ca_key: KeyPair,
    /// The node CA's certificate (PEM): it signs node certificates only, and only node agents
    /// and the control plane's calls to them trust it, so a node's certificate is never taken
    /// for the API server's or a raft peer's, even where both name the same address.
    pub node_ca_pem: String,
    node_ca_key: KeyPair,
    /// Bearer token of the cluster administrator.
    pub admin_token: String,
    /// Bearer token control nodes present to each other.
    pub cluster_token: String,
    /// The key Secret values are sealed with in the store (see [`crate::sealing`]). Every
    /// member needs the same one, and a backup of the store is readable only with it.
    pub secrets_key: [u8; 32],
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const NODE_CA_CERT: &str = "node-ca.pem";
const NODE_CA_KEY: &str = "node-ca.key";

/// How long a node certificate is valid unless configured otherwise; the agent renews it at a
/// third of that.
pub const NODE_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
const ADMIN_TOKEN: &str = "admin.token";
const CLUSTER_TOKEN: &str = "cluster.token";
/// The file of [`Pki::secrets_key`], in hex.
pub const SECRETS_KEY: &str = "secrets.key";

/// Every file of a PKI directory: what each member of a cluster, and a restore of its backup,
/// needs the same copy of.
pub const FILES: [&str; 7] = [CA_CERT, CA_KEY, NODE_CA_CERT, NODE_CA_KEY, ADMIN_TOKEN, CLUSTER_TOKEN, SECRETS_KEY];

const CLUSTER_CA_NAME: &str = "shoal cluster CA";
const NODE_CA_NAME: &str = "shoal node CA";

/// A CA's parameters. Rebuilt identically on every start, so that certificates signed later
/// name the same issuer as the stored CA certificate (whose key signs them).
fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    shoal_api::config::write_private(path, contents.as_bytes())
        .map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

/// Reads a 32-byte key written in hex.
fn read_key(path: &Path) -> Result<[u8; 32], PkiError> {
    let text = read(path)?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).map_err(|_| PkiError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 32-byte key in hex (64 hex digits)"),
    })?;
    Ok(key)
}

impl Pki {
    /// Loads the PKI from `dir`, making whatever is missing.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let io = |source| PkiError::Io { path: dir.to_owned(), source };
        shoal_api::config::private_dir(dir).map_err(io)?;
        for (cert, key, name) in [(CA_CERT, CA_KEY, CLUSTER_CA_NAME), (NODE_CA_CERT, NODE_CA_KEY, NODE_CA_NAME)] {
            let (cert_path, key_path) = (dir.join(cert), dir.join(key));
            if !cert_path.exists() || !key_path.exists() {
                let key = KeyPair::generate()?;
                let cert = ca_params(name)?.self_signed(&key)?;
                write(&key_path, &key.serialize_pem())?;
                write(&cert_path, &cert.pem())?;
            }
        }
        for token in [ADMIN_TOKEN, CLUSTER_TOKEN, SECRETS_KEY] {
            if !dir.join(token).exists() {
                write(&dir.join(token), &random_token())?;
            }
        }
        Ok(Pki {
            ca_pem: read(&dir.join(CA_CERT))? + "\n",
            ca_key: KeyPair::from_pem(&read(&dir.join(CA_KEY))?)?,
            node_ca_pem: read(&dir.join(NODE_CA_CERT))? + "\n",
            node_ca_key: KeyPair::from_pem(&read(&dir.join(NODE_CA_KEY))?)?,
            admin_token: read(&dir.join(ADMIN_TOKEN))?,
            cluster_token: read(&dir.join(CLUSTER_TOKEN))?,
            secrets_key: read_key(&dir.join(SECRETS_KEY))?,
        })
    }

    /// A fresh key and certificate for `names` (DNS names and IP addresses), signed by the
    /// cluster CA, for serving (and for authenticating as a client).
    fn issue(&self, names: &[String], common_name: &str) -> Result<(KeyPair, rcgen::Certificate), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::new(ca_params(CLUSTER_CA_NAME)?, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((key, cert))
    }

    /// A certificate for node `node`'s agent API and its calls to other nodes, valid for
    /// `host` and the node's identity URI in `generation` ([`shoal_api::identity`]), for
    /// `validity`, signed by the node CA: (certificate chain PEM ending with the node CA,
    /// private key PEM).
    pub fn issue_node_pem(
        &self,
        host: &str,
        node: &str,
        generation: u64,
        validity: std::time::Duration,
    ) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        let uri = shoal_api::identity::node_uri(node, generation);
        params.subject_alt_names.push(SanType::URI(Ia5String::try_from(uri)?));
        params.distinguished_name.push(DnType::CommonName, format!("shoal node {node}"));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_by_node_ca(params, validity)
    }

    /// The control plane's client certificate for calling node agents: the control-plane
    /// identity URI and client use only (so it can never serve as a node), signed by the node
    /// CA, valid for `validity`.
    pub fn issue_control_plane_client_pem(&self, validity: std::time::Duration) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names.push(SanType::URI(Ia5String::try_from(shoal_api::identity::CONTROL_PLANE_URI)?));
        params.distinguished_name.push(DnType::CommonName, "shoal control plane (client of nodes)");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_by_node_ca(params, validity)
    }

    fn sign_by_node_ca(
        &self,
        mut params: CertificateParams,
        validity: std::time::Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let now = time::OffsetDateTime::now_utc();
        // A little slack before now, for clocks a few minutes apart.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + validity;
        let issuer = Issuer::new(ca_params(NODE_CA_NAME)?, &self.node_ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((format!("{}{}", cert.pem(), self.node_ca_pem), key.serialize_pem()))
    }

    /// A rustls server configuration with a fresh certificate for `names` (DNS names and IP
    /// addresses), signed by the cluster CA. Offers HTTP/2 and HTTP/1.1.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let (key, cert) = self.issue(names, "shoal control plane")?;
        let ca_der = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|_| PkiError::Pem { path: CA_CERT.into() })?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(shoal_api::serve::server_config(vec![cert.der().clone(), ca_der], key_der)?)
    }
}

pub use shoal_api::token::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_made_once_and_reloaded_identically() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path()).unwrap();
        let second = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.admin_token, second.admin_token);
        assert_ne!(first.admin_token, first.cluster_token);
        assert_eq!(first.admin_token.len(), 64);
        assert_eq!(first.secrets_key, second.secrets_key);
        assert_ne!(first.secrets_key, [0; 32]);
        second.server_config(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(first.node_ca_pem, second.node_ca_pem);
        assert_ne!(first.ca_pem, first.node_ca_pem, "node certificates have a CA of their own");
    }
}
