//! The operations as MCP tools: `POST /mcp` speaks the Model Context Protocol (revision 2025-11-25, and the
//! earlier 2025-06-18 and 2025-03-26 by negotiation) over its Streamable HTTP transport, so that an AI agent
//! can list and call the operations a Bearer token allows.
//!
//! The JSON-RPC surface is small and written here by hand (`initialize`, `ping`, `tools/list`, `tools/call`,
//! notifications): one POST carries one message and is answered with one `application/json` body, without
//! sessions (no `Mcp-Session-Id`: any instance of a fleet answers any request) and without an SSE stream
//! (`GET` is 405, as the transport allows for a server that sends no messages of its own).
//!
//! A tool is a registry entry, listed only to principals holding its scope, and a `tools/call` is the
//! operation call itself: it is turned into the request `POST /v1/op/<id>` (same token, `X-Workspace-ID`,
//! client address and request id; `idempotency_key` as `Idempotency-Key`) marked [`Via::Mcp`], and run through
//! the gateway's one pipeline, so authentication, scopes, rate limits, slots, idempotency, decoding and the
//! audit record are exactly those of the HTTP API. Its answer becomes the tool result: the output as
//! `structuredContent` (and as text), a page of a stream's items with a cursor to the next, or the contract's
//! error body with `isError`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use opgate_core::schemars::generate::Contract;
use opgate_core::{
    schema_generator, scope, Code, Entry, Error, Principal, Registry, RequestInfo, SideEffect, Via,
    WORKSPACE_HEADER,
};
use serde_json::{json, Map, Value};

use crate::http_io::{self, Resp, X_REQUEST_ID};
use crate::pipeline::{self, Failure, RequestBody};
use crate::{client_addr, Gateway};

/// The protocol revision this endpoint speaks first.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";
/// Every revision it answers in: the client's, when listed here; else the latest.
pub const PROTOCOL_VERSIONS: &[&str] = &[LATEST_PROTOCOL_VERSION, "2025-06-18", "2025-03-26"];
/// Items a stream tool returns per call at most; `next_cursor` continues.
pub const PAGE_SIZE: usize = 100;

