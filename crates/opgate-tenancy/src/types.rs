//! The wire types of the `workspaces.*`, `environments.*` and `service_accounts.*` operations. Doc comments
//! become the field descriptions in the spec; `garde` rules are both enforced and emitted as constraints.

use opgate_core::{validate, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a workspace id: `ws_` and a lowercase ULID.
const WORKSPACE_ID_PATTERN: &str = opgate_core::id_pattern!("ws");
/// Pattern of an environment id.
const ENVIRONMENT_ID_PATTERN: &str = opgate_core::id_pattern!("env");
/// Pattern of a service account id.
const SERVICE_ACCOUNT_ID_PATTERN: &str = opgate_core::id_pattern!("sa");
/// Pattern of an environment name: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
pub const ENVIRONMENT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A workspace: a part of an organization that workspace keys, environments and service accounts belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkspaceDetails {
    /// Unique id (`ws_...`); send it as `X-Workspace-ID` to work in this workspace.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Free-text description, or null.
    pub description: Option<String>,
    /// Whether this is the organization's default workspace (where keys go when no workspace is named; it
    /// cannot be deleted).
    pub is_default: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// An environment of a workspace (`production`, `staging`, ...) that keys may be bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentDetails {
    /// Unique id (`env_...`); give it as `environment_id` to `api_keys.create`.
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The workspace it belongs to.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    pub workspace_id: String,
    /// Its name, unique within the workspace.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A service account: a non-human owner of keys, so that a key outlives the person who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceAccountDetails {
    /// Unique id (`sa_...`); give it as `service_account_id` to `api_keys.create`.
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The workspace its keys live in.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    pub workspace_id: String,
    /// Display name.
    pub name: String,
    /// Free-text description, or null.
    pub description: Option<String>,
    /// Whether it is enabled: a disabled account's keys fail with 401 from the next request on.
    pub is_active: bool,
    /// When it was disabled, or null.
    pub disabled_at: Option<Timestamp>,
    /// Id of the principal that created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// Input of `workspaces.list` (oldest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListWorkspacesInput {
    /// Stop after this many; omit for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the workspace with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub after_id: Option<String>,
    /// Only workspaces created before the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub before_id: Option<String>,
}

/// Input of `workspaces.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceInput {
    /// Display name (no control characters).
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, min = 1, max = 128), custom(validate::printable))]
    pub name: String,
    /// Free-text description (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, max = 1024), inner(custom(validate::printable)))]
    pub description: Option<String>,
}

impl CreateWorkspaceInput {
    /// A workspace named `name`, without a description.
    pub fn new(name: impl Into<String>) -> Self {
        CreateWorkspaceInput {
            name: name.into(),
            description: None,
        }
    }
}

/// Input of `workspaces.get` and `workspaces.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceIdInput {
    /// Id of the workspace.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(custom(validate::id("ws")))]
    pub workspace_id: String,
}

/// Input of `workspaces.update`. Omitted fields stay; `null` clears the description.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspaceInput {
    /// Id of the workspace.
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(custom(validate::id("ws")))]
    pub workspace_id: String,
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
}

impl UpdateWorkspaceInput {
    /// A change of workspace `workspace_id` that changes nothing yet; set fields with struct update syntax.
    pub fn new(workspace_id: impl Into<String>) -> Self {
        UpdateWorkspaceInput {
            workspace_id: workspace_id.into(),
            name: None,
            description: None,
        }
    }
}

/// Input of `environments.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentInput {
    /// Name, unique within the workspace: lowercase letters, digits, `-` and `_` (e.g. `production`).
    #[schemars(pattern(ENVIRONMENT_NAME_PATTERN))]
    #[garde(custom(environment_name))]
    pub name: String,
    /// The workspace; default: the one the call works in, else the organization's default workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
}

impl CreateEnvironmentInput {
    /// An environment named `name` in the call's workspace (or the default one).
    pub fn new(name: impl Into<String>) -> Self {
        CreateEnvironmentInput {
            name: name.into(),
            workspace_id: None,
        }
    }
}

/// Input of `environments.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListEnvironmentsInput {
    /// Only those of this workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
    /// Stop after this many; omit for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("env"))))]
    pub after_id: Option<String>,
    /// Only those created before the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("env"))))]
    pub before_id: Option<String>,
}

/// Input of `service_accounts.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListServiceAccountsInput {
    /// Only those of this workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
    /// Stop after this many; omit for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
    /// Start after the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("sa"))))]
    pub after_id: Option<String>,
    /// Only those created before the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(inner(custom(validate::id("sa"))))]
    pub before_id: Option<String>,
}

/// Input of `environments.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentIdInput {
    /// Id of the environment.
    #[schemars(pattern(ENVIRONMENT_ID_PATTERN))]
    #[garde(custom(validate::id("env")))]
    pub environment_id: String,
}

/// Input of `service_accounts.create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccountInput {
    /// Display name (no control characters).
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, min = 1, max = 128), custom(validate::printable))]
    pub name: String,
    /// Free-text description (no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::PRINTABLE_PATTERN))]
    #[garde(length(chars, max = 1024), inner(custom(validate::printable)))]
    pub description: Option<String>,
    /// The workspace; default: the one the call works in, else the organization's default workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(WORKSPACE_ID_PATTERN))]
    #[garde(inner(custom(validate::id("ws"))))]
    pub workspace_id: Option<String>,
}

impl CreateServiceAccountInput {
    /// A service account named `name` in the call's workspace (or the default one).
    pub fn new(name: impl Into<String>) -> Self {
        CreateServiceAccountInput {
            name: name.into(),
            description: None,
            workspace_id: None,
        }
    }
}

/// Input of `service_accounts.get` and `service_accounts.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountIdInput {
    /// Id of the service account.
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(custom(validate::id("sa")))]
    pub service_account_id: String,
}

/// Input of `service_accounts.update`. Omitted fields stay; `null` clears the description.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateServiceAccountInput {
    /// Id of the service account.
    #[schemars(pattern(SERVICE_ACCOUNT_ID_PATTERN))]
    #[garde(custom(validate::id("sa")))]
    pub service_account_id: String,
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
    /// `true` disables the account (its keys fail with 401 from the next request on); `false` enables it.
    /// Either is refused (403) while a key of the account holds a permission beyond the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub disabled: Option<bool>,
}

impl UpdateServiceAccountInput {
    /// A change of service account `service_account_id` that changes nothing yet; set fields with struct
    /// update syntax.
    pub fn new(service_account_id: impl Into<String>) -> Self {
        UpdateServiceAccountInput {
            service_account_id: service_account_id.into(),
            name: None,
            description: None,
            disabled: None,
        }
    }
}

/// Output of `service_accounts.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteServiceAccountOutput {
    /// The account as it was.
    pub service_account: ServiceAccountDetails,
    /// How many of its keys of the caller's mode the deletion revoked (those of the other mode are revoked
    /// too).
    pub revoked_keys: u64,
}

fn environment_name(value: &str, _: &()) -> garde::Result {
    let ok = (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
        ))
    }
}
