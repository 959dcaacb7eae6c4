//! Every error this slice can produce, with its exact status, code and message parts, through both operation
//! paths; the request id rules; the health check; `Cache-Control: no-store` on every kind of response; and
//! that bad requests never change stored data. In process ([`TestGateway`]).

use crate::support::*;
use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

const CREATE: &str = "api_keys.create";
const LIST: &str = "api_keys.list";
const REVOKE: &str = "api_keys.revoke";
const MIB: usize = 1024 * 1024;

/// The pieces of a chunked body (no `Content-Length`) of `len` spaces, 64 KiB each.
fn chunks(len: usize) -> Vec<Bytes> {
    (0..len)
        .step_by(64 * 1024)
        .map(|start| Bytes::from(vec![b' '; (len - start).min(64 * 1024)]))
        .collect()
}

/// POSTs a chunked body of `len` spaces as JSON.
async fn post_chunked(s: &TestGateway, path: &str, token: &str, len: usize) -> Reply {
    s.request(Method::POST, path, Some(token))
        .header("content-type", "application/json")
        .body_chunks(chunks(len))
        .send()
        .await
}

/// A JSON object of exactly `len` bytes: `prefix`, padded with spaces, then `}`.
fn padded_json(prefix: &str, len: usize) -> Vec<u8> {
    let mut body = prefix.as_bytes().to_vec();
    body.resize(len - 1, b' ');
    body.push(b'}');
    body
}

#[tokio::test]
async fn invalid_argument_names_the_field_through_both_paths() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let long_name = "x".repeat(129);
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (CREATE, json!([]), vec!["the request body must be a JSON object"]),
        (CREATE, json!("x"), vec!["the request body must be a JSON object"]),
        (CREATE, json!(42), vec!["must be a JSON object"]),
        (CREATE, json!(null), vec!["must be a JSON object"]),
        (CREATE, json!({}), vec!["missing field `name`"]),
        (CREATE, json!({ "name": "n", "bogus": 1 }), vec!["unknown field `bogus`"]),
        (CREATE, json!({ "name": 5 }), vec!["name: invalid type: integer `5`, expected a string"]),
        (CREATE, json!({ "name": "n", "rate_limit": "fast" }), vec!["rate_limit: invalid type"]),
        (CREATE, json!({ "name": "n", "permissions": "api_keys:read" }), vec!["permissions: invalid type"]),
        (CREATE, json!({ "name": "n", "permissions": ["api_keys:read", 5] }), vec!["permissions[1]: invalid type"]),
        (CREATE, json!({ "name": "n", "allowed_ips": [true] }), vec!["allowed_ips[0]: invalid type"]),
        (CREATE, json!({ "name": "" }), vec!["name: ", "lower than 1"]),
        (CREATE, json!({ "name": long_name }), vec!["name: ", "greater than 128"]),
        (CREATE, json!({ "name": "n", "expires_in_days": 0 }), vec!["expires_in_days: ", "lower than 1"]),
        (CREATE, json!({ "name": "n", "expires_in_days": 3651 }), vec!["expires_in_days: ", "greater than 3650"]),
        (CREATE, json!({ "name": "n", "expires_in_days": -1 }), vec!["expires_in_days: ", "-1"]),
        (CREATE, json!({ "name": "n", "rate_limit": 0 }), vec!["rate_limit: "]),
        (CREATE, json!({ "name": "n", "permissions": ["Api:read"] }), vec!["permissions[0]: ", "`Api:read` is not a scope"]),
        (CREATE, json!({ "name": "n", "permissions": ["api_keys:read", "api_keys"] }), vec!["permissions[1]: ", "`api_keys` is not a scope"]),
        (CREATE, json!({ "name": "n", "permissions": ["*:reed"] }), vec!["permissions[0]: ", "not a scope"]),
        (CREATE, json!({ "name": "n", "allowed_ips": ["10.0.0.1", "not-an-ip"] }), vec!["allowed_ips[1]: ", "`not-an-ip` is not an IP address or CIDR range"]),
        (CREATE, json!({ "name": "n", "allowed_ips": ["10.0.0.0/33"] }), vec!["allowed_ips[0]: ", "`10.0.0.0/33`"]),
        (LIST, json!({ "limit": 0 }), vec!["limit: ", "lower than 1"]),
        (LIST, json!({ "limit": "ten" }), vec!["limit: invalid type"]),
        (LIST, json!({ "include_revoked": "yes" }), vec!["include_revoked: invalid type"]),
        (LIST, json!({ "cursor": "x" }), vec!["unknown field `cursor`"]),
        (LIST, json!([]), vec!["must be a JSON object"]),
        (REVOKE, json!({}), vec!["missing field `key_id`"]),
        (REVOKE, json!({ "key_id": 7 }), vec!["key_id: invalid type"]),
        (REVOKE, json!({ "key_id": "" }), vec!["key_id: "]),
        (REVOKE, json!({ "key_id": "k", "force": true }), vec!["unknown field `force`"]),
    ];
    for (op, body, parts) in &cases {
        for path in both_paths(op) {
            let reply = s.post(&path, Some(&admin), body).await;
            let message = reply.error(400, "invalid_argument");
            for part in parts {
                assert!(
                    message.contains(part),
                    "{path} {body}: {message:?} lacks {part:?}"
                );
            }
        }
    }
    // Bodies that are not JSON at all.
    for raw in [
        "{\"name\":",
        "{\"name\": \"n\"} trailing",
        "not json",
        "{'name': 'n'}",
    ] {
        for path in both_paths(CREATE) {
            let reply = s
                .post_raw(&path, Some(&admin), Some("application/json"), raw)
                .await;
            reply.error_with(400, "invalid_argument", &["the request body"]);
        }
    }
    s.post_raw(
        &op_path(CREATE),
        Some(&admin),
        Some("application/json"),
        "{\"name\":",
    )
    .await
    .error_with(400, "invalid_argument", &["not valid JSON"]);
}

