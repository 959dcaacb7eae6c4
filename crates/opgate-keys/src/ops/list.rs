use std::sync::Arc;

use futures_util::{stream, StreamExt};
use opgate_core::{Code, Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use opgate_store::{KeyFilters, KeyPage};

use crate::types::{KeyDetails, ListKeysInput};
use crate::ApiKeys;

/// Keys read from storage per query; memory stays flat whatever the number of keys.
const PAGE_SIZE: usize = 500;

/// `api_keys.list`: streams the caller's organization's keys, oldest first, page by page.
pub(crate) struct ListKeys(pub Arc<ApiKeys>);

impl StreamOperation for ListKeys {
    const META: OpMeta = OpMeta {
        id: "api_keys.list",
        scope: "api_keys:read",
        side_effect: SideEffect::Read,
        summary: "List the API keys the caller sees (its mode; its workspace if it works in one), oldest first, as an NDJSON stream (never the secrets).",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 100, "include_revoked": false}"#;
    type Input = ListKeysInput;
    type Item = KeyDetails;

    async fn call(&self, ctx: Context, input: ListKeysInput) -> Result<Items<KeyDetails>, Error> {
        let keys = Arc::clone(&self.0);
        let scope = crate::scope_of(&ctx);
        // A cursor must be a key the caller sees: another workspace's or mode's key reads as unknown, so its
        // position tells nothing.
        let position = |field: &'static str, id: Option<String>| {
            let (keys, scope) = (Arc::clone(&keys), scope.clone());
            async move {
                let Some(id) = id else { return Ok(None) };
                let found = keys.store.get_key(&scope, &id).await.map_err(Error::from)?;
                found.map(|k| Some(k.seq)).ok_or_else(|| {
                    Error::not_found(format!("{field}: no API key `{id}` in this organization"))
                })
            }
        };
        let after_seq = position("after_id", input.after_id).await?.unwrap_or(0);
        let before_seq = position("before_id", input.before_id).await?;
        let filters = KeyFilters {
            workspace_id: input.workspace_id,
            environment_id: input.environment_id,
            service_account_id: input.service_account_id,
            created_by: input.created_by,
        };
        let remaining = input.limit.map_or(usize::MAX, |l| l as usize);
        let include_revoked = input.include_revoked;
        let status = input.status.map(Into::into);
        // One clock reading for the whole stream, so that a key's status cannot change between pages.
        let now = ctx.now().unix();

        let pages = stream::unfold(Some((after_seq, remaining)), move |state| {
            let keys = Arc::clone(&keys);
            let (scope, filters) = (scope.clone(), filters.clone());
            async move {
                let (after_seq, remaining) = state?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(PAGE_SIZE);
                let page = KeyPage {
                    scope: &scope,
                    after_seq,
                    before_seq,
                    filters: &filters,
                    limit,
                    include_revoked,
                    status,
                    now,
                };
                match keys.store.list_keys(page).await {
                    Err(e) => Some((vec![Err(Error::from(e))], None)),
                    Ok(rows) => {
                        let next = match rows.last() {
                            Some(last) if rows.len() == limit => {
                                Some((last.seq, remaining - rows.len()))
                            }
                            _ => None,
                        };
                        let items = rows
                            .into_iter()
                            .map(|r| Ok(KeyDetails::at(r, now)))
                            .collect::<Vec<_>>();
                        if items.is_empty() {
                            None
                        } else {
                            Some((items, next))
                        }
                    }
                }
            }
        });
        Ok(Box::pin(pages.flat_map(stream::iter)))
    }
}
