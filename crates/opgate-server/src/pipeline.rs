//! One request, one straight path. Each stage is one function and reads the operation's declaration (scope,
//! side-effect class, streaming), never its name:
//!
//! route → admit → authenticate → limit → authorize → claim slots → idempotency key → read body → decode
//! → replay? → invoke → record → respond → settle the body
//!
//! A stage that refuses returns a [`Failure`]; the headers a refusal implies (`WWW-Authenticate`, `Allow`,
//! `RateLimit-*`, `Retry-After`, `Connection: close`) are set in [`respond`] and [`settle`] only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT,
};
use http::request::Parts;
use http::{HeaderMap, Method, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::Request;
use opgate_core::{
    scope, AuditRecord, Code, Context, Encoded, Entry, Error, Outcome, Principal, Records,
    RequestInfo, Unit, Via, WORKSPACE_HEADER,
};

use crate::http_io::{self, Resp, X_REQUEST_ID};
use crate::idempotency::{self, Idempotent, Replay};
use crate::rate_limit::Decision;
use crate::{client_addr, Gateway};

/// A request body the pipeline can read: hyper's, or any other for in-process calls.
pub trait RequestBody: Body<Data = Bytes, Error = Self::E> + Send + Unpin + 'static {
    /// The body's error type.
    type E: Into<Box<dyn std::error::Error + Send + Sync>> + Send;
}

impl<B> RequestBody for B
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type E = B::Error;
}

/// Longest bearer token looked at; longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 4096;
/// A body left unread by an early answer is drained before answering when it is at most this big, so that
/// the keep-alive connection stays usable; a bigger one closes the connection (`Connection: close`).
const SMALL_BODY_BYTES: usize = 64 * 1024;
/// How long draining a small unread body may take.
const SMALL_BODY_TIME: Duration = Duration::from_secs(1);
/// How much of an over-limit body is still read (and discarded) before the 413 goes out, at most: a client
/// still sending would otherwise hit a reset connection instead of reading the 413.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long that draining may take, at most.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// A refusal on its way to the client.
pub(crate) struct Failure {
    pub(crate) error: Error,
    /// `Allow` for a 405.
    pub(crate) allow: Option<&'static str>,
    /// The request body was left half-read: the connection cannot be reused.
    pub(crate) close: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            allow: None,
            close: false,
        }
    }
}

/// How a call ended well.
enum Answer {
    Encoded(Encoded),
    /// A stored response replayed for an idempotent retry.
    Replay(Replay),
}

/// What the log line, the metrics and the audit record know of a call.
#[derive(Default)]
pub(crate) struct Trace {
    op: Option<&'static str>,
    principal: Option<Arc<Principal>>,
}

/// The whole pipeline for one request; never fails (every failure is a response).
pub(crate) async fn handle<B: RequestBody>(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    req: Request<B>,
) -> Resp {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id: Arc<str> = Arc::from(request_id(&parts.headers));
    let (resp, trace) = match route(gw, &parts) {
        Route::Service(endpoint) => {
            let mut resp = service(gw, endpoint, &request_id);
            settle(Some(body), &parts, &mut resp).await;
            (resp, Trace::default())
        }
        Route::Refused(failure) => {
            let mut resp = respond(Err(failure), None, None, &request_id, parts.version);
            settle(Some(body), &parts, &mut resp).await;
            (resp, Trace::default())
        }
        Route::Operation(entry, scopes) => {
            admit(gw, entry, scopes, peer, parts, body, request_id.clone()).await
        }
        Route::Mcp => {
            let resp = crate::mcp::handle(gw, peer, parts, body, Arc::clone(&request_id)).await;
            (resp, Trace::default())
        }
    };
    log(&request_id, &trace, resp.status().as_u16(), started);
    resp
}

