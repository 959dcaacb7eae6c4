//! Storage the dispatcher itself needs, as traits so that the server knows no database: the audit log it
//! appends to for every state-changing call, and the idempotency records it replays.

use std::future::Future;
use std::pin::Pin;

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
}

/// Where the dispatcher appends audit records; an append is durable when its future resolves.
pub trait AuditSink: Send + Sync + 'static {
    /// Appends one record.
    fn append(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), Error>>;
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

/// Durable storage of idempotent responses, per principal and key.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// The response stored for `(principal, key)` at or after `not_before` (unix seconds), if any.
    fn get<'a>(
        &'a self,
        principal: &'a str,
        key: &'a str,
        not_before: i64,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, Error>>;
    /// Stores (or replaces) the response for `(principal, key)`.
    fn put<'a>(
        &'a self,
        principal: &'a str,
        key: &'a str,
        response: StoredResponse,
    ) -> BoxFuture<'a, Result<(), Error>>;
}
