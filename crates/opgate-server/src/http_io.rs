//! Building responses: JSON bodies, NDJSON streams and the contract's error bodies.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use opgate_core::Error;

/// The response type of every request.
pub type Resp = Response<UnsyncBoxBody<Bytes, Infallible>>;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");
static NOSNIFF: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-content-type-options"),
    HeaderValue::from_static("nosniff"),
);

fn response(
    status: StatusCode,
    content_type: HeaderValue,
    body: UnsyncBoxBody<Bytes, Infallible>,
    request_id: &str,
) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Every answer is what its content type says: a browser never guesses HTML from a JSON or Markdown body.
    headers.insert(NOSNIFF.0.clone(), NOSNIFF.1.clone());
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// A 200 with a JSON body.
pub(crate) fn json(body: Bytes, request_id: &str) -> Resp {
    response(
        StatusCode::OK,
        JSON,
        Full::new(body).boxed_unsync(),
        request_id,
    )
}

/// A 200 streaming NDJSON; an error from the stream is sent as a final `{"error": ...}` line.
pub(crate) fn ndjson(
    lines: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
    request_id: &str,
) -> Resp {
    let rid = request_id.to_owned();
    let frames = lines.map(move |chunk| {
        Ok::<_, Infallible>(Frame::data(match chunk {
            Ok(lines) => lines,
            Err(e) => {
                match &e.cause {
                    Some(cause) => tracing::error!(request_id = %rid, code = e.code.as_str(), error = %cause, "stream ended with an error"),
                    None => tracing::warn!(request_id = %rid, code = e.code.as_str(), "stream ended with an error"),
                }
                let mut line = serde_json::to_vec(&e.body(&rid)).expect("error bodies serialize");
                line.push(b'\n');
                Bytes::from(line)
            }
        }))
    });
    response(
        StatusCode::OK,
        NDJSON,
        StreamBody::new(frames).boxed_unsync(),
        request_id,
    )
}

/// The contract's error response for `e`, with `WWW-Authenticate` on 401s.
pub(crate) fn error(e: &Error, request_id: &str) -> Resp {
    let body = serde_json::to_vec(&e.body(request_id)).expect("error bodies serialize");
    let status = StatusCode::from_u16(e.code.status()).expect("contract statuses are valid");
    let mut resp = response(
        status,
        JSON,
        Full::new(Bytes::from(body)).boxed_unsync(),
        request_id,
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// A stored response replayed for an idempotent retry, marked `Idempotent-Replayed: true`.
pub(crate) fn replay(status: u16, body: Bytes, request_id: &str) -> Resp {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = response(status, JSON, Full::new(body).boxed_unsync(), request_id);
    resp.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    resp
}

/// `body`, counted as a response being sent on its connection until it ends or is dropped, each frame it
/// hands over counting as progress (the connection's write-stall timer reads it).
pub(crate) fn sending(
    body: UnsyncBoxBody<Bytes, Infallible>,
    sending: crate::conn::Sending,
) -> UnsyncBoxBody<Bytes, Infallible> {
    Tracked { body, sending }.boxed_unsync()
}

struct Tracked {
    body: UnsyncBoxBody<Bytes, Infallible>,
    sending: crate::conn::Sending,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let poll = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(_)) = &poll {
            self.sending.progressed();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The `RateLimit-*` headers of a limited principal, and `Retry-After` when refused.
pub(crate) fn rate_limit_headers(headers: &mut http::HeaderMap, d: &crate::rate_limit::Decision) {
    let num = |n: u64| HeaderValue::from_str(&n.to_string()).expect("digits are a valid header");
    headers.insert(
        HeaderName::from_static("ratelimit-limit"),
        num(d.limit.into()),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-remaining"),
        num(d.remaining.into()),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-reset"),
        num(d.reset_secs),
    );
    if let Some(after) = d.retry_after_secs {
        headers.insert(http::header::RETRY_AFTER, num(after));
    }
}

/// The reference page (with its Content-Security-Policy, never framed) or the served spec.
pub(crate) fn docs(docs: &crate::Docs, page: bool, request_id: &str) -> Resp {
    if !page {
        return json(docs.spec.clone(), request_id);
    }
    let mut resp = text(docs.page.clone(), "text/html; charset=utf-8", request_id);
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        docs.csp.clone(),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A 200 with a body of the given content type (e.g. the Prometheus text format).
pub(crate) fn text(body: Bytes, content_type: &'static str, request_id: &str) -> Resp {
    response(
        StatusCode::OK,
        HeaderValue::from_static(content_type),
        Full::new(body).boxed_unsync(),
        request_id,
    )
}
