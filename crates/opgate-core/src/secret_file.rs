//! Server secrets kept in the data directory (the API-key hashing secret, the session signing secret): read
//! from an override (an environment variable) or a file, created on first use with 32 random bytes, base64,
//! mode 0600. One implementation so both secrets get the same care.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

/// Bytes of a newly generated secret.
pub const GENERATED_BYTES: usize = 32;

/// Reading or creating a secret file failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct SecretFileError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// The secret: `override_text` when given, else `<dir>/<file_name>`, created with 32 random bytes if missing.
/// Text that is base64 decodes to its bytes; anything else is used as given.
///
/// Creation is atomic: the secret is written to a private temporary file and hard-linked into place, so two
/// processes starting at once agree on one secret and neither ever reads a half-written file.
pub fn load_or_create(
    dir: &Path,
    file_name: &str,
    override_text: Option<&str>,
) -> Result<Vec<u8>, SecretFileError> {
    if let Some(text) = override_text {
        return Ok(decode(text.trim()));
    }
    let path = dir.join(file_name);
    let err = |path: &Path, source| SecretFileError {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => return Ok(decode(text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&path, e)),
    }
    let mut raw = [0u8; GENERATED_BYTES];
    getrandom::fill(&mut raw).expect("the OS random source failed");
    let text = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("the OS random source failed");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", u64::from_le_bytes(suffix)));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(&tmp, e));
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // The new name must survive a power loss too: keys hashed under this secret are about to be stored.
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| err(dir, e))?;
            Ok(raw.to_vec())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(|e| err(&path, e))?;
            Ok(decode(text.trim()))
        }
        Err(e) => Err(err(&path, e)),
    }
}

fn decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}
