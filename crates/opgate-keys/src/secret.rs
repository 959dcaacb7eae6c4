//! The server secret that keys the hash of every stored API key, and the hasher built from it.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the secret file inside the data directory.
pub const SECRET_FILE: &str = "secret";

/// Why the server secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or writing the secret file failed.
    #[error("server secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret is too short to key a hash safely.
    #[error("the server secret must be at least 32 bytes (after base64 decoding, if it decodes)")]
    TooShort,
}

/// Hashes API keys with HMAC-SHA256 under the server secret: a stolen database cannot be turned back into keys.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
    kdf: hkdf::Hkdf<Sha256>,
}

impl KeyHasher {
    /// A hasher keyed with `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < 32 {
            return Err(SecretError::TooShort);
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        let kdf = hkdf::Hkdf::<Sha256>::new(Some(b"opgate server secret"), secret);
        Ok(KeyHasher { mac, kdf })
    }

    /// Loads the secret: `env_secret` (from `OPGATE_SECRET`) when given, else `<data_dir>/secret`, created with
    /// 32 random bytes and mode 0600 on first start.
    pub fn load(data_dir: &Path, env_secret: Option<&str>) -> Result<Self, SecretError> {
        let secret = opgate_core::secret_file::load_or_create(data_dir, SECRET_FILE, env_secret)
            .map_err(|e| SecretError::Io {
                path: e.path.display().to_string(),
                source: e.source,
            })?;
        Self::new(&secret)
    }

    /// A 32-byte key for `purpose` derived from the server secret (HKDF-SHA256): other uses of the secret (such
    /// as sealing webhook secrets) never share the key that hashes API keys.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.kdf
            .expand(purpose.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The keyed hash of `key`.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn secret_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyHasher::load(dir.path(), None).unwrap();
        let b = KeyHasher::load(dir.path(), None).unwrap();
        assert_eq!(a.hash("opg_x"), b.hash("opg_x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other =
            KeyHasher::load(dir.path(), Some("another secret that is long enough, 32+")).unwrap();
        assert_ne!(a.hash("opg_x"), other.hash("opg_x"));
        assert!(matches!(
            KeyHasher::load(dir.path(), Some("short")),
            Err(SecretError::TooShort)
        ));
    }
}