/// The tool argument carrying an `Idempotency-Key`, added to tools whose operation honours one.
const IDEMPOTENCY_ARG: &str = "idempotency_key";
/// The tool argument carrying a stream's `next_cursor`, added to streaming tools.
const CURSOR_ARG: &str = "cursor";
/// Input fields that continue a list after the id of its last item, tried in this order.
const CURSOR_FIELDS: &[&str] = &["after_id", "before", "before_id"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// A refusal by the gateway before the message was looked at (401, 403, 405, 413, 415, 503): `data.code` is
/// the contract's code.
const GATEWAY_REFUSAL: i64 = -32000;

/// The MCP annotations of an operation, from its side-effect class: `(readOnlyHint, destructiveHint,
/// idempotentHint)`. A read changes nothing (so repeating it is harmless); a write and a destructive call
/// honour `Idempotency-Key` (the `idempotency_key` argument), so repeating one with the same arguments has
/// no further effect; an export mints a new secret each time.
pub fn hints(side_effect: SideEffect) -> (bool, bool, bool) {
    match side_effect {
        SideEffect::Read => (true, false, true),
        SideEffect::Write => (false, false, true),
        SideEffect::Export => (false, false, false),
        SideEffect::Destructive => (false, true, true),
    }
}

/// Whether an operation reaches outside the gateway (MCP's `openWorldHint`). The built-in and embedded
/// operations act on the gateway's own state only; operations served by an upstream service are open-world.
pub fn open_world(entry: &Entry) -> bool {
    // Declared as data: an upstream service's operation, reaching outside the gateway.
    entry.dynamic
}

/// One tool: its MCP definition and what a call needs to know of it.
struct Tool {
    /// The operation id, which is also the tool name.
    id: &'static str,
    scope: &'static str,
    streaming: bool,
    /// The `tools/list` entry.
    definition: Value,
    /// The tool takes `idempotency_key` (the operation honours `Idempotency-Key` and has no such field).
    idempotency_arg: bool,
    /// The tool takes `cursor` (a stream whose input has no such field).
    cursor_arg: bool,
    /// The operation's `limit` field and its maximum, if it has one.
    limit: Option<Option<u64>>,
    /// The input field that continues the list after an item's `id`, if any.
    cursor_field: Option<&'static str>,
    /// The unary output is not an object: `structuredContent` is `{"result": output}`.
    wrapped: bool,
}

/// The tools of one operation set, built once per set (the first `tools/list` or `tools/call` after it is
/// served) and shared until the set is replaced.
#[derive(Default)]
pub(crate) struct ToolCache(Mutex<Option<Tools>>);

/// The tools of an operation set, with the set they were built from.
type Tools = (Arc<Registry>, Arc<Vec<Tool>>);

impl ToolCache {
    fn tools(&self, registry: &Arc<Registry>) -> Arc<Vec<Tool>> {
        let mut cached = self.0.lock().expect("tool cache lock");
        if let Some((of, tools)) = cached.as_ref() {
            if Arc::ptr_eq(of, registry) {
                return Arc::clone(tools);
            }
        }
        let tools = Arc::new(registry.entries().iter().map(tool).collect::<Vec<_>>());
        *cached = Some((Arc::clone(registry), Arc::clone(&tools)));
        tools
    }
}

/// A schema standing alone, as a tool's: `#/components/schemas/X` references become `#/$defs/X` with the
/// definitions beside the root, and a root that is only a reference is replaced by what it references.
fn standalone(
    entry_schema: &opgate_core::SchemaFn,
    contract: Contract,
) -> (Value, Map<String, Value>) {
    let mut generator = schema_generator(contract);
    let mut root = entry_schema(&mut generator).to_value();
    let mut defs: Map<String, Value> = generator.take_definitions(true);
    for def in defs.values_mut() {
        relink(def);
    }
    relink(&mut root);
    let target = root
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .filter(|_| root.as_object().is_some_and(|o| o.len() == 1))
        .map(str::to_owned);
    if let Some(def) = target.and_then(|name| defs.get(&name)) {
        root = def.clone();
    }
    (root, defs)
}

/// Rewrites the spec's references (`#/components/schemas/X`) into a standalone schema's (`#/$defs/X`), and
/// drops the `format`s JSON Schema does not define (schemars' `uint32`, `int64`, `double`, ...), which
/// validators in MCP clients warn about; the ranges they imply are given as `minimum` and `maximum` anyway.
fn relink(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let numeric_format = map.get("format").and_then(Value::as_str).is_some_and(|f| {
                f.trim_start_matches('u').starts_with("int") || f == "double" || f == "float"
            });
            if numeric_format {
                map.remove("format");
            }
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "$ref" => {
                        if let Some(name) = s.strip_prefix("#/components/schemas/") {
                            *s = format!("#/$defs/{name}");
                        }
                    }
                    other => relink(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(relink),
        _ => {}
    }
}

fn with_defs(mut schema: Value, defs: Map<String, Value>) -> Value {
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

fn is_object_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

/// The tool of a registry entry.
fn tool(entry: &Entry) -> Tool {
    let meta = entry.meta;
    let (mut input, input_defs) = standalone(&entry.input_schema, Contract::Deserialize);
    if !is_object_schema(&input) {
        // Every operation takes a JSON object; a schema saying otherwise is wrapped as the object it is.
        input = json!({"type": "object", "allOf": [input]});
    }
    let fields = input
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let idempotency_arg = meta.side_effect.is_idempotent() && !fields.contains_key(IDEMPOTENCY_ARG);
    let cursor_arg = entry.streaming && !fields.contains_key(CURSOR_ARG);
    let limit = fields
        .get("limit")
        .map(|l| l.get("maximum").and_then(Value::as_u64));
    let cursor_field = CURSOR_FIELDS
        .iter()
        .copied()
        .find(|f| fields.contains_key(*f));
    let properties = input
        .as_object_mut()
        .expect("an object schema")
        .entry("properties")
        .or_insert_with(|| json!({}));
    if idempotency_arg {
        properties[IDEMPOTENCY_ARG] = json!({
            "type": "string",
            "minLength": 1,
            "maxLength": opgate_core::MAX_IDEMPOTENCY_KEY_LEN,
            "description": "A key of your choice (e.g. a UUID) making this call safe to retry: a retry with the same \
                key and arguments within 24 hours returns the first answer instead of acting again.",
        });
    }
    if cursor_arg {
        properties[CURSOR_ARG] = json!({
            "type": "string",
            "description": "The `next_cursor` of the previous page, to continue the list (give the other arguments \
                as before).",
        });
    }
    let (output, output_defs) = standalone(&entry.output_schema, Contract::Serialize);
    let mut defs = input_defs;
    let input = with_defs(input, defs.clone());
    defs = output_defs;
    let wrapped = !entry.streaming && !is_object_schema(&output);
    let output = if entry.streaming {
        json!({
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": output, "description": "This page of the list, in its order."},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` (with the same other arguments) for the next page; null at the end.",
                },
            },
            "required": ["items", "next_cursor"],
        })
    } else if wrapped {
        json!({"type": "object", "properties": {"result": output}, "required": ["result"]})
    } else {
        output
    };
    let output = with_defs(output, defs);
    let (read_only, destructive, idempotent) = hints(meta.side_effect);
    let mut description = meta.summary.trim().to_owned();
    description.push_str(&format!(
        "\n\nSide effect: {}. Scope: {}.",
        meta.side_effect.as_str(),
        if meta.scope == scope::AUTHENTICATED {
            "none (any valid token)".to_owned()
        } else {
            format!("`{}`", meta.scope)
        }
    ));
    if meta.side_effect.returns_secrets() {
        description.push_str(
            " Returns secret material (shown once, never stored or replayed): keep it out of logs and \
             transcripts, and hand it only to where it is needed.",
        );
    }
    if meta.side_effect == SideEffect::Destructive {
        description.push_str(" Destructive: it cannot be undone.");
    }
    if idempotency_arg {
        description.push_str(" Pass `idempotency_key` to make a retry safe.");
    }
    if entry.streaming {
        description.push_str(&format!(
            " Answers a page of at most {PAGE_SIZE} items and a `next_cursor` to continue."
        ));
    }
    let definition = json!({
        "name": meta.id,
        "title": meta.id,
        "description": description,
        "inputSchema": input,
        "outputSchema": output,
        "annotations": {
            "title": meta.id,
            "readOnlyHint": read_only,
            "destructiveHint": destructive,
            "idempotentHint": idempotent,
            "openWorldHint": open_world(entry),
        },
    });
    Tool {
        id: meta.id,
        scope: meta.scope,
        streaming: entry.streaming,
        definition,
        idempotency_arg,
        cursor_arg,
        limit,
        cursor_field,
        wrapped,
    }
}

