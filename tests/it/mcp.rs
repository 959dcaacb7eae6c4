//! `POST /mcp`: the registry served as MCP tools (Streamable HTTP, protocol 2025-11-25). A session as a client
//! runs it (initialize, tools/list per scopes, tools/call of a read, an idempotent write, a destructive call,
//! a refusal, a stream page by page), the annotations are checked against every registered operation, and
//! the transport's edges answer as the spec says (versions, batches, methods, tokens, origins). Tool calls go
//! through the one pipeline: their audit records say `via: mcp`. And `GET /llms.txt` with its Markdown pages.
//! (A real MCP client library drives the real binary in tests/mcp-client, run by scripts/test-mcp-client.)

use std::collections::BTreeSet;

use base64::Engine;
use opgate::core::SideEffect;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{op_path, Reply, TestGateway, TestServer};

/// POSTs one JSON-RPC message to `/mcp` as an MCP client does (both content types accepted, the negotiated
/// protocol version sent).
async fn rpc(s: &TestGateway, token: Option<&str>, message: &Value) -> Reply {
    s.request(Method::POST, "/mcp", token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(message)
        .send()
        .await
}

/// A request's `result`, asserting a 200 JSON-RPC success with the same id.
#[track_caller]
fn result_of(reply: &Reply, id: i64) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], id, "{body}");
    assert!(body.get("error").is_none(), "{body}");
    body["result"].clone()
}

/// A JSON-RPC error: its HTTP status, code and (when the id was readable) id; returns the error object.
#[track_caller]
fn rpc_error(reply: &Reply, status: u16, code: i64, id: Option<i64>) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body.get("result").is_none(), "{body}");
    match id {
        Some(id) => assert_eq!(body["id"], id, "{body}"),
        None => assert!(body.get("id").is_none(), "no id: {body}"),
    }
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body["error"].clone()
}

async fn list_tools(s: &TestGateway, token: &str) -> Vec<Value> {
    let reply = rpc(
        s,
        Some(token),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let result = result_of(&reply, 2);
    assert!(result.get("nextCursor").is_none(), "one page");
    result["tools"].as_array().unwrap().clone()
}

fn names(tools: &[Value]) -> BTreeSet<String> {
    tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `tools/call`: the HTTP reply and the tool result.
async fn call(s: &TestGateway, token: &str, name: &str, arguments: Value) -> (Reply, Value) {
    let message = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}});
    let reply = rpc(s, Some(token), &message).await;
    let result = result_of(&reply, 3);
    (reply, result)
}

/// A successful tool result's structured content, checked against its text.
#[track_caller]
fn ok(result: &Value) -> Value {
    assert_eq!(result["isError"], false, "{result}");
    let structured = result["structuredContent"].clone();
    assert!(structured.is_object(), "{result}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(result["content"][0]["type"], "text");
    assert_eq!(text, structured, "the text is the structured content");
    structured
}

/// A tool error carrying the contract's error: its code, and the message.
#[track_caller]
fn tool_error(result: &Value, code: &str, request_id: &str) -> String {
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result.get("structuredContent").is_none(),
        "clients check structured content against the output schema, even on errors: {result}"
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["error"]["code"], code, "{result}");
    assert_eq!(text["error"]["request_id"], request_id, "{result}");
    assert_eq!(result["_meta"]["opgate/error"], text["error"], "{result}");
    text["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn initialize_negotiates_the_version_and_notifications_are_accepted() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for (asked, answered) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let message = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
        let reply = s
            .request(Method::POST, "/mcp", Some(&admin))
            .header("accept", "application/json, text/event-stream")
            .json(&message)
            .send()
            .await;
        let result = result_of(&reply, 1);
        assert_eq!(result["protocolVersion"], answered, "{asked}");
        assert_eq!(
            result["capabilities"],
            json!({"tools": {"listChanged": false}})
        );
        assert_eq!(result["serverInfo"]["name"], "opgate");
        assert!(result["instructions"]
            .as_str()
            .unwrap()
            .contains("idempotency_key"));
        assert_eq!(
            reply.header("mcp-session-id"),
            None,
            "stateless: no session"
        );
    }
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = rpc(&s, Some(&admin), &notification).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(reply.body.is_empty());
    let response = json!({"jsonrpc": "2.0", "id": 7, "result": {}});
    assert_eq!(rpc(&s, Some(&admin), &response).await.status, 202);
    let ping = rpc(
        &s,
        Some(&admin),
        &json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}),
    )
    .await;
    assert_eq!(
        ping.json(),
        json!({"jsonrpc": "2.0", "id": "p", "result": {}})
    );

    // A version header this server does not speak: 400, as the transport requires.
    let reply = s
        .request(Method::POST, "/mcp", Some(&admin))
        .header("mcp-protocol-version", "2099-01-01")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await;
    let error = rpc_error(&reply, 400, -32600, None);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("`2099-01-01` is not supported"));
}

