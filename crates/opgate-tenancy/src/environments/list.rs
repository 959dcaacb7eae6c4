use std::sync::Arc;

use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use opgate_store::Environment;

use crate::server::{list, narrowed, Paging};
use crate::types::{EnvironmentDetails, ListEnvironmentsInput};
use crate::Tenancy;

/// `environments.list`: the environments the caller sees, oldest first.
pub(crate) struct List(pub Arc<Tenancy>);

impl StreamOperation for List {
    const META: OpMeta = OpMeta {
        id: "environments.list",
        scope: "environments:read",
        side_effect: SideEffect::Read,
        summary: "List environments (of one workspace, or of every workspace the caller sees), oldest first, as an NDJSON stream.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 50}"#;
    type Input = ListEnvironmentsInput;
    type Item = EnvironmentDetails;

    async fn call(
        &self,
        ctx: Context,
        input: ListEnvironmentsInput,
    ) -> Result<Items<EnvironmentDetails>, Error> {
        let paging = Paging {
            limit: input.limit,
            after_id: input.after_id,
            before_id: input.before_id,
        };
        let view = narrowed(&ctx, input.workspace_id.as_deref());
        list::<Environment, _>(&self.0, view, paging).await
    }
}
