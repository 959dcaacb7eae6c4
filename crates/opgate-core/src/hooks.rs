//! Storage the dispatcher itself needs, as traits so that the server knows no database: the [`Journal`] that
//! keeps each state-changing call's records (its audit record, its idempotent response), and the [`Unit`] of
//! work that commits a handler's change together with those records.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use crate::Error;

/// A boxed future, as the dispatcher's traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One audit record: who called what, on what, from where, and how it ended. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// The request id.
    pub request_id: String,
    /// `api_key` or `session`.
    pub principal_kind: String,
    /// The key id or session subject.
    pub principal_id: String,
    /// The principal's organization.
    pub org_id: String,
    /// The workspace the call worked in (a workspace key's, or the one named with `X-Workspace-ID`).
    pub workspace_id: Option<String>,
    /// The principal's mode: test calls are logged apart from live ones.
    pub mode: crate::Mode,
    /// The operation id.
    pub operation: String,
    /// The object acted on, where there is one.
    pub target_id: Option<String>,
    /// The client address.
    pub client_ip: Option<String>,
    /// The HTTP status sent.
    pub status: u16,
    /// The error code, for failures.
    pub error_code: Option<String>,
    /// How many calls the record stands for: 1, or the number of like refusals of one principal folded into
    /// one record per interval.
    pub count: u32,
    /// The door the call came through: the HTTP API or the MCP endpoint.
    pub via: Via,
}

/// The door a call came through, recorded in its audit record: the same operation may be called by a program
/// over the HTTP API or by an AI agent over MCP, and an auditor wants to tell them apart.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `POST /v1/op/<id>` (or its alias), the HTTP API.
    #[default]
    Http,
    /// A `tools/call` on `POST /mcp`, the Model Context Protocol endpoint.
    Mcp,
}

impl Via {
    /// The stored and wire name: `http` or `mcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Mcp => "mcp",
        }
    }

    /// The value a stored name stands for.
    pub fn parse(text: &str) -> Option<Via> {
        match text {
            "http" => Some(Via::Http),
            "mcp" => Some(Via::Mcp),
            _ => None,
        }
    }
}

/// A response kept for replay under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// SHA-256 of the operation id and request body the response answered.
    pub request_hash: [u8; 32],
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// When it was stored (unix seconds).
    pub created_at: i64,
}

/// A response to keep for `(owner, key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    /// The principal the key belongs to ([`crate::Principal::unique_key`]).
    pub owner: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// What to replay.
    pub response: StoredResponse,
}

/// What a call leaves behind, written in one transaction (with the handler's change when there is one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// The audit record of a state-changing call.
    pub audit: Option<AuditRecord>,
    /// The response to replay for a retry under the same `Idempotency-Key`.
    pub idempotency: Option<IdempotentResponse>,
}

/// The workspaces of each organization, as far as the dispatcher needs them: when an organization-wide
/// principal names one with `X-Workspace-ID`, the call goes ahead only if its organization has it, so that a
/// handler's [`Context::workspace`](crate::Context::workspace) always names one of the caller's own.
#[async_trait::async_trait]
pub trait Workspaces: Send + Sync + 'static {
    /// Whether organization `org_id` has workspace `workspace_id`.
    async fn exists(&self, org_id: &str, workspace_id: &str) -> Result<bool, Error>;
}

/// What [`RateCells::take`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Requests taken from the shared allowance (0: it is spent).
    pub granted: u32,
    /// When the next request frees up (unix microseconds), for `Retry-After`.
    pub next_free_us: i64,
    /// Requests left in the shared allowance after this take (`RateLimit-Remaining`, with the lease's own).
    pub remaining: u32,
    /// When the whole burst is available again (unix microseconds, `RateLimit-Reset`).
    pub full_at_us: i64,
}

/// A fleet's shared rate-limit state: one GCRA cell per limited principal (and organization), from which each
/// instance takes a few requests at a time and spends them locally, so that a limit holds for the fleet
/// without a database round trip per request.
#[async_trait::async_trait]
pub trait RateCells: Send + Sync + 'static {
    /// Takes up to `want` requests from `key`'s allowance of `limit` per minute (a burst of `limit`, then one
    /// every 60/`limit` s) at `now_us` (unix microseconds).
    async fn take(&self, key: &str, limit: u32, want: u32, now_us: i64) -> Result<Taken, Error>;
}

/// Where the dispatcher keeps each call's records. A store that implements it also joins the [`Unit`] of the
/// running call, so that a handler's change commits with the records.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Writes `records` in one transaction; durable when the future resolves.
    async fn record(&self, records: Records) -> Result<(), Error>;
    /// The response stored for `(owner, key)` at or after `not_before` (unix seconds), if any.
    async fn stored_response(
        &self,
        owner: &str,
        key: &str,
        not_before: i64,
    ) -> Result<Option<StoredResponse>, Error>;
}