#[tokio::test]
async fn an_empty_body_means_an_empty_object() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for (ct, body) in [
        (None, ""),
        (Some("application/json"), ""),
        // `curl -d ''` sends a form content type with its empty body.
        (Some("application/x-www-form-urlencoded"), ""),
    ] {
        let reply = s.post_raw(&op_path(LIST), Some(&admin), ct, body).await;
        assert_eq!(reply.status, 200, "{ct:?} {body:?}: {}", reply.text());
        assert_eq!(reply.lines().len(), 1);
    }
    // Only a body with nothing in it: a blank one is not JSON.
    s.post_raw(
        &op_path(LIST),
        Some(&admin),
        Some("application/json"),
        "  \n",
    )
    .await
    .error_with(400, "invalid_argument", &["must be a JSON object"]);
    // For an operation with a required field, `{}` is missing it.
    s.post_raw(&op_path(CREATE), Some(&admin), None, "")
        .await
        .error_with(400, "invalid_argument", &["missing field `name`"]);
}

#[tokio::test]
async fn unauthenticated_for_every_kind_of_bad_token() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();

    // A well-formed key with a valid checksum, minted under another server secret.
    let elsewhere = TestGateway::start().await;
    let foreign = elsewhere.create_key("default", &["*"]).await;

    // Flip one character of the random part: the checksum no longer matches.
    let mut forged = admin.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();

    let revoked = {
        let out = s.create(&admin, json!({ "name": "to revoke" })).await;
        s.revoke(&admin, &id_of(&out["key_details"])).await;
        out["key"].as_str().unwrap().to_owned()
    };

    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing `Authorization: Bearer <token>` header"),
        (Some(format!("Basic {admin}")), "must be `Bearer <token>`"),
        (Some(format!("Token {admin}")), "must be `Bearer <token>`"),
        (Some(admin.clone()), "must be `Bearer <token>`"),
        (Some("Bearer".into()), "must be `Bearer <token>`"),
        (Some("Bearer ".into()), "must be `Bearer <token>`"),
        // Neither `opg_...` nor a JWT: refused by shape, before either authenticator.
        (
            bearer("garbage"),
            "the token is neither an API key nor a session token",
        ),
        (
            bearer(&admin[..admin.len() - 1]),
            "the API key is malformed",
        ),
        (bearer(&format!("{admin}x")), "the API key is malformed"),
        (
            bearer(&admin.replacen("opg_", "sk__", 1)),
            "the token is neither an API key nor a session token",
        ),
        (bearer(&forged), "checksum does not match"),
        (bearer(&foreign), "the API key is not valid"),
        (bearer(&revoked), "the API key has been revoked"),
    ];
    for (op, body) in [
        (CREATE, json!({ "name": "n" })),
        (LIST, json!({})),
        (
            REVOKE,
            json!({ "key_id": "key_00000000000000000000000000" }),
        ),
    ] {
        for path in both_paths(op) {
            for (header, part) in &cases {
                let mut rb = s.request(Method::POST, &path, None).json(&body);
                if let Some(h) = header {
                    rb = rb.header("authorization", h);
                }
                let reply = rb.send().await;
                let message = reply.error(401, "unauthenticated");
                assert!(
                    message.contains(part),
                    "{path} {header:?}: {message:?} lacks {part:?}"
                );
                assert!(
                    !message.contains(&admin),
                    "the message never echoes the token"
                );
            }
        }
    }
    // The scheme is case-insensitive and the admin key itself is fine.
    let reply = s
        .request(Method::POST, &op_path(LIST), None)
        .header("authorization", format!("bearer {admin}"))
        .send()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Nothing was created by any of the refused calls.
    assert_eq!(
        s.list(&admin, json!({ "include_revoked": true }))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn permission_denied_for_missing_scopes_and_escalation() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let reader = s.create_key("default", &["api_keys:read"]).await;
    let writer = s.create_key("default", &["api_keys:write"]).await;
    let other = s.create_key("default", &["audit:read"]).await;

    for path in both_paths(CREATE) {
        s.post(&path, Some(&reader), &json!({ "name": "n" }))
            .await
            .error_with(
                403,
                "permission_denied",
                &["api_keys.create", "`api_keys:write`"],
            );
    }
    for path in both_paths(REVOKE) {
        s.post(
            &path,
            Some(&reader),
            &json!({ "key_id": "key_00000000000000000000000000" }),
        )
        .await
        .error_with(
            403,
            "permission_denied",
            &["api_keys.revoke", "`api_keys:write`"],
        );
    }
    for path in both_paths(LIST) {
        s.post(&path, Some(&other), &json!({})).await.error_with(
            403,
            "permission_denied",
            &["api_keys.list", "`api_keys:read`"],
        );
        // The reader may list, and `write` implies `read`.
        for ok in [&reader, &writer] {
            let reply = s.post(&path, Some(ok), &json!({})).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    // A scope check comes before the body is looked at.
    s.post_raw(
        &op_path(CREATE),
        Some(&reader),
        Some("application/json"),
        "not json",
    )
    .await
    .error(403, "permission_denied");

    // A grant never exceeds the granter's own permissions.
    for grant in [
        json!(["*"]),
        json!(["audit:read"]),
        json!(["api_keys:*"]),
        json!(["api_keys:read", "audit:read"]),
    ] {
        for path in both_paths(CREATE) {
            let excess = grant.as_array().unwrap().last().unwrap().as_str().unwrap();
            s.post(
                &path,
                Some(&writer),
                &json!({ "name": "n", "permissions": grant }),
            )
            .await
            .error_with(
                403,
                "permission_denied",
                &[
                    "permissions",
                    &format!("`{excess}`"),
                    "exceeds the caller's own permissions",
                ],
            );
        }
    }
    // What it holds, or less, it may grant.
    for grant in [json!(["api_keys:write"]), json!(["api_keys:read"])] {
        let out = s
            .create(&writer, json!({ "name": "ok", "permissions": grant }))
            .await;
        assert_eq!(out["key_details"]["permissions"], grant);
    }
    // The admin may grant anything.
    let out = s
        .create(
            &admin,
            json!({ "name": "wide", "permissions": ["*", "audit:read"] }),
        )
        .await;
    assert_eq!(
        out["key_details"]["permissions"],
        json!(["*", "audit:read"])
    );
    // Admin, three CLI keys and the three granted above: nothing from the refused calls.
    assert_eq!(s.list(&admin, json!({})).await.len(), 7);
}

#[tokio::test]
async fn not_found_for_unknown_operations_paths_and_objects() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for path in [
        "/v1/op/nope.nothing",
        "/v1/nope/nothing",
        "/v1/op/api_keys.destroy",
        "/v1/api_keys/destroy",
    ] {
        let id = path
            .trim_start_matches("/v1/op/")
            .trim_start_matches("/v1/")
            .replace('/', ".");
        s.post(path, Some(&admin), &json!({})).await.error_with(
            404,
            "not_found",
            &[&format!("no operation `{id}`")],
        );
    }
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/op/",
        "/v2/op/api_keys.list",
        "/v1/api_keys/list/extra",
        "/v1/op/api_keys.list/x",
        "/healthz/x",
    ] {
        s.post(path, Some(&admin), &json!({}))
            .await
            .error_with(404, "not_found", &["no route"]);
    }
    // Unknown objects.
    for path in both_paths(REVOKE) {
        s.post(
            &path,
            Some(&admin),
            &json!({ "key_id": "key_00000000000000000000000000" }),
        )
        .await
        .error_with(
            404,
            "not_found",
            &["key_id", "`key_00000000000000000000000000`"],
        );
    }
    for path in both_paths(LIST) {
        s.post(
            &path,
            Some(&admin),
            &json!({ "after_id": "key_00000000000000000000000000" }),
        )
        .await
        .error_with(
            404,
            "not_found",
            &["after_id", "`key_00000000000000000000000000`"],
        );
    }
}

