//! The wire types of the `webhooks.*` operations. Doc comments become the field descriptions in the spec.

use opgate_core::{validate, Mode, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a webhook endpoint id.
const WEBHOOK_ID_PATTERN: &str = opgate_core::id_pattern!("wh");
/// Pattern of a delivery id.
const DELIVERY_ID_PATTERN: &str = opgate_core::id_pattern!("whd");
/// The shape of an endpoint URL (the server checks the rest: addresses, credentials, a parseable host).
const URL_PATTERN: &str = "^https?://[^\\s/?#@]+(/[^\\s#]*)?$";
/// Pattern of an event (message) id: the `webhook-id` header.
const EVENT_ID_PATTERN: &str = opgate_core::id_pattern!("msg");

/// The events an endpoint may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// A key was created (its metadata, never the secret).
    #[serde(rename = "api_key.created")]
    ApiKeyCreated,
    /// A key's name, description, limits, allow-list or permissions changed.
    #[serde(rename = "api_key.updated")]
    ApiKeyUpdated,
    /// A key was replaced by a rotation (the old key's metadata: `replaced_by_key_id`, `grace_expires_at`).
    #[serde(rename = "api_key.rotated")]
    ApiKeyRotated,
    /// A key was revoked.
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    /// A key expires within 7 days, then within 1 day (`data.expires_within`), once each.
    #[serde(rename = "api_key.expiring")]
    ApiKeyExpiring,
    /// A scheduled rotation failed: its webhook never answered 2xx. The new key was revoked and the old one
    /// works on (`data.rotation_error`, `data.revoked_key_id`); the rotation is tried again in a day.
    #[serde(rename = "api_key.rotation_failed")]
    ApiKeyRotationFailed,
    /// An endpoint was disabled because its deliveries kept failing.
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// A workspace was created (a live event: the structure is shared by both modes).
    #[serde(rename = "workspace.created")]
    WorkspaceCreated,
    /// A workspace's name or description changed.
    #[serde(rename = "workspace.updated")]
    WorkspaceUpdated,
    /// A workspace was deleted.
    #[serde(rename = "workspace.deleted")]
    WorkspaceDeleted,
    /// A service account was created.
    #[serde(rename = "service_account.created")]
    ServiceAccountCreated,
    /// A service account's name or description changed.
    #[serde(rename = "service_account.updated")]
    ServiceAccountUpdated,
    /// A service account was disabled: its keys fail from now on.
    #[serde(rename = "service_account.disabled")]
    ServiceAccountDisabled,
    /// A service account was enabled again.
    #[serde(rename = "service_account.enabled")]
    ServiceAccountEnabled,
    /// A service account was deleted and its keys revoked.
    #[serde(rename = "service_account.deleted")]
    ServiceAccountDeleted,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 15] = [
        EventType::ApiKeyCreated,
        EventType::ApiKeyUpdated,
        EventType::ApiKeyRotated,
        EventType::ApiKeyRevoked,
        EventType::ApiKeyExpiring,
        EventType::ApiKeyRotationFailed,
        EventType::WebhookDisabled,
        EventType::WorkspaceCreated,
        EventType::WorkspaceUpdated,
        EventType::WorkspaceDeleted,
        EventType::ServiceAccountCreated,
        EventType::ServiceAccountUpdated,
        EventType::ServiceAccountDisabled,
        EventType::ServiceAccountEnabled,
        EventType::ServiceAccountDeleted,
    ];

    /// The wire name, e.g. `api_key.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ApiKeyCreated => "api_key.created",
            EventType::ApiKeyUpdated => "api_key.updated",
            EventType::ApiKeyRotated => "api_key.rotated",
            EventType::ApiKeyRevoked => "api_key.revoked",
            EventType::ApiKeyExpiring => "api_key.expiring",
            EventType::ApiKeyRotationFailed => "api_key.rotation_failed",
            EventType::WebhookDisabled => "webhook.disabled",
            EventType::WorkspaceCreated => "workspace.created",
            EventType::WorkspaceUpdated => "workspace.updated",
            EventType::WorkspaceDeleted => "workspace.deleted",
            EventType::ServiceAccountCreated => "service_account.created",
            EventType::ServiceAccountUpdated => "service_account.updated",
            EventType::ServiceAccountDisabled => "service_account.disabled",
            EventType::ServiceAccountEnabled => "service_account.enabled",
            EventType::ServiceAccountDeleted => "service_account.deleted",
        }
    }

    /// The event type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A webhook endpoint. Never carries its signing secret (only `webhooks.create` and
