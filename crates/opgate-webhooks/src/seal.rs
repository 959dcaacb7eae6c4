//! Secrets the dispatcher needs again (webhook signing secrets) are stored sealed: XChaCha20-Poly1305 under a
//! key derived from the server secret, a fresh random nonce each time. A copy of the database alone gives
//! none of them.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

/// Seals and opens secrets under one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

/// A sealed value that does not open: damaged, or sealed under another server secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret does not open: it is damaged or was sealed under another server secret")]
pub struct Unsealable;

impl Sealer {
    /// A sealer under `key` (derive it from the server secret, for one purpose).
    pub fn new(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// `plaintext`, sealed: the nonce, then the ciphertext with its tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source failed");
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), plaintext)
            .expect("XChaCha20-Poly1305 seals any length");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// What `sealed` holds.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unsealable)?;
        self.cipher
            .decrypt(&XNonce::from(nonce), body)
            .map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_under_their_key_only() {
        let a = Sealer::new(&[1; 32]);
        let sealed = a.seal(b"whsec_secret");
        assert!(!sealed.windows(12).any(|w| w == b"whsec_secret"));
        assert_eq!(a.open(&sealed).unwrap(), b"whsec_secret");
        assert_ne!(a.seal(b"x"), a.seal(b"x"), "a fresh nonce each time");
        assert_eq!(Sealer::new(&[2; 32]).open(&sealed), Err(Unsealable));
        let mut damaged = sealed.clone();
        damaged[30] ^= 1;
        assert_eq!(a.open(&damaged), Err(Unsealable));
        assert_eq!(a.open(&sealed[..10]), Err(Unsealable));
    }
}