/// The pipeline for an operation call made in process by the MCP endpoint (`POST /v1/op/<id>`): what
/// [`handle`] does for an operation path, and 404 for any other (it never routes to the MCP endpoint again).
pub(crate) async fn handle_call<B: RequestBody>(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    req: Request<B>,
) -> Resp {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id: Arc<str> = Arc::from(request_id(&parts.headers));
    let (resp, trace) = match route(gw, &parts) {
        Route::Operation(entry, scopes) => {
            admit(gw, entry, scopes, peer, parts, body, request_id.clone()).await
        }
        _ => {
            let failure = Error::not_found(format!("no operation at {}", parts.uri.path())).into();
            let resp = respond(Err(failure), None, None, &request_id, parts.version);
            (resp, Trace::default())
        }
    };
    log(&request_id, &trace, resp.status().as_u16(), started);
    resp
}

/// One line and the metrics of a finished request.
fn log(request_id: &str, trace: &Trace, status: u16, started: Instant) {
    let elapsed = started.elapsed();
    let op = trace.op.unwrap_or("none");
    metrics::counter!("opgate_requests_total", "operation" => op, "status" => status_label(status))
        .increment(1);
    metrics::histogram!("opgate_request_duration_seconds", "operation" => op)
        .record(elapsed.as_secs_f64());
    if status == 429 {
        metrics::counter!("opgate_rate_limited_total").increment(1);
    }
    // The request id (`[A-Za-z0-9._:-]`) and the operation id need no quoting or escaping: written as they are
    // (`%`). A principal id may be a session's subject, with spaces: quoted, so it cannot forge a field.
    tracing::info!(
        request_id = %request_id,
        op = %trace.op.unwrap_or("-"),
        principal = trace.principal.as_ref().map_or("-", |p| p.id.as_str()),
        status,
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
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

enum Endpoint {
    Health,
    Ready,
    Metrics,
    DocsPage,
    Spec,
    /// `GET /llms.txt`.
    Llms,
    /// `GET /docs/<name>.md`, by name.
    Markdown(String),
}

enum Route {
    Service(Endpoint),
    /// The operation, and the scopes of the set it was found in.
    Operation(Entry, Arc<opgate_core::scope::Catalog>),
    /// `/mcp`, the MCP endpoint (any method: it answers the ones it does not take itself).
    Mcp,
    Refused(Failure),
}

/// Route: `/v1/op/<id>` or `/v1/<resource>/<action>` to an operation (POST only: 405 with `Allow`), the
/// service endpoints (GET or HEAD), anything else 404.
fn route(gw: &Gateway, parts: &Parts) -> Route {
    let path = parts.uri.path();
    let served = gw.served.load();
    let endpoint = match path {
        "/healthz" => Some(Endpoint::Health),
        "/readyz" => Some(Endpoint::Ready),
        "/metrics" if gw.metrics.is_some() => Some(Endpoint::Metrics),
        "/docs" if served.docs.is_some() => Some(Endpoint::DocsPage),
        "/openapi.json" if served.docs.is_some() => Some(Endpoint::Spec),
        "/llms.txt" if served.docs.as_ref().is_some_and(|d| d.llms.is_some()) => {
            Some(Endpoint::Llms)
        }
        _ => path
            .strip_prefix("/docs/")
            .filter(|name| {
                served
                    .docs
                    .as_ref()
                    .is_some_and(|d| d.markdown.contains_key(*name))
            })
            .map(|name| Endpoint::Markdown(name.to_owned())),
    };
    if let Some(endpoint) = endpoint {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Route::Refused(Failure {
                error: Error::new(Code::MethodNotAllowed, format!("use GET for {path}")),
                allow: Some("GET, HEAD"),
                close: false,
            });
        }
        return Route::Service(endpoint);
    }
    if path == "/mcp" {
        return Route::Mcp;
    }
    let not_found = || Route::Refused(Error::not_found(format!("no route for {path}")).into());
    let Some(rest) = path.strip_prefix("/v1/") else {
        return not_found();
    };
    let id = match rest.split_once('/') {
        Some(("op", id)) if !id.is_empty() && !id.contains('/') => id.to_owned(),
        Some((resource, action))
            if !resource.is_empty() && !action.is_empty() && !action.contains('/') =>
        {
            format!("{resource}.{action}")
        }
        _ => return not_found(),
    };
    if parts.method != Method::POST {
        return Route::Refused(Failure {
            error: Error::new(
                Code::MethodNotAllowed,
                format!("use POST to call an operation, not {}", parts.method),
            ),
            allow: Some("POST"),
            close: false,
        });
    }
    match served.registry.get(&id) {
        Some(entry) => Route::Operation(entry.clone(), Arc::clone(&served.scopes)),
        None => Route::Refused(Error::not_found(format!("no operation `{id}`")).into()),
    }
}

/// The service endpoints: `GET /healthz`, `GET /readyz` (503 once shutdown began, or while the storage does not
/// answer), `GET /metrics`, and `GET /docs` and `GET /openapi.json` unless the docs are off.
fn service(gw: &Gateway, endpoint: Endpoint, request_id: &str) -> Resp {
    match endpoint {
        Endpoint::Health => http_io::json(Bytes::from_static(br#"{"status":"ok"}"#), request_id),
        Endpoint::Ready if gw.is_draining() => http_io::error(
            &Error::unavailable("the server is shutting down"),
            request_id,
        ),
        Endpoint::Ready if !gw.is_storage_up() => http_io::error(
            &Error::unavailable("storage is unavailable").with_reason("storage"),
            request_id,
        ),
        Endpoint::Ready => http_io::json(Bytes::from_static(br#"{"status":"ready"}"#), request_id),
        Endpoint::Metrics => http_io::text(
            Bytes::from(gw.metrics.as_ref().map(|m| m.render()).unwrap_or_default()),
            "text/plain; version=0.0.4; charset=utf-8",
            request_id,
        ),
        Endpoint::DocsPage | Endpoint::Spec => {
            let served = gw.served.load();
            let Some(docs) = served.docs.as_ref() else {
                return http_io::error(&Error::not_found("no route"), request_id);
            };
            http_io::docs(docs, matches!(endpoint, Endpoint::DocsPage), request_id)
        }
        Endpoint::Llms | Endpoint::Markdown(_) => {
            let served = gw.served.load();
            // llms.txt is Markdown too, but served as plain text, as the convention's files are.
            let text = served.docs.as_ref().and_then(|docs| match &endpoint {
                Endpoint::Markdown(name) => docs
                    .markdown
                    .get(name)
                    .map(|t| (t.clone(), "text/markdown; charset=utf-8")),
                _ => docs.llms.clone().map(|t| (t, "text/plain; charset=utf-8")),
            });
            match text {
                Some((text, content_type)) => http_io::text(text, content_type, request_id),
                None => http_io::error(&Error::not_found("no route"), request_id),
            }
        }
    }
}

/// Admit: a bounded number of requests at once (503 past it, never a queue), each bounded in time.
///
/// A call whose side effect [runs detached](opgate_core::SideEffect::runs_detached) runs as its own task,
/// so that nothing the client does can cancel it half-way: a client that disconnects, resets its stream or
/// outlasts the request timeout still gets its committed change followed by the cache invalidation and the
/// audit record. A panic in a handler becomes a 500 with the request id.
async fn admit<B: RequestBody>(
    gw: &Arc<Gateway>,
    entry: Entry,
    scopes: Arc<opgate_core::scope::Catalog>,
    peer: SocketAddr,
    parts: Parts,
    body: B,
    request_id: Arc<str>,
) -> (Resp, Trace) {
    let trace = Trace {
        op: Some(entry.meta.id),
        principal: None,
    };
    let Ok(permit) = Arc::clone(&gw.admission).try_acquire_owned() else {
        let e =
            Error::unavailable("the server is at its limit of concurrent requests; retry shortly")
                .with_reason("overloaded");
        let mut resp = respond(Err(e.into()), None, None, &request_id, parts.version);
        settle(Some(body), &parts, &mut resp).await;
        return (resp, trace);
    };
    let gauge = metrics::gauge!("opgate_requests_in_flight");
    gauge.increment(1.0);
    let timeout = gw.config.request_timeout;
    let detached = entry.meta.side_effect.runs_detached();
    let work = {
        let (gw, request_id) = (Arc::clone(gw), Arc::clone(&request_id));
        async move { operation(&gw, &entry, scopes, peer, parts, body, request_id, permit).await }
    };
    let outcome = if detached {
        tokio::time::timeout(timeout, tokio::spawn(work))
            .await
            .map(|r| r.map_err(|e| e.to_string()))
    } else {
        // Reads have nothing to finish if cancelled: they run inline, without a task spawn on the hot path.
        tokio::time::timeout(timeout, std::panic::AssertUnwindSafe(work).catch_unwind())
            .await
            .map(|r| r.map_err(|_| "the handler panicked".to_owned()))
    };
    gauge.decrement(1.0);
    match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(failure)) => {
            tracing::error!(request_id = %request_id, error = %failure, "the request failed unexpectedly");
            (http_io::error(&Error::internal(), &request_id), trace)
        }
        Err(_) => {
            let e = Error::unavailable(format!(
                "the request did not complete within {} s",
                timeout.as_secs()
            ));
            // The body's state is unknown: the connection cannot be trusted for another request.
            let failure = Failure {
                error: e,
                allow: None,
                close: true,
            };
            (
                respond(Err(failure), None, None, &request_id, Version::HTTP_11),
                trace,
            )
        }
    }
}

/// Everything after admission, for one operation call.
#[allow(clippy::too_many_arguments)]
async fn operation<B: RequestBody>(
    gw: &Gateway,
    entry: &Entry,
    scopes: Arc<opgate_core::scope::Catalog>,
    peer: SocketAddr,
    parts: Parts,
    body: B,
    request_id: Arc<str>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> (Resp, Trace) {
    let mut exchange = Exchange {
        gw,
        entry,
        scopes,
        request_id,
        client_ip: client_addr::client_ip(peer.ip(), &parts.headers, &gw.config.trusted_proxies),
        principal: None,
        workspace: None,
        limit: None,
        stream_slot: None,
        slots: None,
        via: parts.extensions.get::<Via>().copied().unwrap_or_default(),
    };
    let mut body = Some(body);
    let outcome = match exchange.stages(&parts, &mut body).await {
        Ok(Stage::Handled(handled)) => exchange.record(handled).await,
        Ok(Stage::Replayed(replay)) => {
            exchange.tally(replay.status, None);
            Ok(Answer::Replay(replay))
        }
        Err(failure) => {
            exchange.tally(failure.error.code.status(), Some(failure.error.code));
            Err(failure)
        }
    };
    let mut resp = respond(
        outcome,
        exchange.limit.as_ref(),
        exchange.stream_slot.take(),
        &exchange.request_id,
        parts.version,
    );
    // The request's slots are given back before an unread body is drained: draining holds nothing.
    drop(permit);
    drop(exchange.slots.take());
    settle(body, &parts, &mut resp).await;
    let trace = Trace {
        op: Some(entry.meta.id),
        principal: exchange.principal,
    };
    (resp, trace)
}

/// One operation call as it goes through the stages.
struct Exchange<'a> {
    gw: &'a Gateway,
    entry: &'a Entry,
    /// The scopes of the operation set the call was found in.
    scopes: Arc<opgate_core::scope::Catalog>,
    request_id: Arc<str>,
    client_ip: IpAddr,
    principal: Option<Arc<Principal>>,
    /// The workspace the call works in, once known.
    workspace: Option<String>,
    limit: Option<Decision>,
    /// Held by a streamed response until it ends.
    stream_slot: Option<crate::slots::Slot<String>>,
    /// The organization's and the principal's request slots, held until the answer is committed.
    slots: Option<(crate::slots::Slot<String>, crate::slots::Slot<String>)>,
    /// The door the call came through (an in-process caller such as the MCP endpoint marks its requests with
    /// a [`Via`] extension; a client cannot set one), for the audit record.
    via: Via,
}

/// How the stages before the record ended well.
enum Stage<'a> {
    /// The handler ran.
    Handled(Handled<'a>),
    /// A stored response answers an idempotent retry.
    Replayed(Replay),
}

/// A handler's answer, with what the record stage needs to commit it.
struct Handled<'a> {
    result: Result<Encoded, Error>,
    /// The call's unit of work (state-changing operations).
    unit: Option<Arc<Unit>>,
    /// The claimed idempotency key: held until the record commits, so no retry runs in between.
    idempotent: Option<Idempotent<'a>>,
    target: Option<String>,
}

impl<'a> Exchange<'a> {
    /// The stages from authentication to the handler's answer; a refusal is a [`Failure`].
    async fn stages<B: RequestBody>(
        &mut self,
        parts: &Parts,
        body: &mut Option<B>,
    ) -> Result<Stage<'a>, Failure> {
        let (gw, entry) = (self.gw, self.entry);
        let principal = self.authenticate(&parts.headers).await?;
        self.limit(&principal).await?;
        authorize(&principal, entry)?;
        self.select_workspace(&principal, &parts.headers).await?;
        self.claim_slots(&principal)?;
        let mut idempotent = idempotency::begin(
            gw.journal.as_ref(),
            &gw.inflight,
            &gw.clock,
            entry,
            parts.headers.get("idempotency-key"),
            &principal,
        )?;
        let bytes = read_body(gw, parts, body.take()).await?;
        let input = entry.decode(&bytes)?;
        if let Some(idempotent) = idempotent.as_mut() {
            if let Some(replay) = idempotent
                .lookup(entry, self.workspace.as_deref(), &bytes)
                .await?
            {
                return Ok(Stage::Replayed(replay));
            }
        }
        let ctx = Context {
            principal,
            request_id: Arc::clone(&self.request_id),
            client_ip: Some(self.client_ip),
            target: Arc::default(),
            scopes: Arc::clone(&self.scopes),
            clock: Arc::clone(&gw.clock),
            workspace: self.workspace.clone(),
        };
        let target = Arc::clone(&ctx.target);
        // Invoke, inside the call's unit of work when the operation changes state: the store commits the
        // handler's change together with the records below.
        let unit = (entry.meta.side_effect.is_audited() && gw.journal.is_some()).then(|| {
            Unit::new(
                self.audit(200, None, None),
                Arc::clone(&target),
                idempotent.is_some(),
            )
        });
        let result = match &unit {
            Some(unit) => Arc::clone(unit).scope(entry.run(ctx, input)).await,
            None => entry.run(ctx, input).await,
        };
        Ok(Stage::Handled(Handled {
            result,
            unit,
            idempotent,
            target: target.get().cloned(),
        }))
    }

    /// Record: the handler's audit record and, under an idempotency key, its response, committed with its
    /// change (the unit of work) or on their own when it changed nothing. The response goes out after.
    async fn record(&self, handled: Handled<'a>) -> Result<Answer, Failure> {
        let Handled {
            result,
            unit,
            idempotent,
            target,
        } = handled;
        let (status, code, body) = match &result {
            Ok(Encoded::Json(body)) => (200, None, Some(body.clone())),
            Ok(Encoded::Stream(_)) => (200, None, None),
            Err(e) => (
                e.code.status(),
                Some(e.code),
                Some(Bytes::from(
                    serde_json::to_vec(&e.body(&self.request_id)).unwrap_or_default(),
                )),
            ),
        };
        let records = Records {
            audit: self.audit(status, code, target),
            // Streams are not replayable; only whole answers are kept.
            idempotency: idempotent
                .as_ref()
                .zip(body)
                .and_then(|(i, body)| i.response(status, &body)),
        };
        let outcome = unit.as_ref().map_or(Outcome::Open, |u| u.outcome());
        match outcome {
            Outcome::Committed => {
                if let Err(e) = &result {
                    tracing::error!(request_id = %self.request_id, code = e.code.as_str(), "the handler failed after its change committed");
                }
            }
            Outcome::Held(finish) => {
                if let Err(e) = finish(records).await {
                    // The change was rolled back, or its commit failed: the client must not see success.
                    return Err(
                        Error::unavailable("storage could not commit the change; retry")
                            .with_cause(e)
                            .into(),
                    );
                }
            }
            Outcome::Open => {
                let empty = records.audit.is_none() && records.idempotency.is_none();
                if let (Some(journal), false) = (&self.gw.journal, empty) {
                    if let Err(e) = journal.record(records).await {
                        tracing::error!(request_id = %self.request_id, error = %e, "writing the call's records failed");
                    }
                }
            }
        }
        drop(idempotent);
        Ok(Answer::Encoded(result?))
    }

    /// The audit record of this call with `status`, if its operation is audited and its caller known.
    fn audit(
        &self,
        status: u16,
        code: Option<Code>,
        target: Option<String>,
    ) -> Option<AuditRecord> {
        let principal = self.principal.as_ref()?;
        if !self.entry.meta.side_effect.is_audited() {
            return None;
        }
        Some(AuditRecord {
            at: self.gw.clock.now().unix(),
            request_id: self.request_id.to_string(),
            principal_kind: principal.kind.as_str().to_owned(),
            principal_id: principal.id.clone(),
            org_id: principal.org.clone(),
            workspace_id: self
                .workspace
                .clone()
                .or_else(|| principal.workspace.clone()),
            mode: principal.mode,
            operation: self.entry.meta.id.to_owned(),
            target_id: target,
            client_ip: Some(self.client_ip.to_string()),
            status,
            error_code: code.map(|c| c.as_str().to_owned()),
            count: 1,
            via: self.via,
        })
    }

    /// A refusal before the handler (or a replay): tallied, and written with its count once per interval.
    fn tally(&self, status: u16, code: Option<Code>) {
        if let (Some(principal), Some(record)) = (&self.principal, self.audit(status, code, None)) {
            self.gw.refusals.note(principal, record, self.entry.meta.id);
        }
    }

    /// Authenticate: the bearer token becomes a principal (401; 403 for a disallowed address).
    async fn authenticate(&mut self, headers: &HeaderMap) -> Result<Arc<Principal>, Failure> {
        let info = RequestInfo {
            client_ip: Some(self.client_ip),
            user_agent: user_agent(headers),
        };
        let principal = authenticate(self.gw, headers, &info).await?;
        self.principal = Some(Arc::clone(&principal));
        Ok(principal)
    }

    /// Workspace: a workspace key works in its own (naming another is 403); an organization-wide principal in
    /// the one `X-Workspace-ID` names (400 if malformed, 404 if its organization has none such), else in none.
    async fn select_workspace(
        &mut self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<(), Error> {
        let mut values = headers.get_all(WORKSPACE_HEADER).iter();
        let Some(value) = values.next() else {
            self.workspace = principal.workspace.clone();
            return Ok(());
        };
        // Two headers could be read differently by a proxy in front and by the gateway: refused.
        if values.next().is_some() {
            return Err(
                Error::invalid_argument("X-Workspace-ID: give the header once")
                    .with_reason("bad_workspace_header"),
            );
        }
        let named = value
            .to_str()
            .ok()
            .filter(|v| opgate_core::validate::is_id("ws", v))
            .ok_or_else(|| {
                Error::invalid_argument(
                    "X-Workspace-ID: must be a workspace id: `ws_` followed by 26 lowercase letters and digits",
                )
                .with_reason("bad_workspace_header")
            })?;
        if let Some(own) = &principal.workspace {
            if own != named {
                return Err(Error::permission_denied(format!(
                    "X-Workspace-ID: this key is confined to workspace `{own}`"
                ))
                .with_reason("other_workspace"));
            }
        } else if let Some(workspaces) = &self.gw.workspaces {
            if !workspaces.exists(&principal.org, named).await? {
                return Err(Error::not_found(format!(
                    "X-Workspace-ID: no workspace `{named}` in this organization"
                )));
            }
        }
        self.workspace = Some(named.to_owned());
        Ok(())
    }

    /// Limit: the principal's rate limit, then its organization's (429). A refused request still counts.
    async fn limit(&mut self, principal: &Principal) -> Result<(), Error> {
        let (own, org) = self
            .gw
            .rate_limiter
            .check_all(principal, &*self.gw.clock)
            .await?;
        self.limit = own;
        if let Some(d) = self.limit.filter(|d| !d.allowed) {
            return Err(Error::new(
                Code::RateLimited,
                format!(
                    "the rate limit of {} requests per minute is spent; retry after the Retry-After delay",
                    d.limit
                ),
            ));
        }
        if let Some(org) = org {
            if !org.allowed {
                self.limit = Some(org);
                return Err(Error::new(
                    Code::RateLimited,
                    format!(
                        "the organization's rate limit of {} requests per minute is spent; retry after the \
                         Retry-After delay",
                        org.limit
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Claim slots: one of the organization's concurrent requests, one of the principal's, and for a stream
    /// one of its open streams (503 past any cap), so that no tenant (however many keys or sessions it has)
    /// and no principal can take every slot of the gateway. They are held until the answer is committed.
    fn claim_slots(&mut self, principal: &Principal) -> Result<(), Error> {
        let gw = self.gw;
        let org = gw.org_slots.claim(principal.org.clone()).ok_or_else(|| {
            Error::unavailable(format!(
                "this organization already has {} requests in flight; retry shortly",
                gw.org_slots.max()
            ))
            .with_reason("org_overloaded")
        })?;
        let key = principal.unique_key();
        if self.entry.streaming {
            let slot = gw.stream_slots.claim(key.clone()).ok_or_else(|| {
                Error::unavailable(format!(
                    "this principal already has {} streams open; finish one first",
                    gw.stream_slots.max()
                ))
                .with_reason("principal_streams")
            })?;
            self.stream_slot = Some(slot);
        }
        let own = gw.request_slots.claim(key).ok_or_else(|| {
            Error::unavailable(format!(
                "this principal already has {} requests in flight; retry shortly",
                gw.request_slots.max()
            ))
            .with_reason("principal_overloaded")
        })?;
        self.slots = Some((org, own));
        Ok(())
    }
}

/// The principal of a request's bearer token (401; 403 for a disallowed address), counting failures: the one
/// way a token is read, for operation calls and the MCP endpoint alike.
pub(crate) async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    info: &RequestInfo,
) -> Result<Arc<Principal>, Error> {
    let result = async {
        let header = headers.get(AUTHORIZATION).ok_or_else(|| {
            Error::unauthenticated("missing `Authorization: Bearer <token>` header")
        })?;
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
    .await;
    result.inspect_err(|e| {
        let reason = e.reason.unwrap_or(e.code.as_str());
        metrics::counter!("opgate_auth_failures_total", "reason" => reason).increment(1);
    })
}

/// Authorize: a pure function of the principal's permissions and the declared scope (403).
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

/// Read body: its type (JSON or none: 415), its size (413, refused early on `Content-Length`) and its pace
/// (the whole body within the body timeout, else 400: a trickled body cannot hold a slot).
pub(crate) async fn read_body<B: RequestBody>(
    gw: &Gateway,
    parts: &Parts,
    body: Option<B>,
) -> Result<Bytes, Failure> {
    let Some(mut body) = body else {
        return Ok(Bytes::new());
    };
    let headers = &parts.headers;
    // An empty body means `{}` whatever its declared type (curl -d '' sends a form type).
    let empty = body.size_hint().exact() == Some(0);
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
            let shown = ct.to_str().unwrap_or("(binary)");
            let shown: String = shown.chars().take(100).collect();
            return Err(put_back(
                Error::new(
                    Code::UnsupportedMediaType,
                    format!(
                        "Content-Type must be application/json, not `{shown}`: send the header \
                         `Content-Type: application/json` (curl: -H 'Content-Type: application/json')"
                    ),
                ),
                body,
            )
            .await);
        }
    }
    let limit = gw.config.max_body_bytes;
    let too_large = || {
        Failure {
            error: Error::new(
                Code::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ),
            allow: None,
            // The rest of the body may be unread: never reuse this connection.
            close: true,
        }
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        if declared - limit as u64 <= DRAIN_MAX_BYTES as u64 {
            drain(&mut body, DRAIN_MAX_BYTES, DRAIN_MAX_TIME).await;
        }
        return Err(too_large());
    }
    let timeout = gw.config.body_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(&mut body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            drain(&mut body, DRAIN_MAX_BYTES, DRAIN_MAX_TIME).await;
            Err(too_large())
        }
        Ok(Err(_)) => Err(Failure {
            error: Error::invalid_argument("the request body could not be read"),
            allow: None,
            close: true,
        }),
        Err(_) => Err(Failure {
            error: Error::invalid_argument(format!(
                "the request body did not arrive within {} s; send it at once",
                timeout.as_secs()
            )),
            allow: None,
            close: true,
        }),
    }
}

/// A refusal found before the body was read: the body is settled like any unread one.
async fn put_back<B: RequestBody>(error: Error, mut body: B) -> Failure {
    let close = !drain_small(&mut body).await;
    Failure {
        error,
        allow: None,
        close,
    }
}

/// Reads and discards up to `max` bytes of a body within `time`; whether the body ended.
async fn drain<B: RequestBody>(body: &mut B, max: usize, time: Duration) -> bool {
    let discard = async {
        let mut seen = 0;
        loop {
            match body.frame().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > max {
                        return false;
                    }
                }
            }
        }
    };
    tokio::time::timeout(time, discard).await.unwrap_or(false)
}

/// Drains an unread body when it is small (declared or not); whether it ended.
async fn drain_small<B: RequestBody>(body: &mut B) -> bool {
    if body.is_end_stream() || body.size_hint().exact() == Some(0) {
        return true;
    }
    if body.size_hint().lower() > SMALL_BODY_BYTES as u64 {
        return false;
    }
    drain(body, SMALL_BODY_BYTES, SMALL_BODY_TIME).await
}

/// Settle the body: an answer given before the body was read must not leave it in the connection. A small
/// body is drained so the keep-alive connection stays usable; otherwise the response says
/// `Connection: close` (HTTP/1; an HTTP/2 stream is reset on its own).
pub(crate) async fn settle<B: RequestBody>(body: Option<B>, parts: &Parts, resp: &mut Resp) {
    // HTTP/2 resets an unread stream on its own; only HTTP/1 shares the connection with the next request.
    let Some(mut body) = body.filter(|_| parts.version <= Version::HTTP_11) else {
        return;
    };
    if !drain_small(&mut body).await {
        close(resp, parts.version);
    }
}

/// Marks an HTTP/1 response as the connection's last.
fn close(resp: &mut Resp, version: Version) {
    if version <= Version::HTTP_11 {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Respond: the answer, or the contract's error body, as an HTTP response with every header it implies:
/// `WWW-Authenticate` (401), `Allow` (405), `RateLimit-*` and `Retry-After` for a limited principal,
/// `Connection: close` when the body was left half-read.
fn respond(
    outcome: Result<Answer, Failure>,
    limit: Option<&Decision>,
    stream_slot: Option<crate::slots::Slot<String>>,
    request_id: &str,
    version: Version,
) -> Resp {
    let mut resp = match outcome {
        Ok(Answer::Encoded(Encoded::Json(body))) => http_io::json(body, request_id),
        Ok(Answer::Encoded(Encoded::Stream(lines))) => {
            // The principal's stream slot is held until the stream ends or the client goes away.
            let lines = lines.map(move |chunk| {
                let _held = &stream_slot;
                chunk
            });
            http_io::ndjson(lines, request_id)
        }
        Ok(Answer::Replay(replay)) => http_io::replay(replay.status, replay.body, request_id),
        Err(failure) => {
            // The one log line of an internal failure, with the request id the client will quote.
            if let Some(cause) = &failure.error.cause {
                tracing::error!(request_id, code = failure.error.code.as_str(), error = %cause, "request failed");
            }
            let mut resp = http_io::error(&failure.error, request_id);
            if let Some(allow) = failure.allow {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            if failure.close {
                close(&mut resp, version);
            }
            resp
        }
    };
    if let Some(decision) = limit {
        http_io::rate_limit_headers(resp.headers_mut(), decision);
    }
    resp
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

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(256).collect())
}
