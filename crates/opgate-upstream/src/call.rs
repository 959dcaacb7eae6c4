//! Forwarding one call: the body validated against the declared schema, POSTed with the signed identity, and
//! the answer passed back (JSON as is, NDJSON line by line with backpressure), or turned into the contract's
//! `bad_gateway` / `gateway_timeout` without the upstream's internals.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use opgate_core::{Code, Context, DynamicHandler, Encoded, Error, ReplyFuture};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::Declaration;
use crate::identity;

/// The largest JSON answer passed on.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// The longest line of a streamed answer.
const MAX_LINE_BYTES: usize = 1 << 20;
/// How much of an error answer is read to look for the contract's error shape.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// The longest message an upstream's error may pass on.
const MAX_MESSAGE_CHARS: usize = 1024;

/// The handler of one upstream operation.
pub(crate) struct Upstream(Arc<Inner>);

struct Inner {
    decl: Declaration,
    client: reqwest::Client,
    input: jsonschema::Validator,
    output: Option<jsonschema::Validator>,
}

impl Upstream {
    pub(crate) fn new(decl: Declaration) -> Result<Upstream, String> {
        let input = validator(&decl.input_schema)
            .map_err(|e| format!("upstream `{}`: `input_schema`: {e}", decl.id))?;
        let output = match (&decl.output_schema, decl.check_output) {
            (Some(schema), true) => Some(
                validator(schema)
                    .map_err(|e| format!("upstream `{}`: `output_schema`: {e}", decl.id))?,
            ),
            _ => None,
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(decl.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("opgate/", env!("CARGO_PKG_VERSION")));
        if decl.http2 {
            builder = builder.http2_prior_knowledge();
        }
        if let Some(pem) = &decl.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("upstream `{}`: `ca_file`: {e}", decl.id))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("upstream `{}`: cannot set up its HTTP client: {e}", decl.id))?;
        Ok(Upstream(Arc::new(Inner {
            decl,
            client,
            input,
            output,
        })))
    }
}

impl DynamicHandler for Upstream {
    fn decode(&self, body: &[u8]) -> Result<Value, Error> {
        let body: &[u8] = if body.is_empty() { b"{}" } else { body };
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Error::invalid_argument(format!(
                "the request body is not valid JSON: {}",
                without_position(&e.to_string())
            ))
        })?;
        if !value.is_object() {
            return Err(Error::invalid_argument(
                "the request body must be a JSON object",
            ));
        }
        if let Some(e) = self.0.input.iter_errors(&value).next() {
            return Err(Error::invalid_argument(describe(&e)));
        }
        Ok(value)
    }

    fn call(&self, ctx: Context, input: Value) -> ReplyFuture {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.forward(ctx, input).await })
    }
}