#[tokio::test]
async fn tools_list_shows_exactly_what_the_scopes_allow() {
    let s = TestGateway::start().await;
    let registry = opgate::describe_registry().unwrap();
    let every: BTreeSet<String> = registry
        .entries()
        .iter()
        .map(|e| e.meta.id.to_owned())
        .collect();
    assert_eq!(names(&list_tools(&s, s.admin_key()).await), every);

    let reader = s.create_key("default", &["api_keys:read"]).await;
    assert_eq!(
        names(&list_tools(&s, &reader).await),
        ["api_keys.get", "api_keys.list", "auth.whoami"]
            .map(String::from)
            .into(),
    );
    let writer = s.create_key("default", &["workspaces:write"]).await;
    assert_eq!(
        names(&list_tools(&s, &writer).await),
        [
            "auth.whoami",
            "workspaces.create",
            "workspaces.delete",
            "workspaces.get",
            "workspaces.list",
            "workspaces.update"
        ]
        .map(String::from)
        .into(),
        "write implies read"
    );
    let all_reads = s.create_key("default", &["*:read"]).await;
    let reads: BTreeSet<String> = registry
        .entries()
        .iter()
        .filter(|e| e.meta.side_effect == SideEffect::Read)
        .map(|e| e.meta.id.to_owned())
        .collect();
    assert_eq!(names(&list_tools(&s, &all_reads).await), reads);
    let session = s.mint_session("default", "agent@example.com", &["audit:read"], 600);
    assert_eq!(
        names(&list_tools(&s, &session).await),
        ["audit.list", "auth.whoami"].map(String::from).into()
    );
}

/// The annotations table, over every registered operation: derived from the side effect, never by name.
#[tokio::test]
async fn every_tool_is_annotated_from_its_side_effect() {
    let s = TestGateway::start().await;
    let tools = list_tools(&s, s.admin_key()).await;
    let registry = opgate::describe_registry().unwrap();
    assert_eq!(tools.len(), registry.entries().len());
    for entry in registry.entries() {
        let id = entry.meta.id;
        let tool = tools.iter().find(|t| t["name"] == id).unwrap();
        let (read_only, destructive, idempotent) = match entry.meta.side_effect {
            SideEffect::Read => (true, false, true),
            SideEffect::Write => (false, false, true),
            SideEffect::Export => (false, false, false),
            SideEffect::Destructive => (false, true, true),
        };
        assert_eq!(
            tool["annotations"],
            json!({"title": id, "readOnlyHint": read_only, "destructiveHint": destructive,
                   "idempotentHint": idempotent, "openWorldHint": false}),
            "{id}"
        );
        let description = tool["description"].as_str().unwrap();
        assert!(
            description.starts_with(entry.meta.summary.trim()),
            "{id}: {description}"
        );
        assert!(
            description.contains(&format!(
                "Side effect: {}.",
                entry.meta.side_effect.as_str()
            )),
            "{id}: {description}"
        );
        assert_eq!(
            description.contains("Returns secret material"),
            entry.meta.side_effect == SideEffect::Export,
            "{id}: an export says it returns secrets"
        );
        let input = &tool["inputSchema"];
        assert_eq!(input["type"], "object", "{id}: {input}");
        let fields = input["properties"].as_object().unwrap();
        assert_eq!(
            fields.contains_key("idempotency_key"),
            entry.meta.side_effect.is_idempotent(),
            "{id}"
        );
        assert_eq!(fields.contains_key("cursor"), entry.streaming, "{id}");
        let output = &tool["outputSchema"];
        assert_eq!(output["type"], "object", "{id}: {output}");
        if entry.streaming {
            assert_eq!(output["required"], json!(["items", "next_cursor"]), "{id}");
        }
        let text = tool.to_string();
        assert!(!text.contains("#/components/"), "{id}: schemas stand alone");
        assert!(
            !text.contains("\"format\":\"uint"),
            "{id}: no non-standard formats"
        );
        for reference in text.split("\"$ref\":\"#/$defs/").skip(1) {
            let name = reference.split('"').next().unwrap();
            let defined = input["$defs"].get(name).is_some() || output["$defs"].get(name).is_some();
            assert!(defined, "{id}: `{name}` is defined beside its reference");
        }
    }
}

