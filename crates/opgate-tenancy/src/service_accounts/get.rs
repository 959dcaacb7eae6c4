use std::sync::Arc;

use opgate_core::{Code, Context, Error, OpMeta, Operation, SideEffect};

use crate::server::within;
use crate::types::{ServiceAccountDetails, ServiceAccountIdInput};
use crate::Tenancy;

/// `service_accounts.get`: one service account.
pub(crate) struct Get(pub Arc<Tenancy>);

impl Operation for Get {
    const META: OpMeta = OpMeta {
        id: "service_accounts.get",
        scope: "service_accounts:read",
        side_effect: SideEffect::Read,
        summary: "Get one service account.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"service_account_id": "sa_01jf3m8v6k2x9q4w7e5r1t0y8z"}"#;
    type Input = ServiceAccountIdInput;
    type Output = ServiceAccountDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ServiceAccountIdInput,
    ) -> Result<ServiceAccountDetails, Error> {
        let id = &input.service_account_id;
        ctx.set_target(id);
        let found = self.0.store.get_service_account(within(&ctx), id).await?;
        found.map(Into::into).ok_or_else(|| super::not_found(id))
    }
}
