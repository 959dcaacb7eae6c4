//! The server secret that keys the hash of every stored API key, and the hasher built from it.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
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
}

impl KeyHasher {
    /// A hasher keyed with `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < 32 {
            return Err(SecretError::TooShort);
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        Ok(KeyHasher { mac })
    }

    /// Loads the secret: `env_secret` (from `OPGATE_SECRET`) when given, else `<data_dir>/secret`, created with
    /// 32 random bytes and mode 0600 on first start.
    pub fn load(data_dir: &Path, env_secret: Option<&str>) -> Result<Self, SecretError> {
        if let Some(text) = env_secret {
            return Self::new(&decode(text));
        }
        let path = data_dir.join(SECRET_FILE);
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => Self::new(&decode(text.trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).expect("the OS random source failed");
                let text = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(io)?;
                file.write_all(text.as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(io)?;
                Self::new(&raw)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The keyed hash of `key`.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A base64 secret decodes to its bytes; anything else is used as given.
fn decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
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
