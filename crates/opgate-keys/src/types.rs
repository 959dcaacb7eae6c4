//! The wire types of the `api_keys.*` operations. Doc comments become the field descriptions in the spec;
//! `garde` rules are both enforced on input and emitted as schema constraints.

use opgate_core::{scope, validate, Timestamp};

/// Pattern of an API key id: `key_` and a lowercase ULID.
const KEY_ID_PATTERN: &str = opgate_core::id_pattern!("key");
/// The shape of a rotation webhook URL, as `opgate-webhooks` states it for endpoint URLs (the server checks
/// the rest: addresses, credentials, a parseable host).
const URL_PATTERN: &str = "^https?://[^\\s/?#@]+(/[^\\s#]*)?$";
/// Pattern of a workspace id.
const WORKSPACE_ID_PATTERN: &str = opgate_core::id_pattern!("ws");
/// Pattern of an environment id.
const ENVIRONMENT_ID_PATTERN: &str = opgate_core::id_pattern!("env");
/// Pattern of a service account id.
const SERVICE_ACCOUNT_ID_PATTERN: &str = opgate_core::id_pattern!("sa");

pub use opgate_core::{KeyType, Mode};
#[cfg(feature = "server")]
use opgate_store::{KeyRecord, KeyStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An API key's metadata. Never carries the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyDetails {
    /// Unique id of the key (`key_...`); use it to get, update, rotate or revoke the key.
    #[schemars(pattern(KEY_ID_PATTERN))]
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
    /// The workspace a `workspace` key is confined to; null for an organization-wide `admin` key.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    pub workspace_id: Option<String>,
    /// The environment the key is bound to, or null.
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    pub environment_id: Option<String>,
    /// `live` or `test`: the key sees and acts on objects of its own mode only.
    pub mode: Mode,
    /// Whether `mode` is `live`.
    pub livemode: bool,
    /// `admin` (organization-wide) or `workspace` (confined to `workspace_id`).
    pub key_type: KeyType,
    /// Whether the key authenticates now (`status` is `active` or `rotating` and its service account, if any,
    /// is enabled).
    pub is_active: bool,
    /// The service account the key belongs to, or null.
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    pub service_account_id: Option<String>,
    /// Id of the principal that created the key (for a service account's key, the person who made it).
    pub created_by: String,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the key stops working, or null if it never expires.
    pub expires_at: Option<Timestamp>,
    /// When the key last authenticated a request, or null if never; recorded at most about a second late.
    pub last_used_at: Option<Timestamp>,
    /// Client address of that request, or null.
    pub last_used_ip: Option<String>,
    /// `User-Agent` of that request (at most 256 characters), or null.
    pub last_used_user_agent: Option<String>,
    /// When the key was revoked, or null if it is not.
    pub revoked_at: Option<Timestamp>,
    /// The key that replaced this one in a rotation, or null.
    pub replaced_by_key_id: Option<String>,
    /// When a rotated key stops working (the end of its grace period), or null.
    pub grace_expires_at: Option<Timestamp>,
    /// Days between scheduled rotations, or null if the key does not rotate itself.
    pub rotation_interval_days: Option<u32>,
    /// Where a scheduled rotation delivers the new secret, or null.
    pub rotation_webhook_url: Option<String>,
    /// When the next scheduled rotation is due, or null.
    pub next_rotation_at: Option<Timestamp>,
    /// The new key of a scheduled rotation under way (its webhook not answered yet), or null.
    #[schemars(pattern(KEY_ID_PATTERN))]
    pub rotating_to_key_id: Option<String>,
    /// Where the key stands now.
    pub status: Status,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The key works.
    Active,
    /// Past `expires_at`, or past the grace period of its rotation: the key fails with 401.
    Expired,
    /// Revoked: the key fails with 401.
    Revoked,
    /// Replaced by a rotation and still inside its grace period: the key works until `grace_expires_at`.
    Rotating,
}

impl Status {
    /// Every status, in the order of the schema.
    pub const ALL: [Status; 4] = [
        Status::Active,
        Status::Expired,
        Status::Revoked,
        Status::Rotating,
    ];

    /// The wire name (`active`, `expired`, `revoked`, `rotating`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Rotating => "rotating",
        }
    }
}

