//! Secrets at rest: every credential a client hands over (a connector's `writeOnly` settings, a
//! sink's secret, a pipeline's header values and SQL URLs) is sealed before it is stored and
//! opened only where it is used.
//!
//! A sealed value is a string, `sealed:v1:` + base64url(nonce ‖ ciphertext ‖ tag), made with
//! XChaCha20-Poly1305 under one key per data directory (a random 24-byte nonce per value), so
//! JSON columns keep their shape and nothing about the store changes. The key comes from
//! `[secrets] key` or from `<data_dir>/secret.key`, generated on the first start.
//!
//! Invariants: no `writeOnly` setting is stored in clear; the only way back to the clear value
//! is [`Sealer::unseal`] (or [`Sealer::unseal_all`]) at the point of use; a value that does not
//! open with the key is an error, never passed on as it is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Secret;

/// What every sealed string starts with; the `v1` names the format and the algorithm.
pub const SEALED_PREFIX: &str = "sealed:v1:";
/// What views show instead of a secret.
pub const MASK: &str = "********";
/// The key file in the data directory, used when the configuration names no key.
pub const KEY_FILE: &str = "secret.key";
/// A value sealed at the first start, to tell at every later start that the key still fits.
const CHECK_FILE: &str = "secret.check";
const CHECK_TEXT: &str = "gleaner secret check";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Bound to every ciphertext, so a value sealed for something else does not open as ours.
const ASSOCIATED_DATA: &[u8] = b"gleaner sealed v1";

/// `[secrets]` in `gleaner.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// Base64 of 32 random bytes (`head -c 32 /dev/urandom | base64`). Without it the key is
    /// read from `<data_dir>/secret.key`, which the first start writes (mode 0600).
    pub key: Option<Secret>,
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Tampered with, or sealed under another key.
    #[error("stored secret cannot be opened with this key")]
    Open,
    /// Not base64, or too short to hold a nonce and a tag.
    #[error("stored secret is not a well-formed sealed value")]
    Malformed,
}

/// Why the key could not be had at start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("secrets.key must be base64 of 32 bytes")]
    Config,
    #[error("{}: must hold base64 of 32 bytes", path.display())]
    File { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secrets key does not open the secrets of this data directory ({}); configure the \
         key it was created with, or delete that file to start over (secrets stored before then \
         fail at use)",
        path.display()
    )]
    WrongKey { path: PathBuf },
}

/// Seals and opens secrets under the data directory's key; cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Sealer(********)")
    }
}

/// Whether `text` is a sealed value (as opposed to a clear one).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

/// Replaces every sealed string anywhere in `value` with [`MASK`], for views.
pub fn mask_sealed(value: &mut Value) {
    match value {
        Value::String(text) if is_sealed(text) => *text = MASK.to_owned(),
        Value::Array(items) => items.iter_mut().for_each(mask_sealed),
        Value::Object(fields) => fields.values_mut().for_each(mask_sealed),
        _ => {}
    }
}

