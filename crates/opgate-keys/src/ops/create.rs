use std::sync::Arc;

use opgate_core::{
    scope, Code, Context, Error, KeyType, Mode, OpMeta, Operation, SideEffect, Timestamp,
};
use opgate_store::Within;

use crate::types::{CreateKeyInput, CreateKeyOutput, KeyDetails};
use crate::{check_known, dedup, grants, token, ApiKeys, KeySpec};

/// `api_keys.create`: mints a key in the caller's organization and returns its secret once.
pub(crate) struct CreateKey(pub Arc<ApiKeys>, pub opgate_webhooks::guard::Policy);

/// Where a new workspace key goes.
struct Placement {
    workspace_id: Option<String>,
    environment_id: Option<String>,
    service_account_id: Option<String>,
}

impl Operation for CreateKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.create",
        scope: "api_keys:write",
        side_effect: SideEffect::Export,
        summary: "Create an API key; its secret is returned only in this response.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"name": "ci-deploy", "permissions": ["api_keys:read"], "rate_limit": 600, "expires_in_days": 90, "allowed_ips": ["10.0.0.0/8"], "description": "Used by the deploy pipeline."}"#;
    type Input = CreateKeyInput;
    type Output = CreateKeyOutput;

    async fn call(&self, ctx: Context, input: CreateKeyInput) -> Result<CreateKeyOutput, Error> {
        let caller = &ctx.principal;
        if let Some(permissions) = &input.permissions {
            check_known(&ctx.scopes, permissions)?;
        }
        let permissions = input
            .permissions
            .clone()
            .unwrap_or_else(|| caller.permissions.clone());
        if let Some(excess) = permissions
            .iter()
            .find(|p| !scope::covers(&caller.permissions, p))
        {
            return Err(Error::permission_denied(format!(
                "permissions: `{excess}` exceeds the caller's own permissions"
            )));
        }
        let mode = input.mode.unwrap_or(caller.mode);
        if mode == Mode::Live && caller.mode == Mode::Test {
            return Err(Error::permission_denied(
                "mode: a test-mode caller cannot create a live key",
            ));
        }
        let key_type = input.key_type.unwrap_or(KeyType::Workspace);
        let placement = match key_type {
            KeyType::Admin => admin_placement(&ctx, &input)?,
            KeyType::Workspace => self.place(&ctx, &input).await?,
        };
        let rotation_webhook_url = input
            .rotation_webhook_url
            .as_deref()
            .map(|url| crate::check_rotation_url(url, self.1))
            .transpose()?;
        if input.rotation_interval_days.is_some() && rotation_webhook_url.is_none() {
            return Err(Error::invalid_argument(
                "rotation_webhook_url: required with rotation_interval_days (the new secret is delivered there)",
            ));
        }
        let requested_expiry = input
            .expires_in_days
            .map(|d| ctx.now().unix() + i64::from(d) * 86_400);
        let spec = KeySpec {
            org_id: caller.org.clone(),
            name: input.name,
            description: input.description,
            permissions: dedup(permissions),
            rate_limit: grants::rate_limit(caller, input.rate_limit)?,
            allowed_ips: grants::allowed_ips(caller, input.allowed_ips)?,
            created_by: caller.id.clone(),
            expires_at: grants::expires_at(caller, requested_expiry)?.map(Timestamp),
            mode,
            key_type,
            workspace_id: placement.workspace_id,
            environment_id: placement.environment_id,
            service_account_id: placement.service_account_id,
            rotation_interval_days: input.rotation_interval_days,
            rotation_webhook_url,
        };
        let key = token::generate(mode);
        let new = self.0.new_key(&key, spec);
        // Named before the write: the audit record commits with the key, and names it.
        ctx.set_target(&new.id);
        let record = self.0.store.insert_key(new).await?;
        Ok(CreateKeyOutput {
            key,
            key_details: KeyDetails::at(record, ctx.now().unix()),
        })
    }
}