#[cfg(feature = "server")]
impl From<KeyStatus> for Status {
    fn from(s: KeyStatus) -> Self {
        match s {
            KeyStatus::Active => Status::Active,
            KeyStatus::Expired => Status::Expired,
            KeyStatus::Revoked => Status::Revoked,
            KeyStatus::Rotating => Status::Rotating,
        }
    }
}

#[cfg(feature = "server")]
impl From<Status> for KeyStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Active => KeyStatus::Active,
            Status::Expired => KeyStatus::Expired,
            Status::Revoked => KeyStatus::Revoked,
            Status::Rotating => KeyStatus::Rotating,
        }
    }
}

#[cfg(feature = "server")]
impl KeyDetails {
    /// The metadata of a stored key, with its status at `now` (unix seconds).
    pub fn at(r: KeyRecord, now: i64) -> Self {
        let status: Status = r.status_at(now).into();
        let is_active =
            matches!(status, Status::Active | Status::Rotating) && r.service_account_active;
        KeyDetails {
            workspace_id: r.workspace_id,
            environment_id: r.environment_id,
            mode: r.mode,
            livemode: r.mode == Mode::Live,
            key_type: r.key_type,
            is_active,
            service_account_id: r.service_account_id,
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
            last_used_at: r.last_used_at.map(Timestamp),
            last_used_ip: r.last_used_ip,
            last_used_user_agent: r.last_used_user_agent,
            revoked_at: r.revoked_at.map(Timestamp),
            replaced_by_key_id: r.replaced_by_key_id,
            grace_expires_at: r.grace_expires_at.map(Timestamp),
            rotation_interval_days: r.rotation_interval_days,
            rotation_webhook_url: r.rotation_webhook_url,
            next_rotation_at: r.next_rotation_at.map(Timestamp),
            rotating_to_key_id: r.rotating_to_key_id,
            status,
        }
    }
}

/// Input of `api_keys.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyInput {
    /// Human-readable name (no control characters).
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, min = 1, max = 128), custom(validate::printable))]
    pub name: String,
    /// Scopes for the new key; defaults to the caller's own. Each must be held by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<ScopeString>>")]
    #[garde(length(max = 64), inner(inner(custom(valid_scope))))]
    pub permissions: Option<Vec<String>>,
    /// Requests per minute the key may make; omit for the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub rate_limit: Option<u32>,
    /// Days until the key expires; omit for a key that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 3650))]
    pub expires_in_days: Option<u32>,
    /// IP addresses or CIDR ranges (IPv4 or IPv6) the key may be used from; empty or omitted means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<IpOrCidr>>")]
    #[garde(length(max = 100), inner(inner(custom(valid_ip_or_cidr))))]
    pub allowed_ips: Option<Vec<String>>,
    /// Free-text description (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, max = 1024), inner(custom(validate::printable)))]
    pub description: Option<String>,
    /// `workspace` (the default: confined to one workspace) or `admin` (organization-wide; only an
    /// organization-wide caller may create one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub key_type: Option<KeyType>,
    /// The workspace of a `workspace` key. Default: the caller's own for a workspace key, else the one named
    /// by `X-Workspace-ID`, else the workspace of `environment_id` or `service_account_id`, else the
    /// organization's default workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
    /// Bind the key to this environment of its workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("env"))))]
    pub environment_id: Option<String>,
    /// `live` or `test`; default: the caller's. A test caller cannot create a live key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub mode: Option<Mode>,
    /// The (enabled) service account of the key's workspace the key belongs to; `created_by` stays the
    /// caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("sa"))))]
    pub service_account_id: Option<String>,
    /// Rotate the key every this many days (1–365): a new key is made and its secret delivered to
    /// `rotation_webhook_url`; only a 2xx answer starts the old key's grace period (24 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 365))]
    pub rotation_interval_days: Option<u32>,
    /// Where scheduled rotations deliver the new secret: `https://` (`http://` only to loopback), signed per
    /// Standard Webhooks with the key's rotation secret (`whsec_` + base64 of HMAC-SHA256(the key,
    /// `opgate rotation webhook v1`)). Required with `rotation_interval_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(URL_PATTERN))]
    #[garde(inner(length(min = 1, max = 2048)))]
    pub rotation_webhook_url: Option<String>,
}