#[tokio::test]
async fn calls_run_through_the_pipeline_and_are_audited_as_mcp() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();

    // A read.
    let (_, result) = call(&s, &admin, "auth.whoami", json!({})).await;
    let me = ok(&result);
    assert_eq!(me["id"], s.id_of_key(&admin).await);
    assert_eq!(me["permissions"], json!(["*"]));

    // A write with an idempotency key, retried: the first answer again, marked as a replay.
    let (first_reply, result) = call(
        &s,
        &admin,
        "workspaces.create",
        json!({"name": "agents", "idempotency_key": "mcp-retry-1"}),
    )
    .await;
    let workspace = ok(&result);
    assert_eq!(workspace["name"], "agents");
    assert!(result.get("_meta").is_none());
    let (_, again) = call(
        &s,
        &admin,
        "workspaces.create",
        json!({"name": "agents", "idempotency_key": "mcp-retry-1"}),
    )
    .await;
    assert_eq!(ok(&again), workspace);
    assert_eq!(again["_meta"], json!({"opgate/idempotent_replayed": true}));
    let (mismatch_reply, other) = call(
        &s,
        &admin,
        "workspaces.create",
        json!({"name": "other", "idempotency_key": "mcp-retry-1"}),
    )
    .await;
    tool_error(&other, "idempotency_mismatch", mismatch_reply.request_id());

    // A destructive call.
    let (delete_reply, result) = call(
        &s,
        &admin,
        "workspaces.delete",
        json!({"workspace_id": workspace["id"]}),
    )
    .await;
    ok(&result);
    let (reply, result) = call(
        &s,
        &admin,
        "workspaces.get",
        json!({"workspace_id": workspace["id"]}),
    )
    .await;
    tool_error(&result, "not_found", reply.request_id());

    // The same operation over HTTP, for comparison.
    let http = s
        .call_ok("workspaces.create", &admin, json!({"name": "by-http"}))
        .await;

    // The replay and the mismatch are refusals before the handler: tallied, written on the next flush.
    s.flush_refusals().await;
    let audit = s.call_ok("audit.list", &admin, json!({})).await.lines();
    let find = |request_id: &str, operation: &str| -> Value {
        audit
            .iter()
            .find(|r| r["request_id"] == request_id && r["operation"] == operation)
            .unwrap_or_else(|| panic!("no record of {operation} {request_id}: {audit:?}"))
            .clone()
    };
    let created = find(first_reply.request_id(), "workspaces.create");
    assert_eq!(created["via"], "mcp");
    assert_eq!(created["status"], 200);
    assert_eq!(created["target_id"], workspace["id"]);
    assert_eq!(created["client_ip"], "127.0.0.1");
    let deleted = find(delete_reply.request_id(), "workspaces.delete");
    assert_eq!(deleted["via"], "mcp");
    assert_eq!(find(http.request_id(), "workspaces.create")["via"], "http");
    let mismatch = find(mismatch_reply.request_id(), "workspaces.create");
    assert_eq!(
        (mismatch["status"].clone(), mismatch["via"].clone()),
        (json!(422), json!("mcp"))
    );
}

