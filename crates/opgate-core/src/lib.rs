//! The heart of opgate: operations declare what they are (id, scope, side-effect class, input and output
//! types) and the [`Registry`] turns those declarations into a dispatch table that the HTTP server, the spec
//! generator and the CLI all read. Nothing here knows about HTTP, SQLite or API keys.

pub mod clock;
mod error;
mod hooks;
mod operation;
mod principal;
mod registry;
pub mod scope;
pub mod secret_file;
mod timestamp;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Cause, Code, Error, ErrorBody, ErrorDetail};
pub use hooks::{
    AuditRecord, BoxFuture, Claim, Finisher, IdempotentResponse, Journal, Outcome, RateCells,
    Records, StoredResponse, Taken, Unit, Via, Workspaces,
};
pub use operation::{
    Context, Items, OpMeta, Operation, SideEffect, StreamOperation, IDEMPOTENCY_RETENTION_SECS,
    MAX_IDEMPOTENCY_KEY_LEN,
};
pub use principal::{
    Authenticator, KeyType, Mode, Principal, PrincipalKind, RequestInfo, API_KEY_PREFIX,
    WORKSPACE_HEADER,
};
pub use registry::{
    decode_input, schema_generator, DynamicHandler, DynamicOperation, Encoded, Entry, Input,
    Registry, RegistryError, ReplyFuture, SchemaFn,
};
pub use timestamp::Timestamp;

/// The validation crate input types derive `garde::Validate` from (this exact version: a type deriving
/// another version's trait would not register).
pub use garde;
/// The schema crate input and output types derive `JsonSchema` from (schemars 1.x, whose schemas are JSON
/// Schema 2020-12 as OpenAPI 3.1 wants).
pub use schemars;
/// Serialization, as input and output types derive it.
pub use serde;