impl CreateKeyInput {
    /// A key named `name` with every other field omitted (the caller's permissions, no limit, no expiry, any
    /// address); set the others with struct update syntax.
    pub fn new(name: impl Into<String>) -> Self {
        CreateKeyInput {
            name: name.into(),
            permissions: None,
            rate_limit: None,
            expires_in_days: None,
            allowed_ips: None,
            description: None,
            key_type: None,
            workspace_id: None,
            environment_id: None,
            mode: None,
            service_account_id: None,
            rotation_interval_days: None,
            rotation_webhook_url: None,
        }
    }
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
    /// Stop after this many keys; omit to stream every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the key with this id (the last id of a previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(inner(custom(validate::id("key"))))]
    pub after_id: Option<String>,
    /// Only keys created before the key with this id (paging backwards; still oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(inner(custom(validate::id("key"))))]
    pub before_id: Option<String>,
    /// Only keys of this workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
    /// Only keys bound to this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("env"))))]
    pub environment_id: Option<String>,
    /// Only keys of this service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("sa"))))]
    pub service_account_id: Option<String>,
    /// Only keys created by this principal id (a key id or a session subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, min = 1, max = 256), inner(custom(validate::printable)))]
    pub created_by: Option<String>,
    /// Include revoked keys (ignored when `status` is given).
    #[serde(default)]
    #[garde(skip)]
    pub include_revoked: bool,
    /// Only keys with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub status: Option<Status>,
}

/// Input of `api_keys.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct GetKeyInput {
    /// Id of the key.
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(custom(validate::id("key")))]
    pub key_id: String,
}

/// Input of `api_keys.update`. Omitted fields stay as they are; `null` clears an optional field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyInput {
    /// Id of the key to change.
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(custom(validate::id("key")))]
    pub key_id: String,
    /// New name (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, min = 1, max = 128), inner(custom(validate::printable)))]
    pub name: Option<String>,
    /// New description (no control characters); `null` clears it.
    #[serde(
        default,
        deserialize_with = "validate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(
        with = "Option<String>",
        length(max = 1024),
        pattern(validate::PRINTABLE_PATTERN)
    )]
    #[garde(custom(validate::nullable_description))]
    pub description: Option<Option<String>>,
    /// New rate limit in requests per minute; `null` clears it (the server default applies).
    #[serde(
        default,
        deserialize_with = "validate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<u32>", range(min = 1, max = 1_000_000))]
    #[garde(custom(nullable_rate_limit))]
    pub rate_limit: Option<Option<u32>>,
    /// New allow-list of IP addresses and CIDR ranges; `null` or `[]` allows any address.
    #[serde(
        default,
        deserialize_with = "validate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Vec<IpOrCidr>>", length(max = 100))]
    #[garde(custom(nullable_allowed_ips))]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// New permissions: each must be held by the key already and by the caller (a key can only be narrowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<ScopeString>>")]
    #[garde(length(max = 64), inner(inner(custom(valid_scope))))]
    pub permissions: Option<Vec<String>>,
    /// Rotate every this many days (1–365), the next rotation that many days from now; `null` stops scheduled
    /// rotation.
    #[serde(
        default,
        deserialize_with = "validate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<u32>", range(min = 1, max = 365))]
    #[garde(custom(nullable_interval))]
    pub rotation_interval_days: Option<Option<u32>>,
    /// New rotation webhook URL; `null` clears it (and needs `rotation_interval_days` cleared too).
    #[serde(
        default,
        deserialize_with = "validate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(
        with = "Option<String>",
        length(min = 1, max = 2048),
        pattern(URL_PATTERN)
    )]
    #[garde(custom(nullable_url))]
    pub rotation_webhook_url: Option<Option<String>>,
}

fn nullable_interval(value: &Option<Option<u32>>, _: &()) -> garde::Result {
    match value {
        Some(Some(days)) if !(1..=365).contains(days) => {
            Err(garde::Error::new("must be between 1 and 365"))
        }
        _ => Ok(()),
    }
}

