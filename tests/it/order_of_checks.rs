//! The contract's order of checks, stage by stage, in process: route (404 / 405) → authentication (401; 403
//! for a disallowed address) → rate limit (429) → scope (403) → `Idempotency-Key` rules (400, 409) → content
//! type (415) → size (413) → decoding and validation (400) → stored idempotent response (replay or 422) → the
//! operation's own errors (403 / 404 / 409).
//!
//! For each pair of adjacent stages, one request fails both and must get the earlier stage's exact error; the
//! same request failing only the later stage shows that stage really refuses it (so no pair passes because
//! its second failure was not one).

use std::time::Duration;

use crate::support::{op_path, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

const GET: &str = "api_keys.get";
const CREATE: &str = "api_keys.create";
const UPDATE: &str = "api_keys.update";
const ABSENT: &str = "key_00000000000000000000000000";
const LIMIT: usize = 1024;

async fn gateway() -> TestGateway {
    TestGateway::start_with(|setup| setup.config.max_body_bytes = LIMIT).await
}

/// A POST of `op` with `token`, an optional `Idempotency-Key`, a content type and a raw body.
async fn call(
    s: &TestGateway,
    op: &str,
    token: &str,
    key: Option<&str>,
    content_type: &str,
    body: impl Into<bytes::Bytes>,
) -> Reply {
    let mut req = s
        .request(Method::POST, &op_path(op), Some(token))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A JSON object of `len` bytes (over the test limit when `len > LIMIT`).
fn big_json(len: usize) -> Vec<u8> {
    let mut body = br#"{"name": "x""#.to_vec();
    body.resize(len - 1, b' ');
    body.push(b'}');
    body
}

#[tokio::test]
async fn route_before_authentication() {
    let s = gateway().await;
    // Unknown operation and unknown path: 404 whatever the token.
    for token in [Some("garbage"), Some("opg_x"), None] {
        s.request(Method::POST, "/v1/op/nope.nothing", token)
            .send()
            .await
            .error_with(404, "not_found", &["no operation `nope.nothing`"]);
        s.request(Method::POST, "/elsewhere", token)
            .send()
            .await
            .error_with(404, "not_found", &["no route"]);
        // A known operation with the wrong method: 405 before the token is looked at.
        let reply = s.request(Method::GET, &op_path(GET), token).send().await;
        reply.error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("POST"));
    }
    // Alone, the bad token is a 401.
    s.request(Method::POST, &op_path(GET), Some("garbage"))
        .send()
        .await
        .error(401, "unauthenticated");
}

#[tokio::test]
async fn authentication_before_the_rate_limit() {
    let s = gateway().await;
    // A limited key fenced to 10.0.0.0/8 spends its one request from inside the fence ...
    let fenced = s
        .create_key_with("default", &["*"], |k| {
            k.rate_limit = Some(1);
            k.allowed_ips = vec!["10.0.0.0/8".into()];
        })
        .await;
    let inside = "10.0.0.1".parse().unwrap();
    let whoami = |ip| {
        s.request(Method::POST, &op_path("auth.whoami"), Some(&fenced))
            .from(ip)
            .send()
    };
    assert_eq!(whoami(inside).await.status, 200);
    whoami(inside).await.error(429, "rate_limited");
    // ... and from outside it is the address that is refused, not the spent limit.
    whoami("127.0.0.1".parse().unwrap())
        .await
        .error_with(403, "permission_denied", &["127.0.0.1"]);
    // A revoked key whose limit is spent: 401.
    let limited = s
        .create_key_with("default", &["*"], |k| k.rate_limit = Some(1))
        .await;
    let id = s.id_of_key(&limited).await;
    s.post(&op_path("auth.whoami"), Some(&limited), &json!({}))
        .await
        .error(429, "rate_limited");
    s.revoke(s.admin_key(), &id).await;
    s.post(&op_path("auth.whoami"), Some(&limited), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);
}

#[tokio::test]
async fn authentication_before_scope() {
    let s = gateway().await;
    let body = json_body(&json!({ "name": "x" }));
    // A bad token on an operation the (any) caller might lack the scope for: 401.
    for token in ["garbage", "opg_short", "a.b.c"] {
        call(&s, CREATE, token, None, "application/json", body.clone())
            .await
            .error(401, "unauthenticated");
    }
    // Alone, the missing scope is a 403.
    let reader = s.create_key("default", &["api_keys:read"]).await;
    call(&s, CREATE, &reader, None, "application/json", body)
        .await
        .error_with(403, "permission_denied", &["api_keys:write"]);
}

#[tokio::test]
async fn rate_limit_before_scope() {
    let s = gateway().await;
    let reader = s
        .create_key_with("default", &["api_keys:read"], |k| k.rate_limit = Some(1))
        .await;
    let body = json_body(&json!({ "name": "x" }));
    // Alone, the missing scope is a 403 (which spends the limit: refused requests count).
    call(&s, CREATE, &reader, None, "application/json", body.clone())
        .await
        .error(403, "permission_denied");
    // Both: 429.
    let reply = call(&s, CREATE, &reader, None, "application/json", body).await;
    reply.error(429, "rate_limited");
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test]
async fn scope_before_idempotency_key_rules() {
    let s = gateway().await;
    let reader = s.create_key("default", &["api_keys:read"]).await;
    let update = json_body(&json!({ "key_id": ABSENT, "name": "x" }));
    let too_long = "k".repeat(256);
    // A malformed key on an operation the caller may not call: 403.
    call(
        &s,
        UPDATE,
        &reader,
        Some(&too_long),
        "application/json",
        update.clone(),
    )
    .await
    .error_with(403, "permission_denied", &["api_keys:write"]);
    // Any key on an export operation the caller may not call: 403 too.
    call(
        &s,
        CREATE,
        &reader,
        Some("k"),
        "application/json",
        json_body(&json!({ "name": "x" })),
    )
    .await
    .error(403, "permission_denied");
    // Alone, each key is refused.
    let admin = s.admin_key();
    call(
        &s,
        UPDATE,
        admin,
        Some(&too_long),
        "application/json",
        update,
    )
    .await
    .error_with(400, "invalid_argument", &["Idempotency-Key"]);
    call(
        &s,
        CREATE,
        admin,
        Some("k"),
        "application/json",
        json_body(&json!({ "name": "x" })),
    )
    .await
    .error_with(400, "invalid_argument", &["Idempotency-Key"]);
}

#[tokio::test]
async fn idempotency_key_rules_before_the_content_type() {
    let s = gateway().await;
    let admin = s.admin_key().to_owned();
    let form = "name=x";
    // An Idempotency-Key on an export operation, with a form body: 400 for the key, not 415.
    call(
        &s,
        CREATE,
        &admin,
        Some("k"),
        "application/x-www-form-urlencoded",
        form,
    )
    .await
    .error_with(400, "invalid_argument", &["Idempotency-Key", "secret"]);
    // A malformed key on a write operation, with a form body: 400 for the key.
    call(&s, UPDATE, &admin, Some("has space"), "text/plain", form)
        .await
        .error_with(400, "invalid_argument", &["Idempotency-Key"]);
    // A key held by a request still uploading, with a form body: 409, not 415.
    let id = s.id_of_key(&admin).await;
    let (first, upload) = s
        .request(Method::POST, &op_path(UPDATE), Some(&admin))
        .header("content-type", "application/json")
        .header("idempotency-key", "held")
        .body_stream();
    let first = tokio::spawn(first.send());
    upload.send(&b"{"[..]).await;
    call(&s, UPDATE, &admin, Some("held"), "text/plain", form)
        .await
        .error_with(409, "conflict", &["in progress"]);
    upload
        .send(format!(r#""key_id": "{id}", "name": "admin"}}"#))
        .await;
    drop(upload);
    assert_eq!(first.await.unwrap().status, 200);
    // Alone, the form body is a 415.
    call(&s, UPDATE, &admin, Some("free"), "text/plain", form)
        .await
        .error(415, "unsupported_media_type");
}

#[tokio::test]
async fn content_type_before_size() {
    let s = gateway().await;
    let admin = s.admin_key();
    call(&s, CREATE, admin, None, "text/plain", big_json(LIMIT + 1))
        .await
        .error(415, "unsupported_media_type");
    // Chunked, without a Content-Length, too.
    s.request(Method::POST, &op_path(CREATE), Some(admin))
        .header("content-type", "text/plain")
        .body_chunks(vec![big_json(LIMIT + 1).into()])
        .send()
        .await
        .error(415, "unsupported_media_type");
    // Alone, the size is a 413.
    call(
        &s,
        CREATE,
        admin,
        None,
        "application/json",
        big_json(LIMIT + 1),
    )
    .await
    .error_with(413, "payload_too_large", &["1024 bytes"]);
}

#[tokio::test]
async fn size_before_decoding() {
    let s = gateway().await;
    let admin = s.admin_key();
    let mut not_json = vec![b'x'; LIMIT + 1];
    not_json[0] = b'{';
    call(
        &s,
        CREATE,
        admin,
        None,
        "application/json",
        not_json.clone(),
    )
    .await
    .error(413, "payload_too_large");
    s.request(Method::POST, &op_path(CREATE), Some(admin))
        .header("content-type", "application/json")
        .body_chunks(vec![
            not_json[..600].to_vec().into(),
            not_json[600..].to_vec().into(),
        ])
        .send()
        .await
        .error(413, "payload_too_large");
    // Alone, the bad JSON is a 400.
    call(
        &s,
        CREATE,
        admin,
        None,
        "application/json",
        not_json[..LIMIT].to_vec(),
    )
    .await
    .error_with(400, "invalid_argument", &["not valid JSON"]);
}

#[tokio::test]
async fn decoding_before_the_stored_response() {
    let s = gateway().await;
    let admin = s.admin_key().to_owned();
    let id = s
        .create(
            &admin,
            json!({ "name": "target", "permissions": ["api_keys:read"] }),
        )
        .await["key_details"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = json_body(&json!({ "key_id": id, "name": "first" }));
    let first = call(
        &s,
        UPDATE,
        &admin,
        Some("k"),
        "application/json",
        stored.clone(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    // A body that does not decode, under a key whose stored request differs: 400, not 422.
    for (body, part) in [
        (json!({ "key_id": 5 }), "key_id: invalid type"),
        (json!({ "key_id": id, "bogus": 1 }), "unknown field `bogus`"),
        (json!({ "key_id": id, "name": "" }), "name: "),
        (json!({ "key_id": "key_1" }), "key_id: must be an id"),
        (json!([]), "must be a JSON object"),
    ] {
        call(
            &s,
            UPDATE,
            &admin,
            Some("k"),
            "application/json",
            json_body(&body),
        )
        .await
        .error_with(400, "invalid_argument", &[part]);
    }
    call(
        &s,
        UPDATE,
        &admin,
        Some("k"),
        "application/json",
        "{\"key_id\":",
    )
    .await
    .error_with(400, "invalid_argument", &["not valid JSON"]);
    // Alone, the other body under the stored key is a 422; the stored one a replay.
    call(
        &s,
        UPDATE,
        &admin,
        Some("k"),
        "application/json",
        json_body(&json!({ "key_id": id, "name": "second" })),
    )
    .await
    .error(422, "idempotency_mismatch");
    let replay = call(&s, UPDATE, &admin, Some("k"), "application/json", stored).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
}

#[tokio::test]
async fn the_stored_response_before_the_operations_own_errors() {
    let s = gateway().await;
    let admin = s.admin_key().to_owned();
    let id = s
        .create(
            &admin,
            json!({ "name": "target", "permissions": ["api_keys:read"] }),
        )
        .await["key_details"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = json_body(&json!({ "key_id": id, "name": "first" }));
    assert_eq!(
        call(
            &s,
            UPDATE,
            &admin,
            Some("k"),
            "application/json",
            stored.clone()
        )
        .await
        .status,
        200
    );
    // A body naming an absent key under the stored key: 422, not the operation's 404.
    let absent = json_body(&json!({ "key_id": ABSENT, "name": "first" }));
    call(
        &s,
        UPDATE,
        &admin,
        Some("k"),
        "application/json",
        absent.clone(),
    )
    .await
    .error(422, "idempotency_mismatch");
    // ... and a grant the caller may not make (the operation's 403): 422 too.
    let writer = s
        .create_key("default", &["api_keys:read", "api_keys:write"])
        .await;
    let admin_id = s.id_of_key(&admin).await;
    let mine = json_body(&json!({ "key_id": id, "name": "w" }));
    assert_eq!(
        call(&s, UPDATE, &writer, Some("w"), "application/json", mine)
            .await
            .status,
        200
    );
    let beyond = json_body(&json!({ "key_id": admin_id, "name": "pwned" }));
    call(
        &s,
        UPDATE,
        &writer,
        Some("w"),
        "application/json",
        beyond.clone(),
    )
    .await
    .error(422, "idempotency_mismatch");
    // Alone, each is the operation's own error.
    call(&s, UPDATE, &admin, Some("k2"), "application/json", absent)
        .await
        .error_with(404, "not_found", &[ABSENT]);
    call(&s, UPDATE, &writer, Some("w2"), "application/json", beyond)
        .await
        .error(403, "permission_denied");
    // The stored response stands whatever became of what it named: the key is revoked meanwhile and 23 hours
    // pass; the retry is still the stored 200, showing the key as it was then.
    s.revoke(&admin, &id).await;
    s.advance(Duration::from_secs(23 * 3600));
    let replay = call(&s, UPDATE, &admin, Some("k"), "application/json", stored).await;
    assert_eq!(
        (replay.status, replay.header("idempotent-replayed")),
        (200, Some("true"))
    );
    assert_eq!(replay.json()["status"], "active");
    assert_eq!(s.get(&admin, &id).await["status"], "revoked");
}

#[tokio::test]
async fn decoding_before_the_operations_own_errors() {
    let s = gateway().await;
    let admin = s.admin_key();
    // An absent key named in a body that does not validate: 400, not 404.
    call(
        &s,
        GET,
        admin,
        None,
        "application/json",
        json_body(&json!({ "key_id": ABSENT, "extra": true })),
    )
    .await
    .error_with(400, "invalid_argument", &["unknown field `extra`"]);
    call(
        &s,
        UPDATE,
        admin,
        None,
        "application/json",
        json_body(&json!({ "key_id": ABSENT, "rate_limit": 0 })),
    )
    .await
    .error_with(400, "invalid_argument", &["rate_limit"]);
    // Alone, the absent key is a 404.
    call(
        &s,
        GET,
        admin,
        None,
        "application/json",
        json_body(&json!({ "key_id": ABSENT })),
    )
    .await
    .error(404, "not_found");
}