#[tokio::test]
async fn refusals_and_bad_arguments_are_tool_errors_with_the_contract_code() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let reader = s.create_key("default", &["api_keys:read"]).await;

    // Not among its tools, and refused when called anyway: the pipeline's own 403, audited as MCP.
    let (reply, result) = call(&s, &reader, "workspaces.create", json!({"name": "nope"})).await;
    let message = tool_error(&result, "permission_denied", reply.request_id());
    assert_eq!(
        message,
        "operation `workspaces.create` requires scope `workspaces:write`, which this principal does not hold"
    );
    s.flush_refusals().await;
    let audit = s
        .call_ok(
            "audit.list",
            &admin,
            json!({"operation": "workspaces.create"}),
        )
        .await
        .lines();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["status"], 403);
    assert_eq!(audit[0]["via"], "mcp");

    // Input the operation refuses: the pipeline's 400, word for word.
    let (reply, result) = call(&s, &admin, "workspaces.create", json!({"nme": "typo"})).await;
    let mcp_message = tool_error(&result, "invalid_argument", reply.request_id());
    let http = s
        .post(
            &op_path("workspaces.create"),
            Some(&admin),
            &json!({"nme": "typo"}),
        )
        .await;
    assert_eq!(http.error(400, "invalid_argument"), mcp_message);
    let (reply, result) = call(
        &s,
        &admin,
        "workspaces.create",
        json!({"name": "x", "idempotency_key": 5}),
    )
    .await;
    assert_eq!(
        tool_error(&result, "invalid_argument", reply.request_id()),
        "idempotency_key: must be a string"
    );
    // An export takes no idempotency key: it is an unknown field there.
    let (reply, result) = call(
        &s,
        &admin,
        "api_keys.create",
        json!({"name": "x", "idempotency_key": "k"}),
    )
    .await;
    assert!(tool_error(&result, "invalid_argument", reply.request_id())
        .starts_with("unknown field `idempotency_key`"));

    // A rate-limited key: the 429 as a tool error, with the delay.
    let limited = s
        .create_key_with("default", &["*"], |k| k.rate_limit = Some(1))
        .await;
    let (_, result) = call(&s, &limited, "auth.whoami", json!({})).await;
    ok(&result);
    let (reply, result) = call(&s, &limited, "auth.whoami", json!({})).await;
    tool_error(&result, "rate_limited", reply.request_id());
    assert!(
        result["_meta"]["opgate/retry_after_seconds"]
            .as_u64()
            .unwrap()
            >= 1,
        "{result}"
    );

    // An export says what it returns, and returns it.
    let (_, result) = call(&s, &admin, "api_keys.create", json!({"name": "for-agent"})).await;
    assert!(ok(&result)["key"].as_str().unwrap().starts_with("opg_"));
}

#[tokio::test]
async fn a_stream_answers_a_page_at_a_time_with_a_cursor() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    s.seed_keys("default", 149).await;
    let all = s.list_ids(&admin, json!({"limit": 1000})).await;
    assert_eq!(all.len(), 150);

    // No limit: pages of 100 at most.
    let (_, result) = call(&s, &admin, "api_keys.list", json!({})).await;
    let page = ok(&result);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), all[..100]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, result) = call(&s, &admin, "api_keys.list", json!({"cursor": cursor})).await;
    let page = ok(&result);
    assert_eq!(ids(&page), all[100..]);
    assert_eq!(page["next_cursor"], Value::Null, "the end");

    // `limit` is the page size; following the cursor with the same arguments walks the whole list.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let (_, result) = call(
            &s,
            &admin,
            "api_keys.list",
            json!({"limit": 40, "cursor": cursor}),
        )
        .await;
        let page = ok(&result);
        assert!(ids(&page).len() <= 40);
        seen.extend(ids(&page));
        pages += 1;
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 4);

    // A newest-first list pages with its own cursor field (`before`).
    for i in 0..5 {
        s.call_ok(
            "workspaces.create",
            &admin,
            json!({"name": format!("w{i}")}),
        )
        .await;
    }
    let audit: Vec<Value> = s.call_ok("audit.list", &admin, json!({})).await.lines();
    let (_, result) = call(&s, &admin, "audit.list", json!({"limit": 3})).await;
    let first = ok(&result);
    let (_, result) = call(
        &s,
        &admin,
        "audit.list",
        json!({"limit": 3, "cursor": first["next_cursor"]}),
    )
    .await;
    let second = ok(&result);
    let both: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    let expected: Vec<String> = audit
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(both, expected[..5]);
    assert!(second["next_cursor"].is_null());

    // A cursor is only good for the tool that gave it.
    let (reply, result) = call(
        &s,
        &admin,
        "api_keys.list",
        json!({"cursor": first["next_cursor"]}),
    )
    .await;
    tool_error(&result, "invalid_argument", reply.request_id());

    // A forged cursor cannot make one call read without end: skips are bounded (and never overflow).
    for skip in [u64::MAX, 10_001] {
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"tool": "api_keys.list", "set": {}, "skip": skip}).to_string());
        let (reply, result) = call(&s, &admin, "api_keys.list", json!({"cursor": forged})).await;
        tool_error(&result, "invalid_argument", reply.request_id());
    }
}