/// `POST /mcp`: one JSON-RPC message in, one answer out. Never fails (every failure is a response).
pub(crate) async fn handle<B: RequestBody>(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    parts: Parts,
    body: B,
    request_id: Arc<str>,
) -> Resp {
    let refused = |error: Error| Failure {
        error,
        allow: None,
        close: false,
    };
    if parts.method != Method::POST {
        let failure = Failure {
            error: Error::new(
                Code::MethodNotAllowed,
                format!(
                    "use POST for /mcp, not {}: this endpoint answers each request in its response and opens \
                     no server-sent event stream",
                    parts.method
                ),
            ),
            allow: Some("POST"),
            close: false,
        };
        return refusal(failure, Some(body), &parts, &request_id).await;
    }
    if let Err(e) = check_origin(&parts.headers, &gw.config.mcp_allowed_origins) {
        return refusal(refused(e), Some(body), &parts, &request_id).await;
    }
    if let Some(version) = parts.headers.get("mcp-protocol-version") {
        let known = version
            .to_str()
            .is_ok_and(|v| PROTOCOL_VERSIONS.contains(&v.trim()));
        if !known {
            let shown: String = String::from_utf8_lossy(version.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect();
            let message = format!(
                "MCP-Protocol-Version: `{shown}` is not supported; this server speaks {}",
                PROTOCOL_VERSIONS.join(", ")
            );
            let mut resp = rpc_error_response(
                StatusCode::BAD_REQUEST,
                None,
                INVALID_REQUEST,
                &message,
                None,
                &request_id,
            );
            pipeline::settle(Some(body), &parts, &mut resp).await;
            return resp;
        }
    }
    let client_ip = client_addr::client_ip(peer.ip(), &parts.headers, &gw.config.trusted_proxies);
    let info = RequestInfo {
        client_ip: Some(client_ip),
        user_agent: pipeline::user_agent(&parts.headers),
    };
    let principal = match pipeline::authenticate(gw, &parts.headers, &info).await {
        Ok(principal) => principal,
        Err(e) => return refusal(refused(e), Some(body), &parts, &request_id).await,
    };
    let bytes = match pipeline::read_body(gw, &parts, Some(body)).await {
        Ok(bytes) => bytes,
        Err(failure) => return refusal(failure, None::<B>, &parts, &request_id).await,
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(e) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                None,
                PARSE_ERROR,
                &format!("Parse error: the body is not JSON ({e})"),
                None,
                &request_id,
            )
        }
    };
    let Value::Object(message) = message else {
        let why = if message.is_array() {
            "Invalid Request: batches are not supported; send one JSON-RPC message per POST"
        } else {
            "Invalid Request: the body must be one JSON-RPC message (an object)"
        };
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            why,
            None,
            &request_id,
        );
    };
    let id = message.get("id").cloned();
    let id_ok = matches!(&id, Some(Value::String(_)) | Some(Value::Number(_)));
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            id.filter(|_| id_ok),
            INVALID_REQUEST,
            "Invalid Request: `jsonrpc` must be \"2.0\"",
            None,
            &request_id,
        );
    }
    let method = match message.get("method") {
        Some(Value::String(method)) => method.clone(),
        Some(_) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                id.filter(|_| id_ok),
                INVALID_REQUEST,
                "Invalid Request: `method` must be a string",
                None,
                &request_id,
            )
        }
        None if id_ok && (message.contains_key("result") || message.contains_key("error")) => {
            // A response to a request of ours: this server sends none, so there is nothing to match it to.
            return accepted(&request_id);
        }
        None => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                id.filter(|_| id_ok),
                INVALID_REQUEST,
                "Invalid Request: a message needs a `method` (or is a response with `result` or `error`)",
                None,
                &request_id,
            )
        }
    };
    let Some(id) = id else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, ...): nothing to answer.
        return accepted(&request_id);
    };
    if !id_ok {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "Invalid Request: `id` must be a string or a number",
            None,
            &request_id,
        );
    }
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    if !(params.is_object() || params.is_null()) {
        return rpc_error(
            id,
            INVALID_PARAMS,
            "Invalid params: `params` must be an object",
            &request_id,
        );
    }
    let result = match method.as_str() {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(list_tools(gw, &principal)),
        "tools/call" => call_tool(gw, peer, &parts, &params, &request_id).await,
        other => Err((
            METHOD_NOT_FOUND,
            format!(
                "Method not found: `{}` (this server offers initialize, ping, tools/list and tools/call)",
                other.chars().take(64).collect::<String>()
            ),
        )),
    };
    match result {
        Ok(result) => rpc_result(id, result, &request_id),
        Err((code, message)) => rpc_error(id, code, &message, &request_id),
    }
}