/// `webhooks.rotate_secret` answer it, once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDetails {
    /// Unique id (`wh_...`).
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    pub id: String,
    /// The organization whose events it gets.
    pub org_id: String,
    /// The mode whose events it gets (the creator's).
    pub mode: Mode,
    /// Where events are POSTed.
    pub url: String,
    /// Free-text description, or null.
    pub description: Option<String>,
    /// The event types it gets; empty: every type.
    pub event_types: Vec<EventType>,
    /// Whether events are delivered to it now.
    pub enabled: bool,
    /// When it was disabled, or null.
    pub disabled_at: Option<Timestamp>,
    /// Why it was disabled (`disabled by a caller`, `deliveries kept failing`), or null.
    pub disabled_reason: Option<String>,
    /// Id of the principal that created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// Input of `webhooks.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookInput {
    /// `https://` URL events are POSTed to (`http://` only to loopback, or with `--allow-insecure-webhooks`).
    /// Loopback, private and link-local addresses are refused, when the URL is set and again at every delivery
    /// after resolving its name, unless the server runs with `--allow-private-webhooks`.
    #[schemars(pattern(URL_PATTERN))]
    #[garde(length(min = 1, max = 2048))]
    pub url: String,
    /// The event types to get; omitted or empty: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 32))]
    pub event_types: Option<Vec<EventType>>,
    /// Free-text description (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, max = 1024), inner(custom(validate::printable)))]
    pub description: Option<String>,
}

/// Output of `webhooks.create` and `webhooks.rotate_secret`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookWithSecret {
    /// The signing secret (`whsec_...`, Standard Webhooks). It is shown only in this response: store it now.
    pub secret: String,
    /// The endpoint.
    pub webhook: WebhookDetails,
}

/// Input of `webhooks.get`, `webhooks.delete` and `webhooks.rotate_secret`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct WebhookIdInput {
    /// Id of the endpoint.
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    #[garde(custom(validate::id("wh")))]
    pub webhook_id: String,
}

/// Input of `webhooks.update`. Omitted fields stay; `null` clears the description.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookInput {
    /// Id of the endpoint.
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    #[garde(custom(validate::id("wh")))]
    pub webhook_id: String,
    /// New URL (the same rules as `webhooks.create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(URL_PATTERN))]
    #[garde(inner(length(min = 1, max = 2048)))]
    pub url: Option<String>,
    /// New event types; empty: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(length(max = 32)))]
    pub event_types: Option<Vec<EventType>>,
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
    /// `false` disables the endpoint: events are not queued for it meanwhile, and its waiting deliveries hold;
    /// `true` enables it again, and those go on in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub enabled: Option<bool>,
}

impl UpdateWebhookInput {
    /// A change of endpoint `webhook_id` that changes nothing yet; set fields with struct update syntax.
    pub fn new(webhook_id: impl Into<String>) -> Self {
        UpdateWebhookInput {
            webhook_id: webhook_id.into(),
            url: None,
            event_types: None,
            description: None,
            enabled: None,
        }
    }
}

/// Input of `webhooks.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListWebhooksInput {
    /// Stop after this many; omit for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the endpoint with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    #[garde(inner(custom(validate::id("wh"))))]
    pub after_id: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed (about 24 hours of retries), or its endpoint was deleted.
    Failed,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryDetails {
    /// Unique id (`whd_...`); give it to `webhooks.redeliver`.
    #[schemars(pattern(DELIVERY_ID_PATTERN))]
    pub id: String,
    /// The endpoint.
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    pub webhook_id: String,
    /// The event's id, sent as `webhook-id` on every attempt (receivers deduplicate on it).
    #[schemars(pattern(EVENT_ID_PATTERN))]
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts since it was last queued (a redelivery starts a new round of retries; `history` keeps all).
    pub attempts: u32,
    /// When the next attempt is due (while pending), or null.
    pub next_attempt_at: Option<Timestamp>,
    /// The last attempt's HTTP status, or null if it got no answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (never more than the start of the answer), or null.
    pub last_error: Option<String>,
    /// How long the last attempt took, in milliseconds, or null.
    pub last_latency_ms: Option<u32>,
    /// When the event happened.
    pub created_at: Timestamp,
    /// When it was delivered or given up, or null.
    pub finished_at: Option<Timestamp>,
    /// Every attempt, oldest first (the last 50): when, the answer's status, the latency and why it failed.
    pub history: Vec<AttemptDetails>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptDetails {
    /// When it was made.
    pub at: Timestamp,
    /// The HTTP status of the answer, or null if none came (refused address, timeout, connection error).
    pub status: Option<u16>,
    /// How long it took, in milliseconds.
    pub latency_ms: Option<u32>,
    /// Why it failed (never more than the start of the answer), or null when it was delivered.
    pub error: Option<String>,
}

/// Input of `webhooks.deliveries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveriesInput {
    /// Only this endpoint's deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WEBHOOK_ID_PATTERN))]
    #[garde(inner(custom(validate::id("wh"))))]
    pub webhook_id: Option<String>,
    /// Only deliveries in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub status: Option<DeliveryStatus>,
    /// Only deliveries older than the one with this id (the last id of a previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DELIVERY_ID_PATTERN))]
    #[garde(inner(custom(validate::id("whd"))))]
    pub before_id: Option<String>,
    /// Most deliveries to return, newest first (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 100_000))]
    pub limit: Option<u32>,
}

/// Input of `webhooks.redeliver`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct RedeliverInput {
    /// Id of the delivery to send again (same event, same `webhook-id`).
    #[schemars(pattern(DELIVERY_ID_PATTERN))]
    #[garde(custom(validate::id("whd")))]
    pub delivery_id: String,
}
