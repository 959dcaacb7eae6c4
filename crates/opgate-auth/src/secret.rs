//! The session secret: the HMAC key that signs and verifies session tokens. It is kept apart from the
//! API-key secret (`<data-dir>/secret`) so that either can be rotated without touching the other.

use std::path::Path;

/// Name of the session secret file inside the data directory.
pub const SESSION_SECRET_FILE: &str = "session_secret";

/// Fewest bytes a session secret may have (HS256 wants a key at least as long as its 256-bit output).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why the session secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or writing the secret file failed.
    #[error("session secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret is too short to sign tokens safely.
    #[error(
        "the session secret must be at least 32 bytes (after base64 decoding, if it decodes); \
         check OPGATE_SESSION_SECRET or <data-dir>/session_secret"
    )]
    TooShort,
}

/// Loads the session secret: `env_secret` (from `OPGATE_SESSION_SECRET`) when given, else
/// `<data_dir>/session_secret`, created on first use with 32 random bytes (base64) and mode 0600.
///
/// Creation is atomic: the secret is written to a private temporary file and hard-linked into place, so two
/// processes starting at once (a server and `opgate admin mint-session`) agree on one secret and neither ever
/// reads a half-written file.
pub fn load(data_dir: &Path, env_secret: Option<&str>) -> Result<Vec<u8>, SecretError> {
    let secret =
        opgate_core::secret_file::load_or_create(data_dir, SESSION_SECRET_FILE, env_secret)
            .map_err(|e| SecretError::Io {
                path: e.path.display().to_string(),
                source: e.source,
            })?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use base64::Engine;

    use super::*;

    #[test]
    fn secret_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load(dir.path(), None).unwrap();
        let b = load(dir.path(), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let text = fs::read_to_string(dir.path().join(SESSION_SECRET_FILE)).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
            a
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(SESSION_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SESSION_SECRET_FILE]);
    }

    #[test]
    fn the_environment_wins_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let env = load(dir.path(), Some("another secret that is long enough, 32+")).unwrap();
        assert_eq!(env, b"another secret that is long enough, 32+");
        assert!(!dir.path().join(SESSION_SECRET_FILE).exists());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(load(dir.path(), Some(&b64)).unwrap(), [7u8; 32]);
        assert!(matches!(
            load(dir.path(), Some("short")),
            Err(SecretError::TooShort)
        ));
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load(dir.path(), None).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| s == &secrets[0]));
    }
}