/// `initialize`: the client's protocol revision when this server speaks it, else the latest; the tools
/// capability, and how to use the tools.
fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(LATEST_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {
            "name": "opgate",
            "title": "opgate",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "Each tool is an operation of this API gateway, named by its operation id; you see the \
            ones your token's scopes allow. Annotations tell reads (readOnlyHint) from writes and destructive \
            calls. Writes and destructive calls take an optional `idempotency_key`: reuse it to retry safely. \
            Lists answer a page of items with `next_cursor`; pass it back as `cursor` with the same arguments. \
            A failed call is a tool error whose text is {\"error\": {\"code\", \"message\", \
            \"request_id\"}}; the code says what to do (invalid_argument: fix the arguments; permission_denied: \
            the token lacks the scope; rate_limited: wait; not_found: check the id).",
    })
}

/// `tools/list`: the tools of every operation the principal's scopes allow, in registration order (one page).
fn list_tools(gw: &Gateway, principal: &Principal) -> Value {
    let served = gw.served();
    let tools = gw.mcp_tools.tools(&served.registry);
    let listed: Vec<&Value> = tools
        .iter()
        .filter(|t| scope::holds(&principal.permissions, t.scope))
        .map(|t| &t.definition)
        .collect();
    json!({ "tools": listed })
}

