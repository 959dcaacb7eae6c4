//! One request, one straight path: request id → route → authenticate → rate-limit → authorize →
//! idempotency → read body → decode → handler → audit → encode. Each stage is one function and reads the
//! operation's declaration (scope, side-effect class, streaming), never its name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT,
};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::Request;
use opgate_core::{
    scope, AuditRecord, Code, Context, Entry, Error, ErrorBody, Principal, Reply, RequestInfo,
    SideEffect, StoredResponse, Timestamp,
};

use crate::http_io::{self, Resp, X_REQUEST_ID};
use crate::{client_addr, idempotency, Gateway};

/// Longest bearer token looked at; longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 4096;
/// How much of an over-limit body is still read (and discarded) before the 413 goes out, at most: a client
/// still sending would otherwise hit a reset connection instead of reading the 413.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long that draining may take, at most.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

pub async fn handle(gw: &Arc<Gateway>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let mut trace = Trace::default();
    let resp = match route(gw, &req) {
        Route::Health => health(&req, &request_id),
        Route::Ready => ready(gw, &req, &request_id),
        Route::Metrics => metrics_page(gw, &req, &request_id),
        Route::NotFound => http_io::error(
            &Error::not_found(format!("no route for {}", req.uri().path())),
            &request_id,
        ),
        Route::Operation(Err(e)) => {
            let mut resp = http_io::error(&e, &request_id);
            if e.code == Code::MethodNotAllowed {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
            }
            resp
        }
        Route::Operation(Ok(entry)) => {
            trace.op = Some(entry.meta.id);
            admit(gw, entry.clone(), peer, req, &request_id, &mut trace).await
        }
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let op = trace.op.unwrap_or("none");
    metrics::counter!("opgate_requests_total", "operation" => op, "status" => status_label(status))
        .increment(1);
    metrics::histogram!("opgate_request_duration_seconds", "operation" => op)
        .record(elapsed.as_secs_f64());
    if status == 429 {
        metrics::counter!("opgate_rate_limited_total").increment(1);
    }
    tracing::info!(
        request_id = %request_id,
        op = trace.op.unwrap_or("-"),
        principal = trace.principal.as_ref().map_or("-", |p| p.id.as_str()),
        status,
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
    resp
}

/// Statuses as static labels (no allocation per request).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Admission: a bounded number of requests at once (503 past it, never a queue), each bounded in time.
///
/// A call that may change state runs as its own task, so that nothing the client does can cancel it half-way:
/// a client that disconnects, resets its stream or outlasts the request timeout still gets its committed change
/// followed by the cache invalidation and the audit record. A panic in a handler becomes a 500 with the
/// request id.
async fn admit(
    gw: &Arc<Gateway>,
    entry: Entry,
    peer: SocketAddr,
    req: Request<Incoming>,
    request_id: &str,
    trace: &mut Trace,
) -> Resp {
    let Ok(permit) = Arc::clone(&gw.admission).try_acquire_owned() else {
        let e =
            Error::unavailable("the server is at its limit of concurrent requests; retry shortly")
                .with_reason("overloaded");
        return http_io::error(&e, request_id);
    };
    let gauge = metrics::gauge!("opgate_requests_in_flight");
    gauge.increment(1.0);
    let timeout = gw.config.request_timeout;
    let read_only = entry.meta.side_effect == SideEffect::Read;
    let gw_task = Arc::clone(gw);
    let rid = request_id.to_owned();
    let mut task_trace = Trace {
        op: trace.op,
        principal: None,
    };
    let work = async move {
        let resp = call(&gw_task, &entry, peer, req, &rid, &mut task_trace).await;
        drop(permit);
        (resp, task_trace)
    };
    // Reads have nothing to finish if cancelled, so they run inline (no task spawn on the hot path); a call
    // that may change state runs as its own task.
    let outcome = if read_only {
        tokio::time::timeout(timeout, std::panic::AssertUnwindSafe(work).catch_unwind())
            .await
            .map(|r| r.map_err(|_| "the handler panicked".to_owned()))
    } else {
        tokio::time::timeout(timeout, tokio::spawn(work))
            .await
            .map(|r| r.map_err(|e| e.to_string()))
    };
    let resp = match outcome {
        Ok(Ok((resp, task_trace))) => {
            *trace = task_trace;
            resp
        }
        Ok(Err(failure)) => {
            tracing::error!(request_id = %request_id, error = %failure, "the request failed unexpectedly");
            http_io::error(&Error::internal(), request_id)
        }
        Err(_) => http_io::error(
            &Error::unavailable(format!(
                "the request did not complete within {} s",
                timeout.as_secs()
            )),
            request_id,
        ),
    };
    gauge.decrement(1.0);
    resp
}

/// What the request log line and the audit record need to know of a call.
#[derive(Default)]
struct Trace {
    op: Option<&'static str>,
    principal: Option<Arc<Principal>>,
}

/// How a call ended, before it becomes a response.
enum Answer {
    Reply(Reply),
    Failed(Error),
    /// A stored response replayed for an idempotent retry.
    Replay {
        status: u16,
        body: Bytes,
    },
}

/// Authenticate → rate-limit → authorize → idempotency key → read body → decode → handler, then the audit
/// record for state-changing operations, then the response.
async fn call(
    gw: &Gateway,
    entry: &Entry,
    peer: SocketAddr,
    req: Request<Incoming>,
    request_id: &str,
    trace: &mut Trace,
) -> Resp {
    let info = RequestInfo {
        client_ip: Some(client_addr::client_ip(
            peer.ip(),
            req.headers(),
            &gw.config.trusted_proxies,
        )),
        user_agent: user_agent(req.headers()),
    };
    let principal = match authenticate(gw, req.headers(), &info).await {
        Ok(principal) => principal,
        Err(e) => {
            let reason = e.reason.unwrap_or(e.code.as_str());
            metrics::counter!("opgate_auth_failures_total", "reason" => reason).increment(1);
            return http_io::error(&e, request_id);
        }
    };
    trace.principal = Some(Arc::clone(&principal));
    let limit = gw.rate_limiter.check(&principal);
    let ctx = Context {
        principal: Arc::clone(&principal),
        request_id: Arc::from(request_id),
        client_ip: info.client_ip,
        target: Arc::default(),
    };
    let answer = match limit.filter(|d| !d.allowed) {
        Some(_) => Answer::Failed(Error::new(
            Code::RateLimited,
            format!(
                "the rate limit of {} requests per minute is spent; retry after the Retry-After delay",
                limit.map_or(0, |d| d.limit)
            ),
        )),
        None => run(gw, entry, req, ctx.clone()).await,
    };
    let status = match &answer {
        Answer::Reply(_) => 200,
        Answer::Failed(e) => e.code.status(),
        Answer::Replay { status, .. } => *status,
    };
    if entry.meta.side_effect != SideEffect::Read {
        let error_code = match &answer {
            Answer::Failed(e) => Some(e.code.as_str().to_owned()),
            Answer::Replay { status, body } if *status >= 400 => {
                serde_json::from_slice::<ErrorBody>(body)
                    .ok()
                    .map(|b| b.error.code.as_str().to_owned())
            }
            _ => None,
        };
        audit(gw, entry, &ctx, status, error_code).await;
    }
    let mut resp = match answer {
        Answer::Reply(Reply::Json(body)) => http_io::json(body, request_id),
        Answer::Reply(Reply::Stream(lines)) => http_io::ndjson(lines, request_id),
        Answer::Replay { status, body } => http_io::replay(status, body, request_id),
        Answer::Failed(e) => {
            let mut resp = http_io::error(&e, request_id);
            if e.code == Code::PayloadTooLarge {
                // The rest of the body may be unread: never reuse this connection.
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    if let Some(decision) = limit {
        http_io::rate_limit_headers(resp.headers_mut(), &decision);
    }
    resp
}

/// The stages after admission: authorize, idempotency, body, decode, handler.
async fn run(gw: &Gateway, entry: &Entry, req: Request<Incoming>, ctx: Context) -> Answer {
    let principal = Arc::clone(&ctx.principal);
    let owner = idempotency::owner(&principal);
    let prepared = async {
        authorize(&principal, entry)?;
        let key = match gw.idempotency.as_ref() {
            Some(_) => idempotency::key_for(req.headers().get("idempotency-key"), entry)?,
            None => None,
        };
        // The key is claimed before the body is read: a retry arriving while the first request is still
        // uploading or running gets 409 rather than running twice.
        let claim = match &key {
            Some(key) => Some(
                gw.inflight
                    .claim(format!("{owner}\n{key}"))
                    .ok_or_else(idempotency::in_progress)?,
            ),
            None => None,
        };
        let body = read_body(gw, req).await?;
        Ok::<_, Error>((key, claim, body))
    };
    let (key, _claim, body) = match prepared.await {
        Ok(prepared) => prepared,
        Err(e) => return Answer::Failed(e),
    };
    let (Some(key), Some(store)) = (key, gw.idempotency.as_ref()) else {
        return invoke(entry, ctx, &body).await;
    };
    let hash = idempotency::request_hash(entry, &body);
    let now = Timestamp::now().unix();
    match store
        .get(&owner, &key, now - idempotency::RETENTION_SECS)
        .await
    {
        Err(e) => return Answer::Failed(e),
        Ok(Some(stored)) if stored.request_hash == hash => {
            return Answer::Replay {
                status: stored.status,
                body: Bytes::from(stored.body),
            };
        }
        Ok(Some(_)) => return Answer::Failed(idempotency::mismatch()),
        Ok(None) => {}
    }
    let request_id = Arc::clone(&ctx.request_id);
    let answer = invoke(entry, ctx, &body).await;
    // Streams are not replayable; only whole answers are kept.
    let kept = match &answer {
        Answer::Reply(Reply::Json(body)) => Some((200, body.to_vec())),
        Answer::Failed(e) if idempotency::keep(e.code.status()) => Some((
            e.code.status(),
            serde_json::to_vec(&e.body(&request_id)).expect("error bodies serialize"),
        )),
        _ => None,
    };
    if let Some((status, body)) = kept {
        let stored = StoredResponse {
            request_hash: hash,
            status,
            body,
            created_at: now,
        };
        if let Err(e) = store.put(&owner, &key, stored).await {
            tracing::error!(request_id = %request_id, error = %e, "storing an idempotent response failed");
        }
    }
    answer
}

async fn invoke(entry: &Entry, ctx: Context, body: &[u8]) -> Answer {
    match entry.invoke(ctx, body) {
        Err(e) => Answer::Failed(e),
        Ok(running) => match running.await {
            Ok(reply) => Answer::Reply(reply),
            Err(e) => Answer::Failed(e),
        },
    }
}

/// Appends the audit record of a state-changing call, durably, before the response goes out.
async fn audit(
    gw: &Gateway,
    entry: &Entry,
    ctx: &Context,
    status: u16,
    error_code: Option<String>,
) {
    let Some(sink) = gw.audit.as_ref() else {
        return;
    };
    let p = &ctx.principal;
    let record = AuditRecord {
        at: Timestamp::now().unix(),
        request_id: ctx.request_id.to_string(),
        principal_kind: p.kind.as_str().to_owned(),
        principal_id: p.id.clone(),
        org_id: p.org.clone(),
        operation: entry.meta.id.to_owned(),
        target_id: ctx.target.get().cloned(),
        client_ip: ctx.client_ip.map(|a| a.to_string()),
        status,
        error_code,
    };
    if let Err(e) = sink.append(record).await {
        tracing::error!(request_id = %ctx.request_id, error = %e, "appending to the audit log failed");
    }
}

enum Route<'a> {
    Health,
    Ready,
    Metrics,
    Operation(Result<&'a Entry, Error>),
    NotFound,
}

/// Maps the path to an operation: `/v1/op/<id>` or `/v1/<resource>/<action>`; only POST is allowed there.
fn route<'a>(gw: &'a Gateway, req: &Request<Incoming>) -> Route<'a> {
    let path = req.uri().path();
    match path {
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/metrics" if gw.metrics.is_some() => return Route::Metrics,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Route::NotFound;
    };
    let id = match rest.split_once('/') {
        Some(("op", id)) if !id.is_empty() && !id.contains('/') => id.to_owned(),
        Some((resource, action))
            if !resource.is_empty() && !action.is_empty() && !action.contains('/') =>
        {
            format!("{resource}.{action}")
        }
        _ => return Route::NotFound,
    };
    if req.method() != Method::POST {
        return Route::Operation(Err(Error::new(
            Code::MethodNotAllowed,
            format!("use POST to call an operation, not {}", req.method()),
        )));
    }
    Route::Operation(
        gw.registry
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("no operation `{id}`"))),
    )
}

/// `GET /readyz`: 200 while serving, 503 once shutdown has begun (load balancers stop sending).
fn ready(gw: &Gateway, req: &Request<Incoming>, request_id: &str) -> Resp {
    if let Some(resp) = get_only(req, request_id) {
        return resp;
    }
    if gw.is_draining() {
        return http_io::error(
            &Error::unavailable("the server is shutting down"),
            request_id,
        );
    }
    http_io::json(Bytes::from_static(br#"{"status":"ready"}"#), request_id)
}

/// `GET /metrics`: Prometheus text format.
fn metrics_page(gw: &Gateway, req: &Request<Incoming>, request_id: &str) -> Resp {
    if let Some(resp) = get_only(req, request_id) {
        return resp;
    }
    let text = gw.metrics.as_ref().map(|m| m.render()).unwrap_or_default();
    http_io::text(
        Bytes::from(text),
        "text/plain; version=0.0.4; charset=utf-8",
        request_id,
    )
}

/// The 405 for anything but GET or HEAD on the service endpoints.
fn get_only(req: &Request<Incoming>, request_id: &str) -> Option<Resp> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let e = Error::new(
        Code::MethodNotAllowed,
        format!("use GET for {}", req.uri().path()),
    );
    let mut resp = http_io::error(&e, request_id);
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(resp)
}

fn health(req: &Request<Incoming>, request_id: &str) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = http_io::error(
            &Error::new(Code::MethodNotAllowed, "use GET for /healthz"),
            request_id,
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    http_io::json(Bytes::from_static(br#"{"status":"ok"}"#), request_id)
}

async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    info: &RequestInfo,
) -> Result<Arc<Principal>, Error> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| Error::unauthenticated("missing `Authorization: Bearer <token>` header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN_LEN)
        .ok_or_else(|| {
            Error::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
    gw.authenticator.authenticate(token, info).await
}

fn authorize(principal: &Principal, entry: &Entry) -> Result<(), Error> {
    if scope::holds(&principal.permissions, entry.meta.scope) {
        Ok(())
    } else {
        Err(Error::permission_denied(format!(
            "operation `{}` requires scope `{}`, which this principal does not hold",
            entry.meta.id, entry.meta.scope
        )))
    }
}

/// Reads the body after checking its type (JSON or none) and size (refused early on `Content-Length`).
async fn read_body(gw: &Gateway, req: Request<Incoming>) -> Result<Bytes, Error> {
    let headers = req.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // An empty body means `{}` whatever its declared type (curl -d '' sends a form type). Empty: declared
    // `Content-Length: 0`, or no length and no chunked encoding at all (what many clients send for no body).
    let empty = req.body().size_hint().exact() == Some(0);
    if let Some(ct) = headers.get(CONTENT_TYPE).filter(|_| !empty) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" {
            return Err(Error::new(
                Code::UnsupportedMediaType,
                format!(
                    "Content-Type must be application/json, not `{}`",
                    ct.to_str().unwrap_or("(binary)")
                ),
            ));
        }
    }
    let limit = gw.config.max_body_bytes;
    let too_large = || {
        Error::new(
            Code::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let mut body = req.into_body();
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        if declared - limit as u64 <= DRAIN_MAX_BYTES as u64 {
            drain(body).await;
        }
        return Err(too_large());
    }
    match Limited::new(&mut body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            drain(body).await;
            Err(too_large())
        }
        Err(_) => Err(Error::invalid_argument(
            "the request body could not be read",
        )),
    }
}

/// Reads and discards what is left of a refused body, bounded in size and time, so that the client gets to
/// read the error response rather than a connection reset.
async fn drain(mut body: Incoming) {
    let discard = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard).await;
}

/// The client's `X-Request-Id` when it is sane (1–128 of `[A-Za-z0-9._:-]`), else a new `req_<ulid>`.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map_or_else(
            || format!("req_{}", ulid::Ulid::new().to_string().to_lowercase()),
            str::to_owned,
        )
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(256).collect())
}