impl Sealer {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: Arc::new(XChaCha20Poly1305::new(key.into())),
        }
    }

    /// A sealer under a fresh random key, for processes that store nothing (`gleaner run`)
    /// and tests.
    pub fn ephemeral() -> Self {
        Self::new(&random_key())
    }

    /// The sealer of a data directory: the configured key, else `<data_dir>/secret.key`
    /// (created on first use). The key is checked against `<data_dir>/secret.check`, written
    /// under the first key used, so a wrong key stops the start instead of every job.
    pub fn load(config: &SecretsConfig, data_dir: &Path) -> Result<Self, KeyError> {
        let sealer = match &config.key {
            Some(key) => {
                let key = decode_key(key.expose()).ok_or(KeyError::Config)?;
                Self::new(&key)
            }
            None => Self::new(&key_file(&data_dir.join(KEY_FILE))?),
        };
        sealer.check(&data_dir.join(CHECK_FILE))?;
        Ok(sealer)
    }

    fn check(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(sealed) => match self.unseal(sealed.trim()) {
                Ok(text) if text == CHECK_TEXT => Ok(()),
                _ => Err(KeyError::WrongKey {
                    path: path.to_owned(),
                }),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let sealed = self.seal(CHECK_TEXT);
                match create_private(path, &format!("{sealed}\n")) {
                    Ok(()) => Ok(()),
                    // Another process of this data directory wrote it first.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.check(path)
                    }
                    Err(error) => Err(io(error)),
                }
            }
            Err(error) => Err(io(error)),
        }
    }

    /// `plain` sealed under the key with a fresh random nonce.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: ASSOCIATED_DATA,
        };
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The clear value of `text`; a string that is not sealed is returned as it is (values
    /// stored before sealing existed).
    pub fn unseal(&self, text: &str) -> Result<String, SealError> {
        let Some(encoded) = text.strip_prefix(SEALED_PREFIX) else {
            return Ok(text.to_owned());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let payload = Payload {
            msg: ciphertext,
            aad: ASSOCIATED_DATA,
        };
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }

    /// Opens every sealed string anywhere in `value`. On error `value` may be partly opened:
    /// the caller discards it.
    pub fn unseal_all(&self, value: &mut Value) -> Result<(), SealError> {
        match value {
            Value::String(text) if is_sealed(text) => *text = self.unseal(text)?,
            Value::Array(items) => {
                for item in items {
                    self.unseal_all(item)?;
                }
            }
            Value::Object(fields) => {
                for field in fields.values_mut() {
                    self.unseal_all(field)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A copy of `typed` with every sealed string in it opened.
    pub fn unseal_typed<T>(&self, typed: &T) -> Result<T, SealError>
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let mut value = serde_json::to_value(typed).map_err(|_| SealError::Malformed)?;
        self.unseal_all(&mut value)?;
        serde_json::from_value(value).map_err(|_| SealError::Malformed)
    }

    /// Seals, in place, every setting that `schema` (a component's settings schema) marks
    /// `"writeOnly": true`, at any depth of `properties`: a string is sealed, and so is every
    /// string inside a write-only object or array. Values already sealed are left alone.
    pub fn seal_secrets(&self, schema: &Value, settings: &mut Value) {
        let (Some(Value::Object(properties)), Value::Object(fields)) =
            (schema.get("properties"), settings)
        else {
            return;
        };
        for (key, field) in fields.iter_mut() {
            match properties.get(key) {
                Some(sub) if sub.get("writeOnly") == Some(&Value::Bool(true)) => {
                    self.seal_strings(field)
                }
                Some(sub) => self.seal_secrets(sub, field),
                None => {}
            }
        }
    }

    /// Seals every clear string anywhere in `value`.
    pub fn seal_strings(&self, value: &mut Value) {
        match value {
            Value::String(text) if !is_sealed(text) => *text = self.seal(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.seal_strings(item)),
            Value::Object(fields) => fields
                .values_mut()
                .for_each(|field| self.seal_strings(field)),
            _ => {}
        }
    }

    /// `text` sealed unless it already is.
    pub fn seal_once(&self, text: &str) -> String {
        if is_sealed(text) {
            text.to_owned()
        } else {
            self.seal(text)
        }
    }
}

fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    key
}

fn decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .ok()?;
    bytes.try_into().ok()
}

/// The key in `path`, written there first (mode 0600) when the file does not exist.
fn key_file(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(&text).ok_or_else(|| KeyError::File {
            path: path.to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key();
            match create_private(path, &format!("{}\n", STANDARD.encode(key))) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "created the key that seals stored secrets; keep a copy: without it they cannot be read");
                    Ok(key)
                }
                // Another process of this data directory wrote it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => key_file(path),
                Err(error) => Err(io(error)),
            }
        }
        Err(error) => Err(io(error)),
    }
}