/// What a `tools/call` could not even start with: a JSON-RPC error (code, message).
type CallRefusal = (i64, String);

/// `tools/call`: the operation run through the pipeline as `POST /v1/op/<name>`, its answer as a tool result.
async fn call_tool(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    parts: &Parts,
    params: &Value,
    request_id: &Arc<str>,
) -> Result<Value, CallRefusal> {
    let invalid = |message: String| (INVALID_PARAMS, format!("Invalid params: {message}"));
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`name` must be the tool's name".into()))?;
    let served = gw.served();
    let tools = gw.mcp_tools.tools(&served.registry);
    let Some(tool) = tools.iter().find(|t| t.id == name) else {
        let shown: String = name.chars().filter(|c| !c.is_control()).take(128).collect();
        return Err(invalid(format!("unknown tool `{shown}`")));
    };
    let mut arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => return Err(invalid("`arguments` must be an object".into())),
    };
    let mut headers = HeaderMap::new();
    if tool.idempotency_arg {
        match arguments.remove(IDEMPOTENCY_ARG) {
            None | Some(Value::Null) => {}
            Some(Value::String(key)) => match HeaderValue::from_str(&key) {
                Ok(value) => {
                    headers.insert("idempotency-key", value);
                }
                Err(_) => {
                    return Ok(tool_error(
                        &Error::invalid_argument(format!(
                            "idempotency_key: must be 1 to {} visible ASCII characters",
                            opgate_core::MAX_IDEMPOTENCY_KEY_LEN
                        )),
                        request_id,
                    ))
                }
            },
            Some(_) => {
                return Ok(tool_error(
                    &Error::invalid_argument("idempotency_key: must be a string"),
                    request_id,
                ))
            }
        }
    }
    let mut page = Page::first(tool, &arguments);
    if tool.cursor_arg {
        match arguments.remove(CURSOR_ARG) {
            None | Some(Value::Null) => {}
            Some(cursor) => {
                match Cursor::decode(&cursor, tool.id) {
                    Some(cursor) => {
                        page.skip = cursor.skip;
                        for (field, value) in cursor.set {
                            arguments.insert(field, value);
                        }
                    }
                    None => return Ok(tool_error(
                        &Error::invalid_argument(
                            "cursor: not a `next_cursor` this tool gave; start again without it",
                        ),
                        request_id,
                    )),
                }
            }
        }
    }
    if tool.streaming {
        if let Some(max) = tool.limit {
            // One more than the page, to tell whether the list goes on.
            let want = page.skip.saturating_add(page.size).saturating_add(1) as u64;
            arguments.insert("limit".into(), json!(max.map_or(want, |m| want.min(m))));
        }
    }
    let body = serde_json::to_vec(&arguments).expect("JSON values serialize");
    // The whole call, a stream's page included, within the request timeout: the pipeline bounds the answer's
    // head, this bounds reading a page of its body.
    let timeout = gw.config.request_timeout;
    let answered = tokio::time::timeout(timeout, async {
        let resp = run(gw, peer, parts, tool.id, headers, body, request_id).await;
        tool_result(tool, resp, page).await
    })
    .await;
    Ok(answered.unwrap_or_else(|_| {
        tool_error(
            &Error::unavailable(format!(
                "the request did not complete within {} s",
                timeout.as_secs()
            )),
            request_id,
        )
    }))
}

