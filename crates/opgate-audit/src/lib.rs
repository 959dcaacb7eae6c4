//! The audit log, readable: `audit.list` streams an organization's records, newest first. The records
//! themselves are appended by the dispatcher for every `write`, `export` and `destructive` call (see
//! `opgate-server`), so no operation writes its own.
//!
//! The wire types ([`ListAuditInput`], [`AuditItem`]) need no storage; the operation sits behind the default
//! feature `server`, which clients turn off.

#[cfg(feature = "server")]
use std::sync::Arc;

#[cfg(feature = "server")]
use futures_util::{stream, StreamExt};
use opgate_core::{validate, Timestamp};
#[cfg(feature = "server")]
use opgate_core::{
    Code, Context, Error, Items, OpMeta, Registry, RegistryError, SideEffect, StreamOperation,
};
#[cfg(feature = "server")]
use opgate_store::{AuditEntry, AuditLog, AuditPage, Scope};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Records read from storage per query.
#[cfg(feature = "server")]
const PAGE_SIZE: usize = 500;
/// Records returned when the request sets no `limit`.
#[cfg(feature = "server")]
const DEFAULT_LIMIT: u32 = 100;

/// Registers the `audit.*` operations over `log`.
#[cfg(feature = "server")]
pub fn register(registry: &mut Registry, log: Arc<dyn AuditLog>) -> Result<(), RegistryError> {
    registry.register_stream(ListAudit(log))?;
    Ok(())
}

/// Input of `audit.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub struct ListAuditInput {
    /// Most records to return, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 100_000))]
    pub limit: Option<u32>,
    /// Only records older than the record with this id (the last id of a previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(AUDIT_ID_PATTERN))]
    #[garde(inner(custom(audit_id)))]
    pub before: Option<String>,
    /// Only records of this operation, e.g. `api_keys.revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(validate::OPERATION_ID_PATTERN))]
    #[garde(inner(custom(validate::operation_id)))]
    pub operation: Option<String>,
}

/// One audit record: a call of a state-changing operation and how it ended. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditItem {
    /// Record id: `aud_` and a lowercase ULID, time-ordered (records from before random ids keep `aud_<n>`).
    #[schemars(pattern(AUDIT_ID_PATTERN))]
    pub id: String,
    /// When the call was answered.
    pub at: Timestamp,
    /// The request id of the call.
    pub request_id: String,
    /// How the caller authenticated: `api_key` or `session`.
    pub principal_kind: String,
    /// The caller: a key id or a session subject.
    pub principal_id: String,
    /// The caller's organization.
    pub org_id: String,
    /// The workspace the call worked in (a workspace key's, or the one named with `X-Workspace-ID`), or null.
    pub workspace_id: Option<String>,
    /// The caller's mode: `live` or `test` (each mode reads only its own records).
    pub mode: opgate_core::Mode,
    /// The operation called.
    pub operation: String,
    /// The object acted on (e.g. a key id), or null.
    pub target_id: Option<String>,
    /// The client address, or null.
    pub client_ip: Option<String>,
    /// The HTTP status of the response.
    pub status: u16,
    /// The error code for failures, or null for success.
    pub error_code: Option<String>,
    /// Calls the record stands for: 1, or for like refusals of one principal before the operation ran, their count.
    pub count: u32,
    /// The door the call came through: `http` (the HTTP API) or `mcp` (a tool call on the MCP endpoint).
    pub via: opgate_core::Via,
}

#[cfg(feature = "server")]
impl From<AuditEntry> for AuditItem {
    fn from(e: AuditEntry) -> Self {
        let r = e.record;
        AuditItem {
            id: e.id,
            at: Timestamp(r.at),
            request_id: r.request_id,
            principal_kind: r.principal_kind,
            principal_id: r.principal_id,
            org_id: r.org_id,
            workspace_id: r.workspace_id,
            mode: r.mode,
            operation: r.operation,
            target_id: r.target_id,
            client_ip: r.client_ip,
            status: r.status,
            error_code: r.error_code,
            count: r.count,
            via: r.via,
        }
    }
}

/// `audit.list`: the caller's organization's audit log, newest first.
#[cfg(feature = "server")]
pub struct ListAudit(pub Arc<dyn AuditLog>);

#[cfg(feature = "server")]
impl StreamOperation for ListAudit {
    const META: OpMeta = OpMeta {
        id: "audit.list",
        scope: "audit:read",
        side_effect: SideEffect::Read,
        summary: "Stream the audit log of write, export and destructive calls the caller sees (its mode; its workspace if it works in one), newest first.",
    };
    const ERRORS: &'static [Code] = &[Code::NotFound];
    const EXAMPLE: &'static str = r#"{"limit": 50, "operation": "api_keys.revoke"}"#;
    type Input = ListAuditInput;
    type Item = AuditItem;

    async fn call(&self, ctx: Context, input: ListAuditInput) -> Result<Items<AuditItem>, Error> {
        let log = Arc::clone(&self.0);
        let scope = Scope {
            org_id: ctx.principal.org.clone(),
            mode: ctx.mode(),
            workspace_id: ctx.workspace.clone(),
        };
        let before = match &input.before {
            None => None,
            Some(id) => Some(log.audit_seq(&scope, id).await?.ok_or_else(|| {
                Error::not_found(format!(
                    "before: no audit record `{id}` in this organization"
                ))
            })?),
        };
        let operation = input.operation;
        let remaining = input.limit.unwrap_or(DEFAULT_LIMIT) as usize;
        let pages = stream::unfold(Some((before, remaining)), move |state| {
            let (log, scope, operation) = (Arc::clone(&log), scope.clone(), operation.clone());
            async move {
                let (before_seq, remaining) = state?;
                if remaining == 0 {
                    return None;
                }
                let limit = remaining.min(PAGE_SIZE);
                let page = AuditPage {
                    scope: &scope,
                    before_seq,
                    operation: operation.as_deref(),
                    limit,
                };
                match log.list_audit(page).await {
                    Err(e) => Some((vec![Err(Error::from(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = (rows.len() == limit)
                            .then(|| (rows.last().map(|r| r.seq), remaining - limit));
                        Some((
                            rows.into_iter()
                                .map(|r| Ok(AuditItem::from(r)))
                                .collect::<Vec<_>>(),
                            next,
                        ))
                    }
                }
            }
        });
        Ok(Box::pin(pages.flat_map(stream::iter)))
    }
}

/// Pattern of an audit record id: `aud_` and a lowercase ULID, or `aud_<n>` for records written before ids
/// were random.
const AUDIT_ID_PATTERN: &str = "^aud_([0-9]{1,18}|[0-7][0-9a-hjkmnp-tv-z]{25})$";

/// A validator for audit record ids ([`AUDIT_ID_PATTERN`]).
fn audit_id(value: &str, _: &()) -> garde::Result {
    let legacy = value
        .strip_prefix("aud_")
        .is_some_and(|n| (1..=18).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    if legacy || validate::is_id("aud", value) {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be an audit record id: `aud_` followed by 26 lowercase letters and digits",
        ))
    }
}