#[tokio::test]
async fn method_not_allowed_on_operation_paths() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in [
            op_path(LIST),
            alias_path(LIST),
            op_path(CREATE),
            alias_path(REVOKE),
            "/v1/op/nope.nothing".to_owned(),
        ] {
            let reply = s.request(method.clone(), &path, Some(&admin)).send().await;
            reply.error_with(405, "method_not_allowed", &["POST"]);
            assert_eq!(reply.header("allow"), Some("POST"), "{method} {path}");
        }
    }
    let reply = s.post("/healthz", None, &json!({})).await;
    reply.error(405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn payload_too_large_with_and_without_content_length() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for path in both_paths(LIST) {
        // Exactly the limit is fine.
        let reply = s
            .post_raw(
                &path,
                Some(&admin),
                Some("application/json"),
                padded_json("{", MIB),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());

        for body in [padded_json("{", MIB + 1), padded_json("{", 3 * MIB)] {
            let reply = s
                .post_raw(&path, Some(&admin), Some("application/json"), body)
                .await;
            reply.error_with(413, "payload_too_large", &["1048576 bytes"]);
        }
        for len in [MIB + 1, 3 * MIB] {
            let reply = post_chunked(&s, &path, &admin, len).await;
            reply.error_with(413, "payload_too_large", &["1048576 bytes"]);
            assert_eq!(
                reply.header("connection"),
                Some("close"),
                "a 413 always closes the connection"
            );
        }
        // Exactly the limit, chunked, is fine too.
        let reply = s
            .request(Method::POST, &path, Some(&admin))
            .header("content-type", "application/json")
            .body_chunks(vec![Bytes::from(padded_json("{", MIB))])
            .send()
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    s.call_ok(LIST, &admin, json!({})).await;
}

#[tokio::test]
async fn unsupported_media_type_for_non_json_bodies() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for path in both_paths(CREATE) {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "multipart/form-data",
        ] {
            s.post_raw(&path, Some(&admin), Some(ct), r#"{"name": "n"}"#)
                .await
                .error_with(415, "unsupported_media_type", &["application/json", ct]);
        }
    }
    // Parameters and case do not matter.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let reply = s
            .post_raw(&op_path(CREATE), Some(&admin), Some(ct), r#"{"name": "n"}"#)
            .await;
        assert_eq!(reply.status, 200, "{ct}: {}", reply.text());
    }
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_replaced_when_not() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let max = "r".repeat(128);
    for sane in ["abc", "client-req_1.2:3", max.as_str()] {
        // On a success, an error, an unknown path and the health check alike.
        for rb in [
            s.request(Method::POST, &op_path(LIST), Some(&admin)),
            s.request(Method::POST, &op_path(LIST), None),
            s.request(Method::POST, "/nowhere", None),
            s.request(Method::GET, "/healthz", None),
        ] {
            let reply = rb.header("x-request-id", sane).send().await;
            assert_eq!(reply.request_id(), sane);
            if reply.status != 200 {
                assert_eq!(reply.json()["error"]["request_id"], sane);
            }
        }
    }
    let too_long = "r".repeat(129);
    let mut generated = Vec::new();
    for insane in [
        "",
        "has space",
        "semi;colon",
        "slash/",
        "quote\"",
        too_long.as_str(),
        &"x".repeat(200),
    ] {
        let reply = s
            .request(Method::POST, &op_path(LIST), None)
            .header("x-request-id", insane)
            .send()
            .await;
        reply.error(401, "unauthenticated");
        let rid = reply.request_id().to_owned();
        assert_ne!(rid, insane);
        assert!(rid.starts_with("req_"), "{rid}");
        generated.push(rid);
    }
    // Without one, every response gets a fresh id.
    for _ in 0..3 {
        generated.push(
            s.request(Method::GET, "/healthz", None)
                .send()
                .await
                .request_id()
                .to_owned(),
        );
    }
    let unique: std::collections::HashSet<_> = generated.iter().collect();
    assert_eq!(unique.len(), generated.len(), "generated ids are unique");
}

