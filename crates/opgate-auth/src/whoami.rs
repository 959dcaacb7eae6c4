//! `auth.whoami`: who the caller is, as the gateway authenticated it.

use opgate_core::{
    scope, Context, Error, KeyType, Mode, OpMeta, Operation, PrincipalKind, SideEffect, Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Input of `auth.whoami`: an empty object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct WhoamiInput {}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An API key (`opg_...`).
    ApiKey,
    /// A session token (an HS256 JWT).
    Session,
}

/// Output of `auth.whoami`: the authenticated principal.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WhoamiOutput {
    /// How the caller authenticated: `api_key` or `session`.
    pub kind: CredentialKind,
    /// The API key's id, or the session token's subject (`sub`).
    pub id: String,
    /// The organization whose objects the caller sees.
    pub org: String,
    /// The scopes the caller holds.
    pub permissions: Vec<String>,
    /// The credential's own rate limit in requests per minute; null when it has none (always, for sessions).
    pub rate_limit: Option<u32>,
    /// When the credential stops working: a key's expiry or rotation grace end, a session's `exp`; null if never.
    pub expires_at: Option<Timestamp>,
    /// The workspace the call works in: a workspace key's own, or the one named with `X-Workspace-ID`; null
    /// for an organization-wide caller that named none.
    #[schemars(pattern(opgate_core::id_pattern!("ws")))]
    pub workspace_id: Option<String>,
    /// The environment the key is bound to, or null.
    #[schemars(pattern(opgate_core::id_pattern!("env")))]
    pub environment_id: Option<String>,
    /// `live` or `test`: the caller sees and acts on objects of this mode only.
    pub mode: Mode,
    /// Whether `mode` is `live`.
    pub livemode: bool,
    /// An API key's type: `admin` (organization-wide) or `workspace`; null for a session (organization-wide).
    pub key_type: Option<KeyType>,
    /// The service account the key belongs to, or null.
    #[schemars(pattern(opgate_core::id_pattern!("sa")))]
    pub service_account_id: Option<String>,
}

/// `auth.whoami`: describes the caller; needs no scope beyond a valid token.
pub struct Whoami;

impl Operation for Whoami {
    const META: OpMeta = OpMeta {
        id: "auth.whoami",
        scope: scope::AUTHENTICATED,
        side_effect: SideEffect::Read,
        summary: "Describe the caller: credential kind, id, organization, workspace, environment, mode, key type, service account, permissions, rate limit and expiry.",
    };
    const EXAMPLE: &'static str = "{}";
    type Input = WhoamiInput;
    type Output = WhoamiOutput;

    async fn call(&self, ctx: Context, _input: WhoamiInput) -> Result<WhoamiOutput, Error> {
        let p = &ctx.principal;
        Ok(WhoamiOutput {
            kind: match p.kind {
                PrincipalKind::ApiKey => CredentialKind::ApiKey,
                PrincipalKind::Session => CredentialKind::Session,
            },
            id: p.id.clone(),
            org: p.org.clone(),
            permissions: p.permissions.clone(),
            rate_limit: p.rate_limit,
            expires_at: p.expires_at.map(Timestamp),
            workspace_id: ctx.workspace.clone(),
            environment_id: p.environment.clone(),
            mode: p.mode,
            livemode: p.mode == Mode::Live,
            key_type: p.key_type,
            service_account_id: p.service_account.clone(),
        })
    }
}
