use std::sync::Arc;

use opgate_core::{scope, Context, Error, OpMeta, Operation, SideEffect, Timestamp};

use crate::types::{CreateKeyInput, CreateKeyOutput, KeyDetails};
use crate::{check_known, dedup, grants, token, ApiKeys, KeySpec};

/// `api_keys.create`: mints a key in the caller's organization and returns its secret once.
pub(crate) struct CreateKey(pub Arc<ApiKeys>);

impl Operation for CreateKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.create",
        scope: "api_keys:write",
        side_effect: SideEffect::Export,
        summary: "Create an API key; its secret is returned only in this response.",
    };
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
            .unwrap_or_else(|| caller.permissions.clone());
        if let Some(excess) = permissions
            .iter()
            .find(|p| !scope::covers(&caller.permissions, p))
        {
            return Err(Error::permission_denied(format!(
                "permissions: `{excess}` exceeds the caller's own permissions"
            )));
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
        };
        let key = token::generate();
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
