use std::sync::Arc;

use opgate_core::{scope, Code, Context, Error, OpMeta, Operation, SideEffect};
use opgate_store::KeyPatch;

use crate::types::{KeyDetails, UpdateKeyInput};
use crate::{dedup, not_found, storage_error, ApiKeys};

/// `api_keys.update`: renames, re-describes, re-limits, re-fences or narrows a key.
pub struct UpdateKey(pub Arc<ApiKeys>);

impl Operation for UpdateKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.update",
        scope: "api_keys:write",
        side_effect: SideEffect::Write,
        summary: "Change a key's name, description, rate limit or allowed IPs, or narrow its permissions.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"key_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z", "name": "ci-deploy-eu", "rate_limit": 120, "description": null}"#;
    type Input = UpdateKeyInput;
    type Output = KeyDetails;

    async fn call(&self, ctx: Context, input: UpdateKeyInput) -> Result<KeyDetails, Error> {
        ctx.set_target(&input.key_id);
        let org = &ctx.principal.org;
        if let Some(permissions) = &input.permissions {
            let current = self
                .0
                .store
                .get_key(org, &input.key_id)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| not_found(&input.key_id))?;
            for p in permissions {
                if !scope::covers(&ctx.principal.permissions, p) {
                    return Err(Error::permission_denied(format!(
                        "permissions: `{p}` exceeds the caller's own permissions"
                    )));
                }
                if !scope::covers(&current.permissions, p) {
                    return Err(Error::permission_denied(format!(
                        "permissions: `{p}` would widen the key; permissions can only be narrowed"
                    )));
                }
            }
        }
        let patch = KeyPatch {
            name: input.name,
            description: input.description,
            rate_limit: input.rate_limit,
            allowed_ips: input.allowed_ips.map(Option::unwrap_or_default),
            permissions: input.permissions.map(dedup),
        };
        let record = self
            .0
            .store
            .update_key(org, &input.key_id, patch)
            .await
            .map_err(storage_error)?;
        let record = record.ok_or_else(|| not_found(&input.key_id))?;
        self.0.forget(&record);
        Ok(KeyDetails::now(record))
    }
}