impl Inner {
    async fn forward(self: Arc<Self>, ctx: Context, input: Value) -> Result<Encoded, Error> {
        let decl = &self.decl;
        let body = serde_json::to_vec(&input).map_err(|_| Error::internal())?;
        let signed = identity::sign(
            &decl.secret,
            &identity::identity(&ctx),
            &ctx.request_id,
            ctx.now().unix(),
            &body,
        );
        let accept = if decl.streaming {
            "application/x-ndjson, application/json"
        } else {
            "application/json"
        };
        let request = self
            .client
            .post(decl.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, accept)
            .header("x-request-id", &*ctx.request_id)
            .header("opgate-identity", signed.identity)
            .header("opgate-timestamp", signed.timestamp)
            .header("opgate-signature", signed.signature)
            .body(body);
        let deadline = Instant::now() + decl.timeout;
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Err(e)) if e.is_timeout() => return Err(self.timed_out()),
            Ok(Err(e)) => {
                return Err(Error::new(
                    Code::BadGateway,
                    "the upstream service could not be reached",
                )
                .with_reason("upstream_unreachable")
                .with_cause(e))
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(self.refusal(response, deadline).await);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if decl.streaming {
            if !content_type.starts_with("application/x-ndjson") {
                return Err(bad_gateway(format!(
                    "the upstream service answered `{}`, not an NDJSON stream",
                    printable(&content_type, 64)
                )));
            }
            return Ok(Encoded::Stream(Box::pin(self.lines(response))));
        }
        let bytes = read_limited(response, MAX_ANSWER_BYTES, deadline)
            .await
            .map_err(|e| self.read_failure(e))?;
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|_| bad_gateway("the upstream service's answer is not JSON"))?;
        if !answer.is_object() {
            return Err(bad_gateway(
                "the upstream service's answer is not a JSON object",
            ));
        }
        if let Some(output) = &self.output {
            if let Some(e) = output.iter_errors(&answer).next() {
                return Err(bad_gateway(format!(
                    "the upstream service's answer does not match its output schema: {}",
                    describe(&e)
                )));
            }
        }
        if let Some(id) = answer.get("id").and_then(Value::as_str) {
            ctx.set_target(id);
        }
        Ok(Encoded::Json(bytes))
    }

    fn timed_out(&self) -> Error {
        Error::new(
            Code::GatewayTimeout,
            format!(
                "the upstream service did not answer within {} ms",
                self.decl.timeout.as_millis()
            ),
        )
        .with_reason("upstream_timeout")
    }

    fn read_failure(&self, e: ReadFailure) -> Error {
        match e {
            ReadFailure::Timeout => self.timed_out(),
            ReadFailure::TooLarge(limit) => bad_gateway(format!(
                "the upstream service's answer is larger than {limit} bytes"
            )),
            ReadFailure::Broken(e) => {
                bad_gateway("the upstream service's answer broke off").with_cause(e.without_url())
            }
        }
    }

    /// A non-2xx answer: passed on when it is the contract's error body with the status its code has (a
    /// service behind the gateway speaking the gateway's language), else `bad_gateway` naming the status only.
    async fn refusal(&self, response: reqwest::Response, deadline: Instant) -> Error {
        let status = response.status().as_u16();
        let passed = read_limited(response, MAX_ERROR_BYTES, deadline)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|body| refused(body.get("error")?, Some(status)));
        passed.unwrap_or_else(|| bad_gateway(format!("the upstream service answered {status}")))
    }

    /// The upstream's NDJSON as whole lines, read only as fast as the client takes them (flat memory), each
    /// checked to be a JSON object (and against the output schema when that is on). A stream that breaks off,
    /// goes `timeout` without a whole line, or sends something else ends with the contract's error line; an
    /// error line of the upstream's own is passed on as the gateway words errors (see [`passed_on`]).
    fn lines(
        self: Arc<Self>,
        response: reqwest::Response,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Error>> + Send {
        struct State {
            inner: Arc<Inner>,
            body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
            buffer: BytesMut,
            /// When the next whole line must have come.
            line_due: Instant,
            /// The error that ends the stream, after the lines before it.
            ending: Option<Error>,
            done: bool,
        }
        let state = State {
            line_due: Instant::now() + self.decl.timeout,
            inner: self,
            body: response.bytes_stream().boxed(),
            buffer: BytesMut::new(),
            ending: None,
            done: false,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(e) = s.ending.take() {
                    s.done = true;
                    return Some((Err(e), s));
                }
                if s.done {
                    return None;
                }
                // Every whole line in the buffer, checked, as one chunk.
                if let Some(last) = s.buffer.iter().rposition(|b| *b == b'\n') {
                    let chunk = s.buffer.split_to(last + 1).freeze();
                    let (lines, ending) = s.inner.check_lines(&chunk);
                    s.ending = ending;
                    if lines.is_empty() {
                        continue;
                    }
                    s.line_due = Instant::now() + s.inner.decl.timeout;
                    return Some((Ok(lines), s));
                }
                if s.buffer.len() > MAX_LINE_BYTES {
                    s.ending = Some(bad_gateway(format!(
                        "a line of the upstream service's stream is longer than {MAX_LINE_BYTES} bytes"
                    )));
                    continue;
                }
                match tokio::time::timeout_at(s.line_due, s.body.next()).await {
                    Ok(Some(Ok(bytes))) => s.buffer.extend_from_slice(&bytes),
                    Ok(None) => {
                        // The end: a last line without its newline still counts.
                        s.done = true;
                        if s.buffer.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        s.buffer.extend_from_slice(b"\n");
                        let chunk = s.buffer.split().freeze();
                        let (lines, ending) = s.inner.check_lines(&chunk);
                        s.ending = ending;
                        s.done = s.ending.is_none();
                        if lines.is_empty() {
                            continue;
                        }
                        return Some((Ok(lines), s));
                    }
                    Ok(Some(Err(e))) => {
                        s.ending = Some(
                            bad_gateway("the upstream service's stream broke off")
                                .with_cause(e.without_url()),
                        );
                    }
                    Err(_) => {
                        s.ending = Some(Error::new(
                            Code::GatewayTimeout,
                            format!(
                                "the upstream service's stream went {} ms without a whole line",
                                s.inner.decl.timeout.as_millis()
                            ),
                        ));
                    }
                }
            }
        })
    }

    /// The lines of `chunk` (whole lines) to pass on, blank ones dropped, and the error that ends the stream
    /// after them: a line that is not a JSON object (or does not match the output schema), or the upstream's
    /// own error line.
    fn check_lines(&self, chunk: &[u8]) -> (Bytes, Option<Error>) {
        let mut out = BytesMut::with_capacity(chunk.len());
        for line in chunk.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(line) else {
                let e = bad_gateway("the upstream service's stream holds a line that is not JSON");
                return (out.freeze(), Some(e));
            };
            let Some(object) = value.as_object() else {
                let e = bad_gateway(
                    "the upstream service's stream holds a line that is not a JSON object",
                );
                return (out.freeze(), Some(e));
            };
            if object.len() == 1 && object.contains_key("error") {
                let e = refused(&object["error"], None).unwrap_or_else(|| {
                    bad_gateway("the upstream service's stream ended with an error")
                });
                return (out.freeze(), Some(e));
            }
            if let Some(output) = &self.output {
                if let Some(e) = output.iter_errors(&value).next() {
                    let e = bad_gateway(format!(
                        "a line of the upstream service's stream does not match its output schema: {}",
                        describe(&e)
                    ));
                    return (out.freeze(), Some(e));
                }
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
        (out.freeze(), None)
    }
}