/// An admin key: only for an organization-wide caller, and outside every workspace.
fn admin_placement(ctx: &Context, input: &CreateKeyInput) -> Result<Placement, Error> {
    if !ctx.principal.is_org_wide() {
        return Err(Error::permission_denied(
            "key_type: only an organization-wide caller (an admin key or a session) can create an admin key",
        ));
    }
    if let Some(ws) = &ctx.workspace {
        return Err(Error::permission_denied(format!(
            "key_type: an admin key is organization-wide, but X-Workspace-ID confines the call to workspace \
             `{ws}`; send it without the header"
        )));
    }
    let inside = [
        ("workspace_id", input.workspace_id.is_some()),
        ("environment_id", input.environment_id.is_some()),
        ("service_account_id", input.service_account_id.is_some()),
    ];
    if let Some((field, _)) = inside.iter().find(|(_, set)| *set) {
        return Err(Error::invalid_argument(format!(
            "{field}: an admin key is organization-wide and belongs to no workspace; omit {field} or create a \
             workspace key"
        )));
    }
    Ok(Placement {
        workspace_id: None,
        environment_id: None,
        service_account_id: None,
    })
}

impl CreateKey {
    /// The workspace, environment and service account of a new workspace key: the call's workspace if it
    /// works in one, else the one named, else the environment's or service account's; each named object must
    /// be one the caller sees, in that workspace.
    async fn place(&self, ctx: &Context, input: &CreateKeyInput) -> Result<Placement, Error> {
        let (tenancy, org) = (&self.0.tenancy, ctx.principal.org.as_str());
        // A key bound to an environment or owned by a service account passes them on: its keys cannot
        // escape the account's kill switch or the environment.
        let environment_id = inherited(
            "environment_id",
            "environment",
            &ctx.principal.environment,
            &input.environment_id,
        )?;
        let service_account_id = inherited(
            "service_account_id",
            "service account",
            &ctx.principal.service_account,
            &input.service_account_id,
        )?;
        let mut workspace = match (&ctx.workspace, &input.workspace_id) {
            (Some(own), Some(asked)) if own != asked => {
                return Err(confined(ctx, own));
            }
            (Some(own), _) => Some(own.clone()),
            (None, Some(asked)) => {
                let within = Within {
                    org_id: org,
                    workspace_id: None,
                };
                tenancy.get_workspace(within, asked).await?.ok_or_else(|| {
                    Error::not_found(format!(
                        "workspace_id: no workspace `{asked}` in this organization"
                    ))
                })?;
                Some(asked.clone())
            }
            (None, None) => None,
        };
        let where_ = |ws: &Option<String>| match ws {
            Some(ws) => format!("in workspace `{ws}`"),
            None => "in this organization".to_owned(),
        };
        if let Some(id) = &environment_id {
            let within = Within {
                org_id: org,
                workspace_id: workspace.as_deref(),
            };
            let env = tenancy.get_environment(within, id).await?.ok_or_else(|| {
                Error::not_found(format!(
                    "environment_id: no environment `{id}` {}",
                    where_(&workspace)
                ))
            })?;
            workspace = Some(env.workspace_id);
        }
        if let Some(id) = &service_account_id {
            let within = Within {
                org_id: org,
                workspace_id: workspace.as_deref(),
            };
            let account = tenancy
                .get_service_account(within, id)
                .await?
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "service_account_id: no service account `{id}` {}",
                        where_(&workspace)
                    ))
                })?;
            if account.disabled_at.is_some() {
                return Err(Error::conflict(format!(
                    "service_account_id: the service account `{id}` is disabled"
                )));
            }
            workspace = Some(account.workspace_id);
        }
        Ok(Placement {
            workspace_id: workspace,
            environment_id,
            service_account_id,
        })
    }
}

/// 403 for a call that names another workspace than the one it is confined to: a workspace key's own, or the
/// one `X-Workspace-ID` named.
fn confined(ctx: &Context, own: &str) -> Error {
    Error::permission_denied(if ctx.principal.is_org_wide() {
        format!("workspace_id: X-Workspace-ID confines the call to workspace `{own}`; name that one or omit workspace_id")
    } else {
        format!("workspace_id: this key is confined to workspace `{own}`")
    })
}

/// What a caller bound to `own` (an environment, a service account) passes on to the keys it creates: its
/// own, whether named or not; naming another is 403.
fn inherited(
    field: &str,
    what: &str,
    own: &Option<String>,
    asked: &Option<String>,
) -> Result<Option<String>, Error> {
    match (own, asked) {
        (Some(own), Some(asked)) if own != asked => Err(Error::permission_denied(format!(
            "{field}: this key belongs to {what} `{own}`, and so do the keys it creates"
        ))),
        (Some(own), _) => Ok(Some(own.clone())),
        (None, asked) => Ok(asked.clone()),
    }
}
