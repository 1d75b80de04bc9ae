//! `shoal push FILE oci://REGISTRY/REPOSITORY:TAG`: publishes a module or component as a wasm OCI
//! artifact, in the CNCF wasm OCI artifact layout (config `application/vnd.wasm.config.v0+json`,
//! one layer of `application/wasm` holding the bytes), which a Workload then names as its
//! `module` and the control plane pulls (from a registry it allows).
//!
//! A password is never a flag (a flag is visible to every user of the machine): it comes from
//! standard input (`--password-stdin`) or `$SHOAL_REGISTRY_PASSWORD`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use shoal_api::digest::{WasmKind, wasm_kind};
use shoal_api::module::{OCI_SCHEME, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};

/// Flags of `shoal push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The `.wasm` module or component.
    file: PathBuf,
    /// Where to publish it: `oci://REGISTRY/REPOSITORY:TAG`.
    reference: String,
    /// Speak plain HTTP to the registry (one on loopback).
    #[arg(long)]
    insecure: bool,
    /// The registry user (the password from --password-stdin or $SHOAL_REGISTRY_PASSWORD).
    #[arg(long)]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

impl PushArgs {
    pub async fn execute(&self) -> anyhow::Result<ExitCode> {
        let Some(text) = self.reference.strip_prefix(OCI_SCHEME) else {
            anyhow::bail!("{:?}: a reference is oci://REGISTRY/REPOSITORY:TAG", self.reference);
        };
        let reference: oci_client::Reference =
            text.parse().with_context(|| format!("{:?} is not an OCI reference", self.reference))?;
        let bytes = std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))?;
        let os = match wasm_kind(&bytes) {
            Some(WasmKind::Component) => "wasip2",
            Some(WasmKind::Module) => "wasip1",
            None => anyhow::bail!("{} is not a wasm module or component", self.file.display()),
        };
        let layer = ImageLayer::new(bytes, WASM_LAYER_MEDIA_TYPE.to_owned(), None);
        let digest = layer.sha256_digest();
        let config = serde_json::json!({
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "architecture": "wasm",
            "os": os,
            "layerDigests": [digest],
        });
        let config = Config::new(serde_json::to_vec(&config)?, WASM_CONFIG_MEDIA_TYPE.to_owned(), None);
        let registry = reference.registry().to_owned();
        let protocol =
            if self.insecure { ClientProtocol::HttpsExcept(vec![registry.clone()]) } else { ClientProtocol::Https };
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        });
        let auth = match &self.username {
            Some(user) => RegistryAuth::Basic(user.clone(), self.password()?),
            None => RegistryAuth::Anonymous,
        };
        client
            .push(&reference, &[layer], config, &auth, None)
            .await
            .with_context(|| format!("pushing to {}", self.reference))?;
        println!("pushed {} ({digest})", self.reference);
        Ok(ExitCode::SUCCESS)
    }

    fn password(&self) -> anyhow::Result<String> {
        if self.password_stdin {
            let mut password = String::new();
            std::io::stdin().take(4096).read_to_string(&mut password).context("reading the password")?;
            return Ok(password.trim_end_matches(['\r', '\n']).to_owned());
        }
        std::env::var("SHOAL_REGISTRY_PASSWORD")
            .context("--username needs a password: --password-stdin or $SHOAL_REGISTRY_PASSWORD")
    }
}