/// Runs `POST /v1/op/<id>` through the pipeline on behalf of the MCP request in `outer`: its token, workspace,
/// forwarding and user agent headers, its request id, plus `extra`, marked as coming through MCP.
async fn run(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    outer: &Parts,
    id: &str,
    extra: HeaderMap,
    body: Vec<u8>,
    request_id: &str,
) -> Resp {
    let mut req = http::Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = format!("/v1/op/{id}")
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/v1/op/-"));
    let headers = req.headers_mut();
    for name in [
        http::header::AUTHORIZATION,
        http::header::USER_AGENT,
        http::HeaderName::from_static("x-forwarded-for"),
        http::HeaderName::from_static(WORKSPACE_HEADER),
    ] {
        for value in outer.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.extend(extra);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(rid) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), rid);
    }
    req.extensions_mut().insert(Via::Mcp);
    pipeline::handle_call(gw, peer, req).await
}

/// Which part of a stream a call answers.
struct Page {
    /// Items to pass over first (a cursor over a list without an id cursor field).
    skip: usize,
    /// Items to answer at most.
    size: usize,
}

impl Page {
    /// The first page: the `limit` argument when smaller than [`PAGE_SIZE`].
    fn first(tool: &Tool, arguments: &Map<String, Value>) -> Page {
        let asked = tool
            .limit
            .and(arguments.get("limit"))
            .and_then(Value::as_u64)
            .filter(|&n| n > 0);
        Page {
            skip: 0,
            size: asked.map_or(PAGE_SIZE, |n| (n as usize).min(PAGE_SIZE)),
        }
    }
}

/// Where the next page of a stream starts: fields to set in the arguments (`after_id` of the last item), or
/// items to skip. Opaque to the client (base64url JSON); it only steers the operation's own arguments, which
/// the operation checks as any others.
#[derive(Default)]
struct Cursor {
    set: Map<String, Value>,
    skip: usize,
}

impl Cursor {
    fn encode(&self, tool: &str) -> String {
        let doc = json!({"tool": tool, "set": self.set, "skip": self.skip});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    fn decode(cursor: &Value, tool: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor.as_str()?)
            .ok()?;
        let doc: Value = serde_json::from_slice(&bytes).ok()?;
        if doc.get("tool")?.as_str()? != tool {
            return None;
        }
        Some(Cursor {
            set: doc.get("set")?.as_object()?.clone(),
            skip: usize::try_from(doc.get("skip")?.as_u64()?)
                .ok()
                .filter(|skip| *skip <= MAX_SKIP)?,
        })
    }
}

/// The most items a cursor may skip (for lists that cannot continue after an id): past it a client pages with the
/// operation's own filters. Bounds what one call reads of a stream.
const MAX_SKIP: usize = 10_000;

