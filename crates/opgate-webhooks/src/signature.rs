//! The Standard Webhooks signature: `webhook-signature: v1,<base64 of HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`
//! under a `whsec_<base64>` secret. Receivers can check it with any Standard Webhooks library, or with
//! [`verify`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a `webhook-timestamp` may be from now when verifying (the specification's suggestion).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature or secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret is not `whsec_` and base64.
    #[error("the secret is not `whsec_` followed by base64")]
    BadSecret,
    /// The timestamp is not a number, or too far from now.
    #[error("the webhook-timestamp is missing, malformed or outside the tolerance")]
    BadTimestamp,
    /// No `v1,` signature in the header matches.
    #[error("no signature matches")]
    NoMatch,
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignatureError::BadSecret)?;
    STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)
}

/// The signing secret of an API key's rotation webhook: `whsec_` + base64 of HMAC-SHA256(the API key,
/// `opgate rotation webhook v1`). The consumer already holds the key being rotated, so it can check the webhook
/// that brings its replacement without another secret to keep; the server computes it while it still has the
/// key's secret (when the key is made) and keeps it sealed.
pub fn rotation_secret(api_key: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"opgate rotation webhook v1");
    encode_secret(&mac.finalize().into_bytes())
}

/// A `whsec_…` secret holding `key`.
pub fn encode_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for message `id` sent at `timestamp` with `body`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Checks a delivery as a receiver would: the timestamp within [`TOLERANCE_SECS`] of `now`, and one of the
/// space-separated `v1,` signatures matching (in constant time).
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let key = secret_bytes(secret)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::BadTimestamp);
    }
    for candidate in signatures.split(' ') {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if mac(&key, id, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference implementations.
    #[test]
    fn the_specifications_example_verifies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let key = secret_bytes(secret).unwrap();
        assert_eq!(sign(&key, id, 1614265330, body), expected);
        assert_eq!(
            verify(secret, id, "1614265330", expected, body, 1614265330 + 10),
            Ok(())
        );
        assert_eq!(
            verify(secret, id, "1614265330", expected, b"{}", 1614265330),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(secret, id, "1614265330", expected, body, 1614265330 + 301),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify("sk_nope", id, "1614265330", expected, body, 1614265330),
            Err(SignatureError::BadSecret)
        );
        // Several signatures (during a secret rotation): any one matching will do.
        let both = format!("v1,bm9wZQ== {expected}");
        assert_eq!(
            verify(secret, id, "1614265330", &both, body, 1614265330),
            Ok(())
        );
    }
}
