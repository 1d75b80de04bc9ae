//! Sealing of Secret values: every value is encrypted by the API server before it enters a raft
//! entry, so neither the log nor the state machine nor a snapshot (all in each member's redb
//! file) holds it in the clear. The cipher is ChaCha20-Poly1305 (ring's AEAD) under the cluster's
//! secrets key, which lives in the PKI directory beside the CA (`secrets.key`); each value is
//! bound to where it belongs (namespace, Secret and key, as associated data), so a sealed value
//! copied to another Secret or key does not open there.
//!
//! A sealed value reads `v1:<base64 of nonce, ciphertext and tag>`. Nonces are random (96 bits):
//! safe for far more writes than one key will see.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use shoal_api::resources::secret::{REDACTED, Secret};

/// The prefix of a value sealed with the current scheme.
const V1: &str = "v1:";

/// Why a stored value did not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "value {key:?} of secret {secret} does not open with this cluster's secrets key (sealed elsewhere, or damaged)"
)]
pub struct OpenError {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// The key whose value failed.
    pub key: String,
}

/// Seals and opens Secret values with the cluster's key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// `namespace/name` of a Secret, for associated data and messages.
fn secret_path(secret: &Secret) -> String {
    let ns = secret.metadata.namespace.as_ref().map_or("default", |n| n.as_str());
    format!("{ns}/{}", secret.metadata.name)
}

impl Sealer {
    /// A sealer with the 32-byte `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"));
        Sealer { key, random: SystemRandom::new() }
    }

    /// Seals `plaintext`, bound to `context`.
    fn seal(&self, context: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).expect("the system's random source works");
        let mut sealed = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut sealed)
            .expect("sealing fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{V1}{}", BASE64.encode(out))
    }

    /// Opens what [`Sealer::seal`] made for `context`.
    fn open(&self, context: &str, sealed: &str) -> Option<String> {
        let bytes = BASE64.decode(sealed.strip_prefix(V1)?).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut rest = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut rest).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// Seals every value of `secret` (as written by a client) in place. A value that `old`
    /// (the stored Secret it replaces) holds already keeps its sealed form, so a write that
    /// changes nothing changes nothing stored, and rolls no workload out.
    pub fn seal_secret(&self, secret: &mut Secret, old: Option<&Secret>) {
        let path = secret_path(secret);
        for (key, value) in secret.spec.data.iter_mut() {
            let context = format!("{path}/{key}");
            let kept =
                old.and_then(|o| o.spec.data.get(key)).filter(|s| self.open(&context, s).as_ref() == Some(value));
            *value = match kept {
                Some(sealed) => sealed.clone(),
                None => self.seal(&context, value),
            };
        }
    }

    /// Opens every value of a stored `secret` in place.
    pub fn open_secret(&self, secret: &mut Secret) -> Result<(), OpenError> {
        let path = secret_path(secret);
        for (key, value) in secret.spec.data.iter_mut() {
            *value = self
                .open(&format!("{path}/{key}"), value)
                .ok_or_else(|| OpenError { secret: path.clone(), key: key.clone() })?;
        }
        Ok(())
    }
}

/// Replaces every value of `secret` with [`REDACTED`]: what reads show unless asked.
pub fn redact(secret: &mut Secret) {
    secret.spec.data.values_mut().for_each(|v| *v = REDACTED.to_owned());
}

/// A stored Secret (JSON) with its values redacted; what does not parse as a Secret is
/// replaced whole by an empty object, never passed on.
pub fn redact_stored(bytes: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Secret>(bytes) {
        Ok(mut secret) => {
            redact(&mut secret);
            serde_json::to_vec(&secret).expect("secrets serialize")
        }
        Err(e) => {
            tracing::warn!("a stored secret does not parse, and is not shown: {e}");
            b"{}".to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Name, Object};

    fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
        let mut s: Secret = Object::new(Name::new(name).unwrap(), Some(Name::new(ns).unwrap()), Default::default());
        s.spec.data = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s
    }

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let sealer = Sealer::new(&[7; 32]);
        let mut stored = secret("alpha", "db", &[("password", "hunter2"), ("user", "app")]);
        sealer.seal_secret(&mut stored, None);
        let sealed = stored.spec.data["password"].clone();
        assert!(sealed.starts_with(V1) && !sealed.contains("hunter2"), "{sealed}");

        let mut opened = stored.clone();
        sealer.open_secret(&mut opened).unwrap();
        assert_eq!(opened.spec.data["password"], "hunter2");

        // Moved to another key, Secret or namespace, or under another key: it does not open.
        let mut moved = stored.clone();
        moved.spec.data.insert("user".into(), sealed.clone());
        assert_eq!(sealer.open_secret(&mut moved).unwrap_err().key, "user");
        let mut other = secret("beta", "db", &[("password", &sealed)]);
        assert!(sealer.open_secret(&mut other).is_err());
        assert!(Sealer::new(&[8; 32]).open_secret(&mut stored.clone()).is_err());
        let mut damaged = stored.clone();
        damaged.spec.data.insert("password".into(), "v1:AAAA".into());
        assert!(sealer.open_secret(&mut damaged).is_err());
    }

    #[test]
    fn an_unchanged_value_keeps_its_sealed_form_and_a_changed_one_is_sealed_anew() {
        let sealer = Sealer::new(&[7; 32]);
        let mut first = secret("alpha", "db", &[("password", "hunter2"), ("user", "app")]);
        sealer.seal_secret(&mut first, None);
        let mut second = secret("alpha", "db", &[("password", "hunter3"), ("user", "app")]);
        sealer.seal_secret(&mut second, Some(&first));
        assert_eq!(second.spec.data["user"], first.spec.data["user"]);
        assert_ne!(second.spec.data["password"], first.spec.data["password"]);
        // The same value written anew without the old one is sealed with a fresh nonce.
        let mut again = secret("alpha", "db", &[("user", "app")]);
        sealer.seal_secret(&mut again, None);
        assert_ne!(again.spec.data["user"], first.spec.data["user"]);
    }

    #[test]
    fn redaction_hides_every_value_and_damage_hides_everything() {
        let stored = serde_json::to_vec(&secret("alpha", "db", &[("password", "v1:xyz")])).unwrap();
        let shown: Secret = serde_json::from_slice(&redact_stored(&stored)).unwrap();
        assert_eq!(shown.spec.data["password"], REDACTED);
        assert_eq!(redact_stored(b"{\"not\":\"a secret\""), b"{}");
    }
}
