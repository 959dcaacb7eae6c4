use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The error codes of the contract; each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The body is not a JSON object, has an unknown field, a wrong type or a value out of range.
    InvalidArgument,
    /// No token, a garbled token, or an unknown, revoked or expired key.
    Unauthenticated,
    /// The principal lacks the scope, the client address is not allowed, or a grant exceeds the caller's own.
    PermissionDenied,
    /// Unknown operation, or an object the caller's organization cannot see.
    NotFound,
    /// A method other than POST on an operation path.
    MethodNotAllowed,
    /// The object's state forbids the request.
    Conflict,
    /// The body is over the size limit.
    PayloadTooLarge,
    /// The body has a content type other than JSON.
    UnsupportedMediaType,
    /// An idempotency key was reused with a different body.
    IdempotencyMismatch,
    /// The key's rate limit is spent.
    RateLimited,
    /// A bug on the server; the message never carries internals.
    Internal,
    /// The server is shutting down or its storage is unavailable.
    Unavailable,
    /// An upstream service answered something the gateway cannot pass on, or could not be reached.
    BadGateway,
    /// An upstream service did not answer in time.
    GatewayTimeout,
}

impl Code {
    /// Every code, in the order of the contract's table.
    pub const ALL: [Code; 14] = [
        Code::InvalidArgument,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::IdempotencyMismatch,
        Code::RateLimited,
        Code::Internal,
        Code::Unavailable,
        Code::BadGateway,
        Code::GatewayTimeout,
    ];

    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            Code::InvalidArgument => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Conflict => 409,
            Code::PayloadTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::IdempotencyMismatch => 422,
            Code::RateLimited => 429,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::BadGateway => 502,
            Code::GatewayTimeout => 504,
        }
    }

    /// When the code is returned, as the contract's table says it.
    pub fn when(self) -> &'static str {
        match self {
            Code::InvalidArgument => {
                "The body is not JSON, not an object, has an unknown field, a wrong type or a value out of range; \
                 the message names the field path."
            }
            Code::Unauthenticated => {
                "No or garbled token, bad checksum, unknown, revoked or expired key, or a bad session token."
            }
            Code::PermissionDenied => {
                "The principal lacks the operation's scope, the client address is not allowed for the key, or a \
                 grant exceeds the caller's own permissions."
            }
            Code::NotFound => "Unknown operation, or an object not visible to the caller's organization.",
            Code::MethodNotAllowed => "Any method but POST on an operation path.",
            Code::Conflict => {
                "The object's state forbids the request, or a concurrent request holds the same idempotency key."
            }
            Code::PayloadTooLarge => "The body is over the size limit (default 1 MiB).",
            Code::UnsupportedMediaType => "A non-empty body with a content type other than JSON.",
            Code::IdempotencyMismatch => "An idempotency key reused with a different body.",
            Code::RateLimited => "The key's rate limit is spent.",
            Code::Internal => "A bug in the server; the response never carries internals.",
            Code::Unavailable => "The server is shutting down or its storage is unavailable.",
            Code::BadGateway => {
                "An upstream operation's service could not be reached, closed the connection, or answered \
                 something other than JSON in the contract's shape; the message never carries its internals."
            }
            Code::GatewayTimeout => "An upstream operation's service did not answer within its timeout.",
        }
    }

    /// The wire name of the code, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::IdempotencyMismatch => "idempotency_mismatch",
            Code::RateLimited => "rate_limited",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::BadGateway => "bad_gateway",
            Code::GatewayTimeout => "gateway_timeout",
        }
    }
}

/// The internal cause of an [`Error`]: kept for the server log, never sent to a client.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// An error an operation or a pipeline stage returns: a contract code and a human sentence naming the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Error {
    /// What kind of failure this is; decides the HTTP status.
    pub code: Code,
    /// A sentence for humans that names the field or the cause; never internals or secrets.
    pub message: String,
    /// A short machine label of the cause (e.g. `revoked`), for metrics; never sent to the client.
    pub reason: Option<&'static str>,
    /// What went wrong inside (a storage or encoding failure): the pipeline logs it once, with the request id,
    /// so that the id a client quotes finds the failure in the log. Never sent to the client.
    pub cause: Option<Cause>,
}

/// Errors are equal when a client would see them as equal: the cause is internal.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message && self.reason == other.reason
    }
}

impl Eq for Error {}

impl Error {
    /// The same error, carrying `cause` for the server log.
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(cause));
        self
    }

    /// The same error, labelled with `reason` for metrics.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// An error with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            reason: None,
            cause: None,
        }
    }

    /// A 400 naming the field at fault.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A 401; the message says why without revealing whether a key exists.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    /// A 403.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// A 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    /// A 500 with a fixed message: the cause belongs in the server log, never in the response.
    pub fn internal() -> Self {
        Self::new(
            Code::Internal,
            "internal error; the request id identifies it in the server log",
        )
    }

    /// A 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// The body sent for this error, carrying the request id.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                request_id: request_id.to_owned(),
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Error")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The details of an error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Machine-readable error code; decides the HTTP status.
    pub code: Code,
    /// Human-readable sentence naming the field or cause.
    pub message: String,
    /// The request id, as in the `X-Request-Id` response header.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_to_their_wire_names() {
        for code in Code::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
