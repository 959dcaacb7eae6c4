//! The caller's identity as an upstream receives it: JSON in `Opgate-Identity` (base64url), the time in
//! `Opgate-Timestamp`, and `Opgate-Signature: v1=<base64 HMAC-SHA256>` over
//! `"{timestamp}.{request_id}.{identity}.{body}"` with the upstream's own secret. The signature binds the
//! identity to this request and this body, so neither can be replayed with the other; an upstream refuses a
//! timestamp more than a few minutes old.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use opgate_core::Context;
use sha2::Sha256;

/// The headers of one forwarded call.
pub(crate) struct Signed {
    pub(crate) identity: String,
    pub(crate) timestamp: String,
    pub(crate) signature: String,
}

/// Who is calling, as the upstream sees it: organization, workspace and mode where they exist, the
/// principal's id and kind, and the scopes it holds.
pub(crate) fn identity(ctx: &Context) -> serde_json::Value {
    let p = &ctx.principal;
    serde_json::json!({
        "org_id": p.org,
        "workspace_id": ctx.workspace,
        "environment_id": p.environment,
        "mode": p.mode.as_str(),
        "principal": {
            "id": p.id,
            "kind": p.kind.as_str(),
            "key_type": p.key_type.map(|t| t.as_str()),
            "service_account_id": p.service_account,
        },
        "scopes": p.permissions,
    })
}

/// Signs `identity` for a call with `request_id` and `body` at `timestamp` (unix seconds).
pub(crate) fn sign(
    secret: &[u8],
    identity: &serde_json::Value,
    request_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Signed {
    let identity = URL_SAFE_NO_PAD.encode(serde_json::to_vec(identity).expect("JSON serializes"));
    let timestamp = timestamp.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(request_id.as_bytes());
    mac.update(b".");
    mac.update(identity.as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = format!("v1={}", STANDARD.encode(mac.finalize().into_bytes()));
    Signed {
        identity,
        timestamp,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value the README's Python verifier computes for the same inputs.
    #[test]
    fn the_signature_is_hmac_sha256_over_the_dotted_parts() {
        let signed = sign(
            b"0123456789abcdef0123456789abcdef",
            &serde_json::json!({"org_id": "acme"}),
            "req_1",
            1_800_000_000,
            b"{}",
        );
        assert_eq!(signed.identity, "eyJvcmdfaWQiOiJhY21lIn0");
        assert_eq!(signed.timestamp, "1800000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"1800000000.req_1.eyJvcmdfaWQiOiJhY21lIn0.{}");
        assert_eq!(
            signed.signature,
            format!("v1={}", STANDARD.encode(mac.finalize().into_bytes()))
        );
    }
}