#[tokio::test]
async fn healthz_answers_without_a_token() {
    let s = TestGateway::start().await;
    let reply = s.request(Method::GET, "/healthz", None).send().await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({ "status": "ok" }));
}

#[tokio::test]
async fn bad_requests_never_change_stored_keys() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let mut before = s.list(&admin, json!({})).await;
    for i in 0..3 {
        let out = s.create(&admin, json!({ "name": format!("k{i}") })).await;
        before.push(out["key_details"].clone());
    }
    let reader = s.create_key("default", &["api_keys:read"]).await;
    before.push(s.list(&admin, json!({})).await.pop().unwrap());

    let huge_create = padded_json(r#"{"name": "huge", "description": "x""#, 2 * MIB);
    let path = op_path(CREATE);
    let bad: Vec<Reply> = vec![
        s.post(&path, Some(&admin), &json!({ "name": "u", "org_id": "b" }))
            .await,
        s.post(
            &path,
            Some(&admin),
            &json!({ "name": "u", "id": "key_mine", "key": "opg_x" }),
        )
        .await,
        s.post(
            &path,
            Some(&admin),
            &json!({ "name": "u", "permissions": ["*"], "revoked_at": null }),
        )
        .await,
        s.post(&path, Some(&admin), &json!({ "name": ["u"] })).await,
        s.post(
            &path,
            Some(&admin),
            &json!({ "name": "u", "expires_in_days": 99999 }),
        )
        .await,
        s.post_raw(
            &path,
            Some(&admin),
            Some("application/json"),
            huge_create.clone(),
        )
        .await,
        post_chunked(&s, &path, &admin, 2 * MIB).await,
        s.post_raw(&path, Some(&admin), Some("text/plain"), r#"{"name": "t"}"#)
            .await,
        s.post_raw(
            &path,
            Some(&admin),
            Some("application/json"),
            r#"{"name": "t""#,
        )
        .await,
        s.post(&path, Some(&reader), &json!({ "name": "r" })).await,
        s.post(
            &alias_path(REVOKE),
            Some(&admin),
            &json!({ "key_id": id_of(&before[1]), "x": 1 }),
        )
        .await,
        s.post(
            &alias_path(REVOKE),
            Some(&admin),
            &json!({ "key_id": [id_of(&before[1])] }),
        )
        .await,
    ];
    let statuses: Vec<u16> = bad.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [400, 400, 400, 400, 400, 413, 413, 415, 400, 403, 400, 400]
    );

    let stable_list = |lines: Vec<Value>| lines.iter().map(stable).collect::<Vec<_>>();
    let before = stable_list(before);
    let after = stable_list(s.list(&admin, json!({ "include_revoked": true })).await);
    assert_eq!(
        after, before,
        "exactly the keys that were created, unchanged"
    );
    s.restart().await;
    let after = stable_list(s.list(&admin, json!({ "include_revoked": true })).await);
    assert_eq!(after, before, "and so after a restart");
}

