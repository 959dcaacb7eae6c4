//! The wire types of the `api_keys.*` operations. Doc comments become the field descriptions in the spec;
//! `garde` rules are both enforced on input and emitted as schema constraints.

use opgate_core::{scope, Timestamp};
use opgate_store::KeyRecord;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An API key's metadata. Never carries the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyDetails {
    /// Unique id of the key (`key_...`); use it to get, update, rotate or revoke the key.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Free-text description, or null.
    pub description: Option<String>,
    /// The first 12 characters of the secret, to recognise the key without revealing it.
    pub key_prefix: String,
    /// Scopes the key holds, e.g. `api_keys:read`; `*` holds every scope.
    pub permissions: Vec<String>,
    /// Requests per minute the key may make, or null for the server default.
    pub rate_limit: Option<u32>,
    /// IP addresses and CIDR ranges the key may be used from; empty means any address.
    pub allowed_ips: Vec<String>,
    /// The organization that owns the key.
    pub org_id: String,
    /// Id of the principal that created the key.
    pub created_by: String,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the key stops working, or null if it never expires.
    pub expires_at: Option<Timestamp>,
    /// When the key was last used, or null if never (usage tracking is not recorded yet: always null).
    pub last_used_at: Option<Timestamp>,
    /// When the key was revoked, or null if it is not.
    pub revoked_at: Option<Timestamp>,
}

impl From<KeyRecord> for KeyDetails {
    fn from(r: KeyRecord) -> Self {
        KeyDetails {
            id: r.id,
            name: r.name,
            description: r.description,
            key_prefix: r.key_prefix,
            permissions: r.permissions,
            rate_limit: r.rate_limit,
            allowed_ips: r.allowed_ips,
            org_id: r.org_id,
            created_by: r.created_by,
            created_at: Timestamp(r.created_at),
            expires_at: r.expires_at.map(Timestamp),
            last_used_at: None,
            revoked_at: r.revoked_at.map(Timestamp),
        }
    }
}

/// Input of `api_keys.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyInput {
    /// Human-readable name, 1 to 128 characters.
    #[garde(length(chars, min = 1, max = 128))]
    pub name: String,
    /// Scopes for the new key; defaults to the caller's own. Each must be held by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 64), inner(inner(custom(valid_scope))))]
    pub permissions: Option<Vec<String>>,
    /// Requests per minute the key may make (1 to 1,000,000); omit for the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub rate_limit: Option<u32>,
    /// Days until the key expires (1 to 3650); omit for a key that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 3650))]
    pub expires_in_days: Option<u32>,
    /// IP addresses or CIDR ranges (IPv4 or IPv6) the key may be used from; empty or omitted means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 100), inner(inner(custom(valid_ip_or_cidr))))]
    pub allowed_ips: Option<Vec<String>>,
    /// Free-text description, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(chars, max = 1024))]
    pub description: Option<String>,
}

/// Output of `api_keys.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateKeyOutput {
    /// The secret key. It is shown only in this response: store it now.
    pub key: String,
    /// The new key's metadata.
    pub key_details: KeyDetails,
}

/// Input of `api_keys.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListKeysInput {
    /// Stop after this many keys (1 to 1,000,000); omit to stream every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the key with this id (the last id of a previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 64))]
    pub after_id: Option<String>,
    /// Include revoked keys (default false).
    #[serde(default)]
    #[garde(skip)]
    pub include_revoked: bool,
}

/// Input of `api_keys.revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyInput {
    /// Id of the key to revoke.
    #[garde(length(min = 1, max = 64))]
    pub key_id: String,
}

fn valid_scope(value: &String, _: &()) -> garde::Result {
    if scope::is_valid(value) {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "`{value}` is not a scope: use `*`, `<resource>:<action>` or `<resource>:*`"
        )))
    }
}

fn valid_ip_or_cidr(value: &String, _: &()) -> garde::Result {
    crate::ip::parse_allowed(value)
        .map(drop)
        .map_err(|_| garde::Error::new(format!("`{value}` is not an IP address or CIDR range")))
}
