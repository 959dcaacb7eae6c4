use std::sync::Arc;

use opgate_core::{scope, Code, Context, Error, OpMeta, Operation, PrincipalKind, SideEffect};
use opgate_store::{KeyPatch, Update};

use crate::types::{KeyDetails, UpdateKeyInput};
use crate::{check_known, check_target, dedup, grants, not_found, ApiKeys};

/// `api_keys.update`: renames, re-describes, re-limits, re-fences or narrows a key.
pub(crate) struct UpdateKey(pub Arc<ApiKeys>, pub opgate_webhooks::guard::Policy);

impl Operation for UpdateKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.update",
        scope: "api_keys:write",
        side_effect: SideEffect::Write,
        summary: "Change a key's name, description, rate limit, allowed IPs or rotation schedule, or narrow its permissions.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str = r#"{"key_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z", "name": "ci-deploy-eu", "rate_limit": 120, "description": null}"#;
    type Input = UpdateKeyInput;
    type Output = KeyDetails;

    async fn call(&self, ctx: Context, input: UpdateKeyInput) -> Result<KeyDetails, Error> {
        ctx.set_target(&input.key_id);
        if let Some(permissions) = &input.permissions {
            check_known(&ctx.scopes, permissions)?;
        }
        let scope = &crate::scope_of(&ctx);
        let caller = &ctx.principal;
        // An unknown key is a 404 before anything is said about permissions or restrictions.
        let current = self
            .0
            .store
            .get_key(scope, &input.key_id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| not_found(&input.key_id))?;
        check_target(caller, &current)?;
        if let Some(p) = input
            .permissions
            .iter()
            .flatten()
            .find(|p| !scope::covers(&caller.permissions, p))
        {
            return Err(Error::permission_denied(format!(
                "permissions: `{p}` exceeds the caller's own permissions"
            )));
        }
        let loosens_itself = caller.kind == PrincipalKind::ApiKey
            && caller.id == input.key_id
            && (input.rate_limit.is_some() || input.allowed_ips.is_some());
        if loosens_itself {
            return Err(Error::permission_denied(
                "a key cannot change its own rate_limit or allowed_ips; use another key",
            ));
        }
        grants::rate_limit_change(caller, input.rate_limit)?;
        grants::allowed_ips_change(caller, input.allowed_ips.as_ref())?;
        // Scheduling rotations to a URL is receiving the key's next secrets there: allowed only to a caller that
        // could rotate the key itself, and that the key does not outlive.
        let schedules = matches!(input.rotation_webhook_url, Some(Some(_)))
            || matches!(input.rotation_interval_days, Some(Some(_)));
        if schedules {
            crate::check_may_receive_secret(caller, &current, true)?;
        }
        let rotation_webhook_url = match input.rotation_webhook_url {
            Some(Some(url)) => Some(Some(crate::check_rotation_url(&url, self.1)?)),
            other => other,
        };
        let interval_after = input
            .rotation_interval_days
            .unwrap_or(current.rotation_interval_days);
        let url_after = rotation_webhook_url
            .clone()
            .unwrap_or(current.rotation_webhook_url.clone());
        if interval_after.is_some() && url_after.is_none() {
            return Err(Error::invalid_argument(
                "rotation_webhook_url: required while rotation_interval_days is set (the new secret is delivered \
                 there)",
            ));
        }
        if matches!(input.rotation_interval_days, Some(Some(_))) && !current.can_rotate_on_schedule
        {
            return Err(Error::conflict(
                "rotation_interval_days: this key was made before scheduled rotation existed and holds no \
                 rotation webhook secret; rotate it once (api_keys.rotate), then schedule the new key",
            ));
        }
        let patch = KeyPatch {
            name: input.name,
            description: input.description,
            rate_limit: input.rate_limit,
            allowed_ips: input.allowed_ips.map(Option::unwrap_or_default),
            permissions: input.permissions.map(dedup),
            rotation_interval_days: input.rotation_interval_days,
            rotation_webhook_url,
        };
        // Whether the new permissions only narrow the key is checked by the store inside the write, so two
        // concurrent updates cannot widen it between a read and a write.
        let update = self
            .0
            .store
            .update_key(scope, &input.key_id, patch, ctx.now().unix())
            .await
            .map_err(Error::from)?;
        let record = match update {
            Update::Updated(record) => *record,
            Update::NotFound => return Err(not_found(&input.key_id)),
            Update::Widens(p) => {
                return Err(Error::permission_denied(format!(
                    "permissions: `{p}` would widen the key; permissions can only be narrowed"
                )))
            }
        };
        Ok(KeyDetails::at(record, ctx.now().unix()))
    }
}
