//! One request, one straight path: request id → route → authenticate → authorize → read body → decode →
//! handler → encode. Each stage is one function and reads the operation's declaration, never its name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT,
};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::Request;
use opgate_core::{scope, Code, Context, Entry, Error, Principal, Reply, RequestInfo};

use crate::http_io::{self, Resp, X_REQUEST_ID};
use crate::{client_addr, Gateway};

/// Longest bearer token looked at; longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 4096;
/// How much of an over-limit body is still read (and discarded) before the 413 goes out, at most: a client
/// still sending would otherwise hit a reset connection instead of reading the 413.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long that draining may take, at most.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

pub async fn handle(gw: &Gateway, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let mut op_id = None;
    let mut principal_id = None;
    let resp = match route(gw, &req) {
        Route::Health => health(&req, &request_id),
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
            op_id = Some(entry.meta.id);
            match call(gw, entry, peer, req, &request_id, &mut principal_id).await {
                Ok(Reply::Json(body)) => http_io::json(body, &request_id),
                Ok(Reply::Stream(lines)) => http_io::ndjson(lines, &request_id),
                Err(e) => {
                    let mut resp = http_io::error(&e, &request_id);
                    if e.code == Code::PayloadTooLarge {
                        // The rest of the body may be unread: never reuse this connection.
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    resp
                }
            }
        }
    };
    tracing::info!(
        request_id = %request_id,
        op = op_id.unwrap_or("-"),
        principal = principal_id.as_deref().unwrap_or("-"),
        status = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

enum Route<'a> {
    Health,
    Operation(Result<&'a Entry, Error>),
    NotFound,
}

/// Maps the path to an operation: `/v1/op/<id>` or `/v1/<resource>/<action>`; only POST is allowed there.
fn route<'a>(gw: &'a Gateway, req: &Request<Incoming>) -> Route<'a> {
    let path = req.uri().path();
    if path == "/healthz" {
        return Route::Health;
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

async fn call(
    gw: &Gateway,
    entry: &Entry,
    peer: SocketAddr,
    req: Request<Incoming>,
    request_id: &str,
    principal_id: &mut Option<String>,
) -> Result<Reply, Error> {
    let info = RequestInfo {
        client_ip: Some(client_addr::client_ip(
            peer.ip(),
            req.headers(),
            &gw.config.trusted_proxies,
        )),
        user_agent: user_agent(req.headers()),
    };
    let principal = authenticate(gw, req.headers(), &info).await?;
    *principal_id = Some(principal.id.clone());
    authorize(&principal, entry)?;
    let body = read_body(gw, req).await?;
    let ctx = Context {
        principal,
        request_id: Arc::from(request_id),
        client_ip: info.client_ip,
    };
    entry.invoke(ctx, &body)?.await
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