#[tokio::test]
async fn malformed_messages_get_json_rpc_errors() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let raw = |body: &'static str| {
        s.request(Method::POST, "/mcp", Some(&admin))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    rpc_error(&raw("{not json").await, 400, -32700, None);
    let batch = raw(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).await;
    let error = rpc_error(&batch, 400, -32600, None);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("batches are not supported"));
    rpc_error(
        &raw(r#"{"id":1,"method":"ping"}"#).await,
        400,
        -32600,
        Some(1),
    );
    rpc_error(
        &raw(r#"{"jsonrpc":"2.0","id":1}"#).await,
        400,
        -32600,
        Some(1),
    );
    rpc_error(
        &raw(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#).await,
        400,
        -32600,
        None,
    );

    let unknown = rpc(
        &s,
        Some(&admin),
        &json!({"jsonrpc": "2.0", "id": 9, "method": "resources/list"}),
    )
    .await;
    let error = rpc_error(&unknown, 200, -32601, Some(9));
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("`resources/list`"));
    let bad_params = rpc(
        &s,
        Some(&admin),
        &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": [1]}),
    )
    .await;
    rpc_error(&bad_params, 200, -32602, Some(9));
    let no_tool =
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope.nope"}});
    let error = rpc_error(&rpc(&s, Some(&admin), &no_tool).await, 200, -32602, Some(9));
    assert_eq!(error["message"], "Invalid params: unknown tool `nope.nope`");
    let bad_args = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "auth.whoami", "arguments": [1]}});
    rpc_error(
        &rpc(&s, Some(&admin), &bad_args).await,
        200,
        -32602,
        Some(9),
    );

    // The gateway's own refusals before the message is read.
    let form = s
        .request(Method::POST, "/mcp", Some(&admin))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await;
    let error = rpc_error(&form, 415, -32000, None);
    assert_eq!(error["data"]["code"], "unsupported_media_type");
    assert_eq!(error["data"]["request_id"], form.request_id());
    for method in [Method::GET, Method::DELETE] {
        let reply = s.request(method, "/mcp", Some(&admin)).send().await;
        let error = rpc_error(&reply, 405, -32000, None);
        assert_eq!(error["data"]["code"], "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("POST"));
    }
}

#[tokio::test]
async fn tokens_and_origins_are_checked_before_anything_else() {
    let s = TestGateway::start_with(|setup| {
        setup.config.mcp_allowed_origins = vec!["https://agents.example.com".into()];
    })
    .await;
    let admin = s.admin_key().to_owned();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});

    let missing = rpc(&s, None, &ping).await;
    let error = rpc_error(&missing, 401, -32000, None);
    assert_eq!(error["data"]["code"], "unauthenticated");
    assert_eq!(
        error["message"],
        "missing `Authorization: Bearer <token>` header"
    );
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"opgate\"")
    );
    let mut forged = admin.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let reply = rpc(&s, Some(&forged), &ping).await;
    let error = rpc_error(&reply, 401, -32000, None);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("checksum does not match"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"opgate\", error=\"invalid_token\"")
    );
    let revoked = s.create_key("default", &["*"]).await;
    let revoked_id = s.id_of_key(&revoked).await;
    s.revoke(&admin, &revoked_id).await;
    rpc_error(&rpc(&s, Some(&revoked), &ping).await, 401, -32000, None);

    let from = |origin: &'static str| {
        s.request(Method::POST, "/mcp", Some(&admin))
            .header("origin", origin)
            .json(&ping)
            .send()
    };
    let rebound = from("http://attacker.example:8080").await;
    let error = rpc_error(&rebound, 403, -32000, None);
    assert_eq!(error["data"]["code"], "permission_denied");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("Origin `http://attacker.example:8080`"));
    for allowed in [
        "http://localhost:6274",
        "http://127.0.0.1:8080",
        "https://agents.example.com",
    ] {
        assert_eq!(from(allowed).await.status, 200, "{allowed}");
    }
}