/// Completes a held unit: writes the records, then commits the change with them.
pub type Finisher = Box<dyn FnOnce(Records) -> BoxFuture<'static, Result<(), Error>> + Send>;

tokio::task_local! {
    static CURRENT: Arc<Unit>;
}

/// The unit of work of one state-changing call. The pipeline opens it around the handler ([`Unit::scope`]);
/// the store's first write inside claims it ([`Unit::claim`]) and commits the call's records in the same
/// transaction as the change. The response goes out only after that commit.
///
/// Without an idempotency key the audit record is known before the change (status 200, the target read at
/// write time) and is written right after it, in the same savepoint. With one, the response body is needed
/// too: the store holds the transaction open after the change and the pipeline completes it with the records
/// through the [`Finisher`].
pub struct Unit {
    audit: Option<AuditRecord>,
    target: Arc<OnceLock<String>>,
    idempotent: bool,
    state: Mutex<State>,
}

enum State {
    Open,
    Claimed,
    /// The change and the audit record are committed.
    Committed,
    /// The change ran; the transaction waits for the records.
    Held {
        finish: Finisher,
        store: Box<dyn Any + Send>,
    },
    /// Taken by the pipeline.
    Finished,
}

/// What the first write of a unit must do beside its change.
#[derive(Debug)]
pub enum Claim {
    /// Write this audit record (its target completed from the call) right after the change, in its savepoint.
    Audit(Box<AuditRecord>),
    /// Keep the transaction open after the change and wait for the [`Finisher`]'s records.
    Hold,
}

/// How a unit ended, for the pipeline's record stage.
pub enum Outcome {
    /// No write claimed it: the records are written on their own.
    Open,
    /// The change and its audit record are committed; nothing is left to write.
    Committed,
    /// The change waits in an open transaction for these records.
    Held(Finisher),
}

impl Unit {
    /// A unit for a call whose audit record, on success, reads `audit` (target filled from `target`), and
    /// whose response is kept for replay when `idempotent`.
    pub fn new(
        audit: Option<AuditRecord>,
        target: Arc<OnceLock<String>>,
        idempotent: bool,
    ) -> Arc<Self> {
        Arc::new(Unit {
            audit,
            target,
            idempotent,
            state: Mutex::new(State::Open),
        })
    }

    /// Runs `fut` (the handler) with this unit as the current one.
    pub async fn scope<F: Future>(self: Arc<Self>, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The unit of the running call, if any.
    pub fn current() -> Option<Arc<Unit>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// The object the call acts on, as the handler named it.
    pub fn target(&self) -> Option<String> {
        self.target.get().cloned()
    }

    /// Claims the unit for a write about to run: `Some` for the first write of an open unit, saying what it
    /// must do beside the change; `None` otherwise (the write is an ordinary one).
    pub fn claim(&self) -> Option<Claim> {
        let mut state = self.state.lock().expect("unit lock");
        if !matches!(*state, State::Open) {
            return None;
        }
        *state = State::Claimed;
        if self.idempotent {
            return Some(Claim::Hold);
        }
        let audit = self.audit.clone()?;
        Some(Claim::Audit(Box::new(AuditRecord {
            target_id: self.target(),
            ..audit
        })))
    }

    /// The claimed write failed and was rolled back: the unit is open again.
    pub fn release(&self) {
        *self.state.lock().expect("unit lock") = State::Open;
    }

    /// The claimed write committed with its audit record.
    pub fn committed(&self) {
        *self.state.lock().expect("unit lock") = State::Committed;
    }

    /// The claimed write ran and its transaction is held: `finish` completes it; `store` is the store's own
    /// handle on it (later writes of the same call join it through [`Unit::held`]).
    pub fn hold(&self, finish: Finisher, store: Box<dyn Any + Send>) {
        *self.state.lock().expect("unit lock") = State::Held { finish, store };
    }

    /// The store's handle on a held transaction, for another write of the same call.
    pub fn held<T: Any + Clone>(&self) -> Option<T> {
        match &*self.state.lock().expect("unit lock") {
            State::Held { store, .. } => store.downcast_ref::<T>().cloned(),
            _ => None,
        }
    }

    /// How the unit ended; called once by the pipeline after the handler.
    pub fn outcome(&self) -> Outcome {
        let state = std::mem::replace(&mut *self.state.lock().expect("unit lock"), State::Finished);
        match state {
            State::Held { finish, .. } => Outcome::Held(finish),
            State::Committed => Outcome::Committed,
            State::Open | State::Claimed | State::Finished => Outcome::Open,
        }
    }
}