/// Creates `path` (mode 0600, failing if it exists) holding `contents`.
fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sealed_values_open_with_the_key_only() {
        let sealer = Sealer::ephemeral();
        let sealed = sealer.seal("hunter2");
        assert!(
            is_sealed(&sealed) && !sealed.contains("hunter2"),
            "{sealed}"
        );
        assert_ne!(sealer.seal("hunter2"), sealed, "a fresh nonce each time");
        assert_eq!(sealer.unseal(&sealed), Ok("hunter2".to_owned()));
        assert_eq!(sealer.unseal("clear"), Ok("clear".to_owned()));

        assert_eq!(Sealer::ephemeral().unseal(&sealed), Err(SealError::Open));
        let mut bytes = URL_SAFE_NO_PAD
            .decode(&sealed[SEALED_PREFIX.len()..])
            .expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(sealer.unseal(&tampered), Err(SealError::Open));
        bytes[NONCE_LEN] ^= 1;
        bytes[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(sealer.unseal(&tampered), Err(SealError::Open));
        assert_eq!(
            sealer.unseal(&format!("{SEALED_PREFIX}c2hvcnQ")),
            Err(SealError::Malformed)
        );
        assert_eq!(
            sealer.unseal(&format!("{SEALED_PREFIX}!!")),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn write_only_settings_are_sealed_at_any_depth_and_open_again() {
        let sealer = Sealer::ephemeral();
        let schema = json!({
            "type": "object",
            "properties": {
                "auth": {"type": "object", "properties": {
                    "token": {"type": "string", "writeOnly": true},
                    "username": {"type": "string"}
                }},
                "headers": {"type": "object", "writeOnly": true},
                "url": {"type": "string"}
            }
        });
        let clear = json!({
            "auth": {"token": "s3cret.token", "username": "me"},
            "headers": {"X-Key": "key.one", "X-Other": ["key.two"]},
            "url": "u",
            "unknown": "kept"
        });
        let mut settings = clear.clone();
        sealer.seal_secrets(&schema, &mut settings);
        let text = settings.to_string();
        // `.` is not in the base64url alphabet, so a sealed value cannot contain these by chance.
        for secret in ["s3cret.token", "key.one", "key.two"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(settings["auth"]["username"], "me");
        assert_eq!(settings["url"], "u");
        assert_eq!(settings["unknown"], "kept");

        let again = settings.clone();
        sealer.seal_secrets(&schema, &mut settings);
        assert_eq!(settings, again, "sealing twice changes nothing");

        let mut masked = settings.clone();
        mask_sealed(&mut masked);
        assert_eq!(masked["auth"]["token"], MASK);
        assert_eq!(masked["headers"]["X-Other"], json!([MASK]));

        sealer.unseal_all(&mut settings).expect("opens");
        assert_eq!(settings, clear);
        let mut other = again.clone();
        assert_eq!(
            Sealer::ephemeral().unseal_all(&mut other),
            Err(SealError::Open)
        );
    }

    #[test]
    fn the_key_file_is_created_once_and_a_wrong_key_stops_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Sealer::load(&SecretsConfig::default(), dir.path()).expect("created");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("x");
        let second = Sealer::load(&SecretsConfig::default(), dir.path()).expect("read");
        assert_eq!(second.unseal(&sealed), Ok("x".to_owned()));

        let other = SecretsConfig {
            key: Some(Secret::new(STANDARD.encode([7u8; KEY_LEN]))),
        };
        let error = Sealer::load(&other, dir.path()).expect_err("wrong key");
        assert!(matches!(error, KeyError::WrongKey { .. }), "{error}");
        let short = SecretsConfig {
            key: Some(Secret::new(STANDARD.encode([7u8; 16]))),
        };
        assert!(matches!(
            Sealer::load(&short, dir.path()),
            Err(KeyError::Config)
        ));
    }
}