#[tokio::test]
async fn llms_txt_lists_every_operation_and_every_link_answers() {
    let s = TestGateway::start().await;
    let index = s.request(Method::GET, "/llms.txt", None).send().await;
    assert_eq!(index.status, 200, "{}", index.text());
    assert_eq!(
        index.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let text = index.text();
    assert!(text.starts_with("# opgate\n\n> "), "{text}");
    assert!(text.contains("`POST /mcp`"));
    let registry = opgate::describe_registry().unwrap();
    let operation_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("- [") && l.contains("](/docs/") && l.contains('#'))
        .collect();
    assert_eq!(
        operation_lines.len(),
        registry.entries().len(),
        "one line per operation"
    );
    for entry in registry.entries() {
        let id = entry.meta.id;
        let line = operation_lines
            .iter()
            .find(|l| l.starts_with(&format!("- [{id}](/docs/{}.md#", entry.meta.resource())))
            .unwrap_or_else(|| panic!("no line for {id}"));
        assert!(line.contains(entry.meta.summary.trim()), "{line}");
    }
    let mut links = BTreeSet::new();
    for part in text.split("](").skip(1) {
        let link = part.split(')').next().unwrap();
        links.insert(link.split('#').next().unwrap().to_owned());
    }
    assert!(
        links.contains("/docs/index.md") && links.contains("/docs/types.md"),
        "{links:?}"
    );
    for link in &links {
        let reply = s.request(Method::GET, link, None).send().await;
        assert_eq!(reply.status, 200, "{link}");
        if link.ends_with(".md") {
            assert_eq!(
                reply.header("content-type"),
                Some("text/markdown; charset=utf-8")
            );
            // The same pages as the committed reference: the built-ins are all this gateway serves.
            let committed = std::fs::read_to_string(format!(
                "{}/docs/api-reference/{}",
                env!("CARGO_MANIFEST_DIR"),
                link.trim_start_matches("/docs/")
            ))
            .unwrap();
            assert_eq!(reply.text(), committed, "{link}");
        }
    }
    let page = s
        .request(Method::GET, "/docs/api_keys.md", None)
        .send()
        .await
        .text();
    assert!(page.contains("| MCP | tool `api_keys.revoke` at `POST /mcp`, with the optional argument `idempotency_key` |"));
    s.request(Method::GET, "/docs/nope.md", None)
        .send()
        .await
        .error(404, "not_found");
    s.request(Method::GET, "/docs/../Cargo.toml", None)
        .send()
        .await
        .error(404, "not_found");

    let off = TestGateway::start_with(|setup| setup.docs = false).await;
    for path in ["/llms.txt", "/docs/api_keys.md", "/docs/index.md"] {
        off.request(Method::GET, path, None)
            .send()
            .await
            .error(404, "not_found");
    }
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        rpc(&off, Some(off.admin_key()), &ping).await.status,
        200,
        "MCP does not depend on the docs"
    );
}

/// The real binary over a socket: a session as a client runs it, and `opgate mcp` prints a client's config.
#[tokio::test]
async fn a_session_against_the_real_binary() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let post = |message: Value| {
        let rb = s
            .request(Method::POST, "/mcp", Some(&admin))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&message);
        crate::support::send(rb)
    };
    let init = post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}}))
    .await;
    assert_eq!(init.json()["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .status,
        202
    );
    let listed = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await
        .json();
    assert!(listed["result"]["tools"].as_array().unwrap().len() >= 29);
    let revoke = post(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "api_keys.create", "arguments": {"name": "doomed"}}}),
    )
    .await
    .json();
    let doomed = revoke["result"]["structuredContent"]["key_details"]["id"].clone();
    let revoked = post(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "api_keys.revoke", "arguments": {"key_id": doomed, "idempotency_key": "r1"}}}),
    )
    .await
    .json();
    assert_eq!(revoked["result"]["isError"], false, "{revoked}");
    assert!(revoked["result"]["structuredContent"]["revoked_at"].is_string());

    let out = crate::support::opgate()
        .args(["mcp", "--url", &s.url("")])
        .env_remove("OPGATE_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snippet: Value = serde_json::from_slice(&out.stdout).unwrap();
    let server = &snippet["mcpServers"]["opgate"];
    assert_eq!(
        server["url"],
        format!("{}/mcp", s.url("").trim_end_matches('/'))
    );
    assert_eq!(server["headers"]["Authorization"], "Bearer ${OPGATE_TOKEN}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("opg_"),
        "the token is never printed"
    );
}
