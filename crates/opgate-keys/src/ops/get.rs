use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::types::{GetKeyInput, KeyDetails};
use crate::{not_found, ApiKeys};

/// `api_keys.get`: one key's metadata.
pub(crate) struct GetKey(pub Arc<ApiKeys>);

impl Operation for GetKey {
    const META: OpMeta = OpMeta {
        id: "api_keys.get",
        scope: "api_keys:read",
        side_effect: SideEffect::Read,
        summary: "Get one API key's metadata (never the secret).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"key_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = GetKeyInput;
    type Output = KeyDetails;

    async fn call(&self, ctx: Context, input: GetKeyInput) -> Result<KeyDetails, Error> {
        ctx.set_target(&input.key_id);
        let record = self
            .0
            .store
            .get_key(&crate::scope_of(&ctx), &input.key_id)
            .await
            .map_err(Error::from)?;
        record
            .map(|r| KeyDetails::at(r, ctx.now().unix()))
            .ok_or_else(|| not_found(&input.key_id))
    }
}