#[tokio::test]
async fn every_kind_of_response_says_cache_control_no_store() {
    let s = TestGateway::start_with(|setup| setup.config.max_body_bytes = 1024).await;
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "cached?" })).await["key_details"]);
    let update = || {
        s.request(Method::POST, &op_path("api_keys.update"), Some(&admin))
            .header("idempotency-key", "no-store")
            .json(&json!({ "key_id": id, "name": "renamed" }))
    };
    let first = update().send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let replay = update().send().await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let limited = s
        .create_key_with("default", &["*"], |k| k.rate_limit = Some(1))
        .await;
    s.call_ok("auth.whoami", &limited, json!({})).await;

    let kinds: Vec<(&str, Reply, &str)> = vec![
        (
            "JSON",
            s.post(&op_path("auth.whoami"), Some(&admin), &json!({}))
                .await,
            "application/json",
        ),
        (
            "NDJSON",
            s.post(&op_path(LIST), Some(&admin), &json!({})).await,
            "application/x-ndjson",
        ),
        ("replay", replay, "application/json"),
        (
            "401",
            s.post(&op_path(LIST), None, &json!({})).await,
            "application/json",
        ),
        (
            "404 route",
            s.post("/nowhere", Some(&admin), &json!({})).await,
            "application/json",
        ),
        (
            "405",
            s.request(Method::GET, &op_path(LIST), Some(&admin))
                .send()
                .await,
            "application/json",
        ),
        (
            "413",
            s.post_raw(
                &op_path(LIST),
                Some(&admin),
                Some("application/json"),
                padded_json("{", 2048),
            )
            .await,
            "application/json",
        ),
        (
            "429",
            s.post(&op_path("auth.whoami"), Some(&limited), &json!({}))
                .await,
            "application/json",
        ),
        (
            "healthz",
            s.request(Method::GET, "/healthz", None).send().await,
            "application/json",
        ),
        (
            "readyz",
            s.request(Method::GET, "/readyz", None).send().await,
            "application/json",
        ),
    ];
    for (kind, reply, content_type) in &kinds {
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{kind}: {} {}",
            reply.status,
            reply.text()
        );
        assert_eq!(reply.header("content-type"), Some(*content_type), "{kind}");
    }
    let statuses: Vec<u16> = kinds.iter().map(|(_, r, _)| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 401, 404, 405, 413, 429, 200, 200],
        "each kind is what its name says"
    );
}
