use std::sync::Arc;

use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use opgate_store::ServiceAccount;

use crate::server::{list, narrowed, Paging};
use crate::types::{ListServiceAccountsInput, ServiceAccountDetails};
use crate::Tenancy;

/// `service_accounts.list`: the service accounts the caller sees, oldest first.
pub(crate) struct List(pub Arc<Tenancy>);

impl StreamOperation for List {
    const META: OpMeta = OpMeta {
        id: "service_accounts.list",
        scope: "service_accounts:read",
        side_effect: SideEffect::Read,
        summary: "List service accounts (of one workspace, or of every workspace the caller sees), oldest first, as an NDJSON stream.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 50}"#;
    type Input = ListServiceAccountsInput;
    type Item = ServiceAccountDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ListServiceAccountsInput,
    ) -> Result<Items<ServiceAccountDetails>, Error> {
        let paging = Paging {
            limit: input.limit,
            after_id: input.after_id,
            before_id: input.before_id,
        };
        let view = narrowed(&ctx, input.workspace_id.as_deref());
        list::<ServiceAccount, _>(&self.0, view, paging).await
    }
}
