use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Code, Error, Principal};

/// What calling an operation does to the world; the gateway derives auditing, idempotency and docs from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SideEffect {
    /// Reads state, changes nothing.
    Read,
    /// Changes state.
    Write,
    /// Returns secret material (e.g. a new key), so its response is never stored or replayed.
    Export,
    /// Destroys or disables something irreversibly.
    Destructive,
}

/// How long a response kept for an `Idempotency-Key` is replayed: 24 hours.
pub const IDEMPOTENCY_RETENTION_SECS: i64 = 24 * 60 * 60;
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What each side-effect class implies for the pipeline, the spec and the CLI: one decision, read by all.
impl SideEffect {
    /// Every call is recorded in the audit log (everything but reads).
    pub fn is_audited(self) -> bool {
        self != SideEffect::Read
    }

    /// The call honours `Idempotency-Key`: its response is stored and replayed for a retry. Exports refuse the
    /// header (their responses hold secrets, never stored); reads ignore it.
    pub fn is_idempotent(self) -> bool {
        matches!(self, SideEffect::Write | SideEffect::Destructive)
    }

    /// The call runs to completion whatever the client does (disconnects, resets, times out): a change that
    /// committed is always followed by its audit record and cache invalidation.
    pub fn runs_detached(self) -> bool {
        self != SideEffect::Read
    }

    /// The response carries secret material, so it is never stored, logged or replayed.
    pub fn returns_secrets(self) -> bool {
        self == SideEffect::Export
    }

    /// The wire name (`read`, `write`, `export`, `destructive`).
    pub fn as_str(self) -> &'static str {
        match self {
            SideEffect::Read => "read",
            SideEffect::Write => "write",
            SideEffect::Export => "export",
            SideEffect::Destructive => "destructive",
        }
    }
}

/// The declaration every operation makes; the registry, spec, docs and CLI all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpMeta {
    /// `<resource>.<action>`, e.g. `api_keys.create`.
    pub id: &'static str,
    /// The one scope a caller must hold, e.g. `api_keys:write`; [`crate::scope::AUTHENTICATED`] (empty) for
    /// operations any authenticated principal may call, such as `auth.whoami`.
    pub scope: &'static str,
    /// What the call does to the world.
    pub side_effect: SideEffect,
    /// One line for the spec and the docs.
    pub summary: &'static str,
}

impl OpMeta {
    /// The part of the id before the dot.
    pub fn resource(&self) -> &'static str {
        self.id.split_once('.').map_or(self.id, |(r, _)| r)
    }

    /// The part of the id after the dot.
    pub fn action(&self) -> &'static str {
        self.id.split_once('.').map_or("", |(_, a)| a)
    }
}

/// What a handler knows of the request besides its typed input; handlers never see HTTP.
#[derive(Clone)]
pub struct Context {
    /// The authenticated caller.
    pub principal: Arc<Principal>,
    /// The id sent back in `X-Request-Id`.
    pub request_id: Arc<str>,
    /// The client address as the gateway determined it.
    pub client_ip: Option<IpAddr>,
    /// The id of the object the call acts on, set by the handler for the audit log.
    pub target: Arc<std::sync::OnceLock<String>>,
    /// Every scope the gateway's operations require: grants are checked against it.
    pub scopes: Arc<crate::scope::Catalog>,
    /// The gateway's clock: handlers read the time here, never from the system directly.
    pub clock: Arc<dyn crate::Clock>,
    /// The workspace the call works in: a workspace key's own, or the one an organization-wide principal
    /// named with `X-Workspace-ID`; `None` when an organization-wide principal named none.
    pub workspace: Option<String>,
}

impl Context {
    /// The mode of every object the call sees or makes (the principal's).
    pub fn mode(&self) -> crate::Mode {
        self.principal.mode
    }

    /// Now, by the gateway's clock.
    pub fn now(&self) -> crate::Timestamp {
        self.clock.now()
    }

    /// Records the id of the object this call acts on (the audit log's `target_id`); the first call wins.
    pub fn set_target(&self, id: impl Into<String>) {
        let _ = self.target.set(id.into());
    }
}

/// The items of a streaming operation; an `Err` after the first item ends the stream with an error line.
pub type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>;

/// A typed operation answering one JSON object.
///
/// Input types derive `Deserialize` (with `deny_unknown_fields`), `JsonSchema` and `garde::Validate`: the one
/// set of annotations drives decoding, validation and the generated spec.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `Operation` (one JSON answer)",
    note = "an operation answering a stream of items implements `StreamOperation` and is registered with `Registry::register_stream`"
)]
pub trait Operation: Send + Sync + 'static {
    /// The operation's declaration.
    const META: OpMeta;
    /// Error codes this operation returns itself (e.g. `not_found`, `conflict`), beyond the pipeline's.
    const ERRORS: &'static [Code] = &[];
    /// An example request body (a JSON object); a test checks that it decodes and validates.
    const EXAMPLE: &'static str = "{}";
    /// The request body.
    type Input: DeserializeOwned + JsonSchema + garde::Validate<Context = ()> + Send + 'static;
    /// The response body.
    type Output: Serialize + JsonSchema + Send + 'static;

    /// Runs the operation for an authenticated, authorized caller with validated input.
    fn call(
        &self,
        ctx: Context,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send;
}

/// A typed operation answering a stream of items, sent as NDJSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `StreamOperation` (an NDJSON stream of items)",
    note = "an operation answering one JSON object implements `Operation` and is registered with `Registry::register`"
)]
pub trait StreamOperation: Send + Sync + 'static {
    /// The operation's declaration.
    const META: OpMeta;
    /// Error codes this operation returns itself (e.g. `not_found`), beyond the pipeline's.
    const ERRORS: &'static [Code] = &[];
    /// An example request body (a JSON object); a test checks that it decodes and validates.
    const EXAMPLE: &'static str = "{}";
    /// The request body.
    type Input: DeserializeOwned + JsonSchema + garde::Validate<Context = ()> + Send + 'static;
    /// One item of the stream (one NDJSON line).
    type Item: Serialize + JsonSchema + Send + 'static;

    /// Starts the stream; an `Err` here becomes an ordinary error response.
    fn call(
        &self,
        ctx: Context,
        input: Self::Input,
    ) -> impl Future<Output = Result<Items<Self::Item>, Error>> + Send;
}
