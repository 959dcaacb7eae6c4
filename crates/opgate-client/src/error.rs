use opgate_core::Code;
use serde::Deserialize;

/// Everything a call can fail with. [`Error::Api`] carries the contract's error (code, message, status,
/// request id); the other variants are failures to get such an answer at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway refused or failed the call: an error response, or the error line that ends a stream which
    /// failed after its first line (`streamed`).
    #[error("{} ({status}): {message}", code.as_str())]
    Api {
        /// The contract's error code, e.g. [`Code::NotFound`].
        code: Code,
        /// The gateway's sentence naming the field or the cause.
        message: String,
        /// The HTTP status; for an error line in a stream (sent after a 200), the status of `code`.
        status: u16,
        /// The request id the gateway assigned (`X-Request-Id`), to find the call in its log.
        request_id: Option<String>,
        /// Whether the error arrived as the last line of an NDJSON stream rather than as the response.
        streamed: bool,
    },
    /// The gateway could not be reached, or the connection broke off mid-response.
    #[error("{message}")]
    Connection {
        /// What failed, with its causes.
        message: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered something the contract does not allow (a body that is not the operation's
    /// output type, a line that is not JSON, an overlong line).
    #[error("unexpected response: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
        /// The HTTP status of the response.
        status: u16,
        /// The request id of the response, if it had one.
        request_id: Option<String>,
    },
    /// The client was given something it cannot send: a malformed base URL or token, or an input that does not
    /// serialize as a JSON object.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The contract's error code, for [`Error::Api`].
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request id of the answer, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } | Error::Protocol { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// Whether the gateway refused the credential or its permissions (401 or 403).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.code(),
            Some(Code::Unauthenticated | Code::PermissionDenied)
        )
    }

    pub(crate) fn connection(what: &str, source: reqwest::Error) -> Self {
        // reqwest's own message is generic ("error sending request for url ..."); the innermost cause says
        // what happened ("Connection refused").
        let mut root: &dyn std::error::Error = &source;
        while let Some(cause) = root.source() {
            root = cause;
        }
        let message = format!("{what}: {root}");
        Error::Connection { message, source }
    }

    /// The error a non-2xx response stands for: its contract body when it has one, else the status alone.
    pub(crate) fn from_response(
        status: u16,
        body: &[u8],
        header_request_id: Option<String>,
    ) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => error.into_error(status, header_request_id, false),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("the gateway answered HTTP {status} without an error body")
                } else {
                    let snippet: String = text.chars().take(200).collect();
                    format!("the gateway answered HTTP {status}: {snippet}")
                };
                Error::Api {
                    code: code_for(None, status),
                    message,
                    status,
                    request_id: header_request_id,
                    streamed: false,
                }
            }
        }
    }

    /// The error an NDJSON line stands for, when the line is the contract's `{"error": {...}}` line.
    pub(crate) fn from_line(line: &[u8], stream_request_id: Option<&str>) -> Option<Self> {
        // Cheap test first: only a line opening with the `error` key is parsed twice.
        let rest = line.trim_ascii_start().strip_prefix(b"{")?;
        if !rest.trim_ascii_start().starts_with(b"\"error\"") {
            return None;
        }
        let ErrorLine { error } = serde_json::from_slice(line).ok()?;
        // A code this client does not know is read as a server failure.
        let status = code_for(Some(&error.code), 500).status();
        Some(error.into_error(status, stream_request_id.map(str::to_owned), true))
    }
}

/// The contract's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: WireError,
}

/// An error line of a stream: exactly `{"error": {...}}`, so that an item that merely has an `error` field is
/// never mistaken for one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorLine {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    message: String,
    #[serde(default)]
    request_id: Option<String>,
}

impl WireError {
    fn into_error(self, status: u16, fallback_request_id: Option<String>, streamed: bool) -> Error {
        Error::Api {
            code: code_for(Some(&self.code), status),
            message: self.message,
            status,
            request_id: self.request_id.or(fallback_request_id),
            streamed,
        }
    }
}

/// The code named `name`; a code this client does not know (a newer gateway) is read from the status.
fn code_for(name: Option<&str>, status: u16) -> Code {
    if let Some(code) = name.and_then(|n| Code::ALL.into_iter().find(|c| c.as_str() == n)) {
        return code;
    }
    match Code::ALL.into_iter().find(|c| c.status() == status) {
        Some(code) => code,
        None if status >= 500 => Code::Internal,
        None => Code::InvalidArgument,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"code":"not_found","message":"key_id: no API key","request_id":"req_1"}}"#;
        let e = Error::from_response(404, body, Some("req_header".into()));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.request_id(), Some("req_1"));
        assert_eq!(e.to_string(), "not_found (404): key_id: no API key");

        // A proxy's page in front of the gateway: the code is read from the status.
        let e = Error::from_response(502, b"<html>bad gateway</html>", Some("r".into()));
        assert_eq!(e.code(), Some(Code::BadGateway));
        assert_eq!(e.request_id(), Some("r"));
        assert!(e.to_string().contains("bad gateway"));

        let e = Error::from_response(401, b"", None);
        assert_eq!(e.code(), Some(Code::Unauthenticated));
        assert!(e.is_auth());
    }

    #[test]
    fn only_a_lone_error_object_is_an_error_line() {
        let line = br#"{"error": {"code": "unavailable", "message": "storage is unavailable", "request_id": "req_9"}}"#;
        let e = Error::from_line(line, None).expect("an error line");
        assert!(matches!(
            &e,
            Error::Api { code: Code::Unavailable, status: 503, streamed: true, request_id: Some(r), .. } if r == "req_9"
        ));
        assert!(Error::from_line(br#"{"id":"key_1","error":null}"#, None).is_none());
        assert!(Error::from_line(br#"{"error":"x","id":"key_1"}"#, None).is_none());
        assert!(
            Error::from_line(br#"{"error":{"code":"x","message":"m"},"id":1}"#, None).is_none()
        );
        assert!(Error::from_line(br#"{"id":"key_1"}"#, None).is_none());
        // A code this client does not know yet still surfaces, read as `internal`.
        let e = Error::from_line(
            br#"{"error":{"code":"brand_new","message":"m"}}"#,
            Some("req_s"),
        )
        .expect("an error line");
        assert_eq!(e.code(), Some(Code::Internal));
        assert_eq!(e.request_id(), Some("req_s"));
    }
}