/// The validator of a declared schema: JSON Schema 2020-12 with `format` asserted (an `email` must be one),
/// and no reference ever fetched (the crate is built without its remote resolvers).
pub(crate) fn validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

enum ReadFailure {
    Timeout,
    TooLarge(usize),
    Broken(reqwest::Error),
}

/// The whole body, at most `limit` bytes, before `deadline`.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, ReadFailure> {
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(ReadFailure::Timeout),
            Ok(Err(e)) => return Err(ReadFailure::Broken(e)),
            Ok(Ok(None)) => return Ok(body.freeze()),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadFailure::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The contract code an upstream's error may pass on to the client: one that describes the call itself. Not
/// `internal` (its text is the service's internals), nor the codes whose meaning belongs to the gateway's own
/// checks and headers: `unauthenticated` (a client would drop a good token), `rate_limited` (without the
/// gateway's `Retry-After`), `method_not_allowed`.
fn passed_on(name: &str) -> Option<Code> {
    Code::ALL.into_iter().find(|c| {
        c.as_str() == name
            && !matches!(
                c,
                Code::Internal | Code::Unauthenticated | Code::RateLimited | Code::MethodNotAllowed
            )
    })
}

/// The upstream's own error (`{"code": …, "message": …}`, the inside of the contract's error body) as the
/// gateway passes it on: a code [`passed_on`] allows (with `status`, when the answer had one, the status that
/// code has), the message cleaned and cut. `None` when it is not that.
fn refused(error: &Value, status: Option<u16>) -> Option<Error> {
    let code = passed_on(error.get("code")?.as_str()?)
        .filter(|code| status.is_none_or(|status| code.status() == status))?;
    let message = error.get("message")?.as_str()?;
    Some(Error::new(code, printable(message, MAX_MESSAGE_CHARS)).with_reason("upstream_refused"))
}

fn bad_gateway(message: impl Into<String>) -> Error {
    Error::new(Code::BadGateway, message).with_reason("upstream_answer")
}

/// A validation error as the contract words a field's: its path (`items[0].name`) and what is wrong.
pub(crate) fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let mut path = String::new();
    for segment in e.instance_path.as_str().split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    let reason = printable(&e.to_string(), 200);
    if path.is_empty() {
        reason
    } else {
        format!("{}: {reason}", printable(&path, 200))
    }
}

/// `text` without control characters, cut at `max` characters.
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).count() > max {
        out.push('…');
    }
    out
}

/// A serde_json message without its "at line 1 column 5" suffix.
fn without_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
