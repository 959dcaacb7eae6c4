use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::types::{KeyDetails, RevokeKeyInput};
use crate::{check_target, not_found, ApiKeys};

/// `api_keys.revoke`: disables a key of the caller's organization from the very next request on.
pub(crate) struct RevokeKey(pub Arc<ApiKeys>);

impl Operation for RevokeKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.revoke",
        scope: "api_keys:write",
        side_effect: SideEffect::Destructive,
        summary: "Revoke an API key; it fails from the very next request. Revoking twice keeps the first time.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound, Code::PermissionDenied];
    const EXAMPLE: &'static str = r#"{"key_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = RevokeKeyInput;
    type Output = KeyDetails;

    async fn call(&self, ctx: Context, input: RevokeKeyInput) -> Result<KeyDetails, Error> {
        ctx.set_target(&input.key_id);
        let scope = &crate::scope_of(&ctx);
        // Like update and rotate, revoke refuses a target more powerful than the caller: a narrow key with
        // `api_keys:write` cannot lock out the organization's admins. Permissions only ever narrow, so the
        // check cannot be raced into a wider target.
        let target = self
            .0
            .store
            .get_key(scope, &input.key_id)
            .await?
            .ok_or_else(|| not_found(&input.key_id))?;
        check_target(&ctx.principal, &target)?;
        let record = self
            .0
            .store
            .revoke_key(scope, &input.key_id, ctx.now().unix())
            .await
            .map_err(Error::from)?
            .ok_or_else(|| not_found(&input.key_id))?;
        Ok(KeyDetails::at(record, ctx.now().unix()))
    }
}