/// The tool result of the pipeline's answer `resp`.
async fn tool_result(tool: &Tool, resp: Resp, page: Page) -> Value {
    let status = resp.status();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let ndjson = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/x-ndjson"));
    let mut body = resp.into_body();
    if status == StatusCode::OK && ndjson {
        return stream_page(tool, &mut body, page).await;
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != StatusCode::OK {
        let mut result = error_result(value);
        if let Some(secs) = retry_after {
            result["_meta"]["opgate/retry_after_seconds"] = json!(secs);
        }
        return result;
    }
    let structured = if tool.wrapped {
        json!({ "result": value })
    } else {
        value
    };
    let mut result = success(structured);
    if replayed {
        result["_meta"] = json!({ "opgate/idempotent_replayed": true });
    }
    result
}

/// Reads one page of an NDJSON answer: up to `page.size` items after `page.skip`, and whether more follow; a
/// stream that fails part-way is a tool error that still carries the items before it.
async fn stream_page(
    tool: &Tool,
    body: &mut http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>,
    page: Page,
) -> Value {
    let wanted = page.skip.saturating_add(page.size).saturating_add(1);
    let mut seen = 0usize;
    let mut items = Vec::new();
    let mut failed = None;
    let mut buffer: Vec<u8> = Vec::new();
    'read: loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(never)) => match never {},
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(item) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if is_error_line(&item) {
                failed = Some(item);
                break 'read;
            }
            seen += 1;
            if seen > page.skip && items.len() < page.size {
                items.push(item);
            }
            if seen >= wanted {
                break 'read;
            }
        }
    }
    // More follow when the stream gave one item past the page (or, capped by the operation's own maximum
    // `limit`, filled the page).
    let clamped = tool
        .limit
        .flatten()
        .is_some_and(|max| page.skip.saturating_add(page.size).saturating_add(1) as u64 > max);
    let more = failed.is_none()
        && (seen >= wanted || (clamped && items.len() == page.size && page.size > 0));
    let next = more.then(|| {
        let last_id = items.last().and_then(|i| i.get("id")).cloned();
        match (tool.cursor_field, last_id) {
            (Some(field), Some(id)) if page.skip == 0 => {
                let mut set = Map::new();
                set.insert(field.to_owned(), id);
                Cursor { set, skip: 0 }
            }
            _ => Cursor {
                set: Map::new(),
                skip: page.skip.saturating_add(items.len()),
            },
        }
    });
    let next_cursor = next.map(|c| c.encode(tool.id));
    let mut structured = json!({ "items": items, "next_cursor": next_cursor });
    match failed {
        None => success(structured),
        Some(error) => {
            // The items that came before the failure are still shown (as text: an error has no structured
            // content).
            structured["error"] = error["error"].clone();
            let mut result = error_result(error);
            result["content"][0]["text"] = json!(structured.to_string());
            result
        }
    }
}

/// Whether an NDJSON line is the contract's closing error line (`{"error": {"code": ...}}`).
fn is_error_line(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|o| o.len() == 1 && o.get("error").and_then(|e| e.get("code")).is_some())
}

/// A successful tool result: the structured content, and the same as text for clients reading only text.
fn success(structured: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// A failed call as a tool error: the contract's error body as text, and its `error` object under
/// `_meta["opgate/error"]` for programs. Not as `structuredContent`, which clients check against the tool's
/// output schema even on errors.
fn error_result(body: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": body.to_string()}],
        "isError": true,
        "_meta": {"opgate/error": body.get("error").cloned().unwrap_or(Value::Null)},
    })
}

/// A call refused before it reached the pipeline (its arguments), as a tool error like the pipeline's own.
fn tool_error(e: &Error, request_id: &str) -> Value {
    error_result(serde_json::to_value(e.body(request_id)).expect("error bodies serialize"))
}