fn nullable_url(value: &Option<Option<String>>, _: &()) -> garde::Result {
    match value {
        Some(Some(url)) if url.is_empty() || url.len() > 2048 => {
            Err(garde::Error::new("must be 1-2048 characters"))
        }
        _ => Ok(()),
    }
}

impl UpdateKeyInput {
    /// A change of key `key_id` that changes nothing yet; set the fields to change with struct update syntax.
    pub fn new(key_id: impl Into<String>) -> Self {
        UpdateKeyInput {
            key_id: key_id.into(),
            name: None,
            description: None,
            rate_limit: None,
            allowed_ips: None,
            permissions: None,
            rotation_interval_days: None,
            rotation_webhook_url: None,
        }
    }
}

/// Input of `api_keys.rotate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyInput {
    /// Id of the key to replace.
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(custom(validate::id("key")))]
    pub key_id: String,
    /// Seconds the old key keeps working after the rotation (up to 30 days). Default 86400 (24 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(max = 2_592_000))]
    pub grace_period_seconds: Option<u32>,
}

impl RotateKeyInput {
    /// Rotation of key `key_id` with the default grace period.
    pub fn new(key_id: impl Into<String>) -> Self {
        RotateKeyInput {
            key_id: key_id.into(),
            grace_period_seconds: None,
        }
    }
}

/// Output of `api_keys.rotate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RotateKeyOutput {
    /// The new secret key. It is shown only in this response: store it now.
    pub key: String,
    /// The new key's metadata.
    pub key_details: KeyDetails,
    /// Id of the key that was replaced.
    #[schemars(pattern(KEY_ID_PATTERN))]
    pub old_key_id: String,
    /// When the old key stops working.
    pub grace_expires_at: Timestamp,
}

/// Input of `api_keys.revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyInput {
    /// Id of the key to revoke.
    #[schemars(pattern(KEY_ID_PATTERN))]
    #[garde(custom(validate::id("key")))]
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

// `Option<Option<T>>` fields are checked by hand: garde's nested `inner` rules would be read differently by
// schemars, whose constraints on these fields are declared in their `schemars` attributes instead.

fn nullable_rate_limit(value: &Option<Option<u32>>, _: &()) -> garde::Result {
    match value {
        Some(Some(n)) if !(1..=1_000_000).contains(n) => {
            Err(garde::Error::new("must be between 1 and 1000000"))
        }
        _ => Ok(()),
    }
}

fn nullable_allowed_ips(value: &Option<Option<Vec<String>>>, _: &()) -> garde::Result {
    let Some(Some(entries)) = value else {
        return Ok(());
    };
    if entries.len() > 100 {
        return Err(garde::Error::new("at most 100 entries"));
    }
    entries.iter().try_for_each(|e| valid_ip_or_cidr(e, &()))
}

/// Schema of one allow-list entry: an IPv4 or IPv6 address, or a CIDR range. The patterns describe the
/// common written forms; the server also accepts every other form the standard parsers do.
struct IpOrCidr;

impl JsonSchema for IpOrCidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpOrCidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        const V4: &str = r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
        const V6_PREFIX: &str = r"([0-9a-fA-F]{1,4}:){1,7}:";
        const V6_FULL: &str = r"([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}";
        schemars::json_schema!({
            "description": "An IPv4 or IPv6 address, or a CIDR range such as `10.0.0.0/8` or `2001:db8::/32`.",
            "type": "string",
            "anyOf": [
                { "format": "ipv4" },
                { "format": "ipv6" },
                { "pattern": format!("^{V4}/(3[0-2]|[12]?[0-9])$") },
                { "pattern": format!("^({V6_PREFIX}|{V6_FULL})/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$") }
            ]
        })
    }
}

/// Schema of a scope: `*`, `<resource>:<action>` or `<resource>:*`.
struct ScopeString;

impl JsonSchema for ScopeString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        scope::SCHEMA_NAME.into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A scope: `*`, `<resource>:<action>` or `<resource>:*`, in lowercase identifiers.",
            "type": "string",
            "pattern": "^(\\*|[a-z][a-z0-9_]{0,63}:(\\*|[a-z][a-z0-9_]{0,63}))$"
        })
    }
}
