use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, PrincipalKind, SideEffect, Timestamp};
use opgate_store::Rotation;

use crate::types::{KeyDetails, RotateKeyInput, RotateKeyOutput};
use crate::{not_found, token, ApiKeys, KeySpec};

/// Grace period when the request names none: 24 hours.
const DEFAULT_GRACE_SECONDS: u32 = 86_400;

/// `api_keys.rotate`: mints a replacement with the same settings; the old key works until its grace ends.
pub(crate) struct RotateKey(pub Arc<ApiKeys>);

impl Operation for RotateKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.rotate",
        scope: "api_keys:write",
        side_effect: SideEffect::Export,
        summary: "Replace a key with a new one (same name, permissions, limits and allow-list); the old key \
                  keeps working for the grace period.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::Conflict];
    const EXAMPLE: &'static str =
        r#"{"key_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z", "grace_period_seconds": 3600}"#;
    type Input = RotateKeyInput;
    type Output = RotateKeyOutput;

    async fn call(&self, ctx: Context, input: RotateKeyInput) -> Result<RotateKeyOutput, Error> {
        ctx.set_target(&input.key_id);
        let scope = &crate::scope_of(&ctx);
        let old = self
            .0
            .store
            .get_key(scope, &input.key_id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| not_found(&input.key_id))?;
        // The replacement is a new grant of the old key's permissions, handed to the caller: like a create, it
        // may not exceed what the caller holds, nor carry fewer restrictions.
        let caller = &ctx.principal;
        crate::check_may_receive_secret(caller, &old, false)?;
        if !old.service_account_active {
            return Err(Error::conflict(
                "key_id: the key's service account is disabled; enable it before rotating its keys",
            ));
        }
        let now = ctx.now().unix();
        let grace_expires_at =
            now + i64::from(input.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS));
        // The replacement lives as long as the old key was meant to, from now, but never past the caller's own
        // expiry, and a key rotating itself cannot extend its life.
        let mut expires_at = old.expires_at.map(|t| now + (t - old.created_at).max(0));
        if let Some(own) = caller.expires_at {
            expires_at = Some(expires_at.map_or(own, |t| t.min(own)));
        }
        if caller.kind == PrincipalKind::ApiKey && caller.id == old.id {
            expires_at = old.expires_at.map(|o| expires_at.map_or(o, |t| t.min(o)));
        }
        let spec = KeySpec {
            org_id: old.org_id.clone(),
            name: old.name.clone(),
            description: old.description.clone(),
            permissions: old.permissions.clone(),
            rate_limit: old.rate_limit,
            allowed_ips: old.allowed_ips.clone(),
            created_by: caller.id.clone(),
            expires_at: expires_at.map(Timestamp),
            mode: old.mode,
            key_type: old.key_type,
            workspace_id: old.workspace_id.clone(),
            environment_id: old.environment_id.clone(),
            service_account_id: old.service_account_id.clone(),
            rotation_interval_days: old.rotation_interval_days,
            rotation_webhook_url: old.rotation_webhook_url.clone(),
        };
        let secret = token::generate(spec.mode);
        let new = self.0.new_key(&secret, spec);
        match self
            .0
            .store
            .rotate_key(scope, &input.key_id, new, grace_expires_at, now)
            .await
            .map_err(Error::from)?
        {
            Rotation::NotFound => Err(not_found(&input.key_id)),
            Rotation::Conflict(old) => Err(Error::conflict(match old.status_at(now).as_str() {
                "active" => "key_id: the key changed while it was being rotated; retry".to_owned(),
                status => format!("key_id: the key is {status}; only an active key can be rotated"),
            })),
            Rotation::Rotated { old, new } => Ok(RotateKeyOutput {
                key: secret,
                key_details: KeyDetails::at(*new, now),
                old_key_id: old.id,
                grace_expires_at: Timestamp(grace_expires_at),
            }),
        }
    }
}