/// Whether the request's `Origin` (if any) may call: loopback origins and the configured ones (403 else).
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Error> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let text = origin.to_str().unwrap_or("").trim();
    let listed = allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(text));
    if listed || is_loopback_origin(text) {
        return Ok(());
    }
    let shown: String = text.chars().filter(|c| !c.is_control()).take(100).collect();
    Err(Error::permission_denied(format!(
        "Origin `{shown}` may not call this MCP endpoint (allowed: loopback origins and --mcp-allowed-origins)"
    ))
    .with_reason("mcp_origin"))
}

/// `http(s)://localhost[:port]`, `http(s)://127.x.y.z[:port]` or `http(s)://[::1][:port]`.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if rest.contains(['/', '@', '?', '#']) {
        return false;
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, port)) if port.is_empty() || port.starts_with(':') => host,
            _ => return false,
        },
        None => rest.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A refusal before the message was read: the contract's status and headers (`WWW-Authenticate` on 401,
/// `Allow` on 405), with a JSON-RPC error body without id whose `data` holds the contract's error.
async fn refusal<B: RequestBody>(
    failure: Failure,
    body: Option<B>,
    parts: &Parts,
    request_id: &str,
) -> Resp {
    let e = &failure.error;
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let data = serde_json::to_value(&e.body(request_id).error).expect("error bodies serialize");
    let mut resp = rpc_error_response(
        status,
        None,
        GATEWAY_REFUSAL,
        &e.message,
        Some(data),
        request_id,
    );
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if parts.headers.contains_key(http::header::AUTHORIZATION) {
            "Bearer realm=\"opgate\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"opgate\""
        };
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    if let Some(allow) = failure.allow {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if failure.close {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    pipeline::settle(body, parts, &mut resp).await;
    resp
}

/// `202 Accepted` without a body: a notification or a response was taken.
fn accepted(request_id: &str) -> Resp {
    let mut resp = http_io::text(Bytes::new(), "application/json", request_id);
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().remove(CONTENT_TYPE);
    resp
}

fn rpc_result(id: Value, result: Value, request_id: &str) -> Resp {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    http_io::json(Bytes::from(body.to_string()), request_id)
}

fn rpc_error(id: Value, code: i64, message: &str, request_id: &str) -> Resp {
    rpc_error_response(StatusCode::OK, Some(id), code, message, None, request_id)
}

/// A JSON-RPC error response with `status`; without `id` when the request's is unknown.
fn rpc_error_response(
    status: StatusCode,
    id: Option<Value>,
    code: i64,
    message: &str,
    data: Option<Value>,
    request_id: &str,
) -> Resp {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    let mut body = json!({"jsonrpc": "2.0", "error": error});
    if let Some(id) = id {
        body["id"] = id;
    }
    let mut resp = http_io::json(Bytes::from(body.to_string()), request_id);
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_told_from_others() {
        for ok in [
            "http://localhost:6274",
            "http://127.0.0.1",
            "https://127.1.2.3:8443",
            "http://[::1]:3000",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "http://evil.com",
            "null",
            "http://127.0.0.1.nip.io",
            "http://[::2]:80",
            "file://localhost",
            "http://localhost@evil.com",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_belong_to_one_tool() {
        let mut set = Map::new();
        set.insert("after_id".into(), json!("key_1"));
        let text = Cursor { set, skip: 0 }.encode("api_keys.list");
        let back = Cursor::decode(&json!(text), "api_keys.list").unwrap();
        assert_eq!(back.set["after_id"], "key_1");
        assert!(Cursor::decode(&json!(text), "audit.list").is_none());
        assert!(Cursor::decode(&json!("garbage!"), "api_keys.list").is_none());
    }

    #[test]
    fn schemas_stand_alone() {
        let mut v = json!({"$ref": "#/components/schemas/A", "items": [{"$ref": "#/components/schemas/B"}]});
        relink(&mut v);
        assert_eq!(
            v,
            json!({"$ref": "#/$defs/A", "items": [{"$ref": "#/$defs/B"}]})
        );
    }
}
