//! The dispatcher's guard rails, against the real server: per-key rate limits (GCRA, 429 with the RateLimit
//! headers), the audit log of state-changing calls (`audit.list`), and idempotent retries.

use std::time::Duration;

use crate::support::{id_of, op_path, send, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header_u64(reply: &crate::support::Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("{name} header missing: {}", reply.text()))
        .parse()
        .unwrap()
}

/// A key of the admin's org with the given permissions and rate limit, created over the API.
async fn key_with_limit(
    s: &TestServer,
    perms: &[&str],
    rate_limit: Option<u32>,
) -> (String, String) {
    let mut body = json!({ "name": "limited", "permissions": perms });
    if let Some(limit) = rate_limit {
        body["rate_limit"] = json!(limit);
    }
    let out = s.create(s.admin_key(), body).await;
    (
        out["key"].as_str().unwrap().to_owned(),
        id_of(&out["key_details"]),
    )
}

#[tokio::test]
async fn a_limited_key_gets_429_with_headers_and_recovers() {
    let s = TestServer::start();
    let (key, id) = key_with_limit(&s, &["api_keys:read"], Some(60)).await;
    let get = json!({ "key_id": id });
    // 60 per minute: a burst of 60, each success announcing what is left.
    for i in 0..60u64 {
        let r = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(header_u64(&r, "ratelimit-limit"), 60);
        assert_eq!(header_u64(&r, "ratelimit-remaining"), 59 - i);
        assert!(header_u64(&r, "ratelimit-reset") <= 60);
        assert!(r.header("retry-after").is_none());
    }
    let refused = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
    refused.error_with(429, "rate_limited", &["60 requests per minute"]);
    assert_eq!(header_u64(&refused, "retry-after"), 1);
    assert_eq!(header_u64(&refused, "ratelimit-limit"), 60);
    assert_eq!(header_u64(&refused, "ratelimit-remaining"), 0);
    assert!(header_u64(&refused, "ratelimit-reset") >= 59);
    // Refusals do not push the limit further out: one interval later one request succeeds again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let recovered = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
    assert_eq!(recovered.status, 200, "{}", recovered.text());
    assert_eq!(header_u64(&recovered, "ratelimit-remaining"), 0);

    // The limit is the key's own: the unlimited admin key is untouched and carries no RateLimit headers.
    let admin = s
        .post(&op_path("api_keys.get"), Some(s.admin_key()), &get)
        .await;
    assert_eq!(admin.status, 200);
    assert!(admin.header("ratelimit-limit").is_none());
}

#[tokio::test]
async fn the_server_default_limits_keys_without_their_own() {
    let s = TestServer::start_with(&["--default-rate-limit", "2"]);
    // The admin key has no limit of its own, so the default applies: this create spends one of two.
    let (key, _) = key_with_limit(&s, &["api_keys:read"], Some(1000)).await;
    let get = json!({ "limit": 1 });
    let r = s
        .post(&op_path("api_keys.list"), Some(s.admin_key()), &get)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header_u64(&r, "ratelimit-limit"), 2);
    assert_eq!(header_u64(&r, "ratelimit-remaining"), 0);
    let refused = s
        .post(&op_path("api_keys.list"), Some(s.admin_key()), &get)
        .await;
    refused.error(429, "rate_limited");
    assert!((29..=30).contains(&header_u64(&refused, "retry-after")));
    // A key's own limit wins over the default.
    let own = s.post(&op_path("api_keys.list"), Some(&key), &get).await;
    assert_eq!(own.status, 200);
    assert_eq!(header_u64(&own, "ratelimit-limit"), 1000);
}

/// Every field of an audit item, exactly.
const AUDIT_FIELDS: [&str; 12] = [
    "at",
    "client_ip",
    "count",
    "error_code",
    "id",
    "operation",
    "org_id",
    "principal_id",
    "principal_kind",
    "request_id",
    "status",
    "target_id",
];

async fn audit(s: &TestServer, token: &str, body: Value) -> Vec<Value> {
    let items = s.call_ok("audit.list", token, body).await.lines();
    for item in &items {
        let mut fields: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, AUDIT_FIELDS, "{item}");
    }
    items
}

#[tokio::test]
async fn audit_records_writes_and_failures_never_reads_or_secrets() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let created = s.create(&admin, json!({ "name": "audited" })).await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let new_id = id_of(&created["key_details"]);
    let update = s
        .post(
            &op_path("api_keys.update"),
            Some(&admin),
            &json!({ "key_id": new_id, "name": "renamed" }),
        )
        .await;
    assert_eq!(update.status, 200);
    let missing = s
        .post(
            &op_path("api_keys.revoke"),
            Some(&admin),
            &json!({ "key_id": "key_00000000000000000000000000" }),
        )
        .await;
    missing.error(404, "not_found");
    let bad = s
        .post(
            &op_path("api_keys.create"),
            Some(&admin),
            &json!({ "name": "" }),
        )
        .await;
    bad.error(400, "invalid_argument");
    let reader = s.create_key("default", &["api_keys:read"]);
    let denied = s
        .post(
            &op_path("api_keys.create"),
            Some(&reader),
            &json!({ "name": "x" }),
        )
        .await;
    denied.error(403, "permission_denied");
    // Reads leave no trace.
    s.list(&admin, json!({})).await;
    s.call_ok("api_keys.get", &admin, json!({ "key_id": new_id }))
        .await;

    // Refusals before the handler (the 400 and the 403) are tallied and written once per interval, or when
    // the server stops: after a restart every record is there.
    let mut s = s;
    s.restart();
    let items = audit(&s, &admin, json!({})).await;
    let summary: Vec<(String, u64, Value)> = items
        .iter()
        .map(|i| {
            (
                i["operation"].as_str().unwrap().to_owned(),
                i["status"].as_u64().unwrap(),
                i["error_code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "api_keys.create".to_owned(),
                403,
                json!("permission_denied")
            ),
            ("api_keys.create".to_owned(), 400, json!("invalid_argument")),
            ("api_keys.revoke".to_owned(), 404, json!("not_found")),
            ("api_keys.update".to_owned(), 200, Value::Null),
            ("api_keys.create".to_owned(), 200, Value::Null),
        ],
        "newest first, successes and failures, no reads"
    );
    let [denied_item, bad_item, missing_item, update_item, create_item] = &items[..] else {
        unreachable!()
    };
    assert_eq!(create_item["target_id"], new_id.as_str());
    assert!(create_item["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    assert_eq!(update_item["target_id"], new_id.as_str());
    assert_eq!(missing_item["target_id"], "key_00000000000000000000000000");
    assert_eq!(bad_item["target_id"], Value::Null);
    assert_eq!(
        denied_item["principal_id"],
        id_of(&s.call_ok("auth.whoami", &reader, json!({})).await.json()).as_str()
    );
    for item in &items {
        assert_eq!(item["org_id"], "default");
        assert_eq!(item["client_ip"], "127.0.0.1");
        assert_eq!(item["principal_kind"], "api_key");
        assert!(item["id"].as_str().unwrap().starts_with("aud_"));
        crate::support::rfc3339_unix(item["at"].as_str().unwrap());
    }
    let text = serde_json::to_string(&items).unwrap();
    assert!(
        !text.contains(&secret) && !text.contains(&secret[12..]),
        "no secret in the audit log"
    );
    assert!(!text.contains(&admin[12..]) && !text.contains(&reader[12..]));

    // Filters and paging.
    let revokes = audit(&s, &admin, json!({ "operation": "api_keys.revoke" })).await;
    assert_eq!(revokes.len(), 1);
    let first = audit(&s, &admin, json!({ "limit": 2 })).await;
    assert_eq!(first, items[..2].to_vec());
    let rest = audit(&s, &admin, json!({ "before": first[1]["id"] })).await;
    assert_eq!(rest, items[2..].to_vec());
    let bad_cursor = s
        .post(
            &op_path("audit.list"),
            Some(&admin),
            &json!({ "before": "nope" }),
        )
        .await;
    bad_cursor.error_with(400, "invalid_argument", &["before"]);

    // The log survives a restart.
    let mut s = s;
    s.restart();
    assert_eq!(audit(&s, &admin, json!({})).await, items);
}

#[tokio::test]
async fn another_orgs_audit_log_is_invisible_and_reading_needs_the_scope() {
    let s = TestServer::start();
    s.create(s.admin_key(), json!({ "name": "in default" }))
        .await;
    let other = s.create_key("other", &["*"]);
    assert!(audit(&s, &other, json!({})).await.is_empty());
    s.create(&other, json!({ "name": "in other" })).await;
    let theirs = audit(&s, &other, json!({})).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["org_id"], "other");
    assert_eq!(audit(&s, s.admin_key(), json!({})).await.len(), 1);
    let keys_only = s.create_key("default", &["api_keys:*"]);
    s.post(&op_path("audit.list"), Some(&keys_only), &json!({}))
        .await
        .error_with(403, "permission_denied", &["audit:read"]);
}

async fn post_with_key(
    s: &TestServer,
    token: &str,
    op: &str,
    key: &str,
    body: &Value,
) -> crate::support::Reply {
    send(
        s.request(Method::POST, &op_path(op), Some(token))
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn idempotent_replay_and_mismatch() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let created = s
        .create(
            &admin,
            json!({ "name": "target", "permissions": ["api_keys:read"] }),
        )
        .await;
    let id = id_of(&created["key_details"]);
    let body = json!({ "key_id": id, "name": "first" });

    let first = post_with_key(&s, &admin, "api_keys.update", "retry-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.header("idempotent-replayed").is_none());
    // Change the key meanwhile: a replay returns the stored answer, it does not run again.
    s.call_ok(
        "api_keys.update",
        &admin,
        json!({ "key_id": id, "name": "changed" }),
    )
    .await;
    let replay = post_with_key(&s, &admin, "api_keys.update", "retry-1", &body).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json(), first.json());
    let now = s
        .call_ok("api_keys.get", &admin, json!({ "key_id": id }))
        .await
        .json();
    assert_eq!(
        now["name"], "changed",
        "the replay did not apply the update again"
    );

    let other_body = json!({ "key_id": id, "name": "second" });
    post_with_key(&s, &admin, "api_keys.update", "retry-1", &other_body)
        .await
        .error_with(422, "idempotency_mismatch", &["Idempotency-Key"]);
    // The same key on another operation is a mismatch too.
    post_with_key(
        &s,
        &admin,
        "api_keys.revoke",
        "retry-1",
        &json!({ "key_id": id }),
    )
    .await
    .error(422, "idempotency_mismatch");

    // Errors are replayed as well: a 404 stays a 404.
    let missing = json!({ "key_id": "key_00000000000000000000000000" });
    let e1 = post_with_key(&s, &admin, "api_keys.revoke", "retry-2", &missing).await;
    e1.error(404, "not_found");
    let e2 = post_with_key(&s, &admin, "api_keys.revoke", "retry-2", &missing).await;
    assert_eq!(
        (e2.status, e2.header("idempotent-replayed")),
        (404, Some("true"))
    );
    assert_eq!(e2.json()["error"]["code"], "not_found");

    // Keys are per principal: another key using the same idempotency key runs its own request.
    let writer = s.create_key("default", &["api_keys:read", "api_keys:write"]);
    let theirs = post_with_key(
        &s,
        &writer,
        "api_keys.update",
        "retry-1",
        &json!({ "key_id": id, "name": "w" }),
    )
    .await;
    assert_eq!(
        (theirs.status, theirs.header("idempotent-replayed")),
        (200, None)
    );

    // Replays survive a restart.
    let mut s = s;
    s.restart();
    let after = post_with_key(&s, &admin, "api_keys.update", "retry-1", &body).await;
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(after.json(), first.json());
}

#[tokio::test]
async fn idempotency_key_rules() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    // export operations refuse it: their response holds a secret that is never stored.
    post_with_key(&s, &admin, "api_keys.create", "k", &json!({ "name": "x" }))
        .await
        .error_with(400, "invalid_argument", &["Idempotency-Key", "secret"]);
    let too_long = "k".repeat(256);
    post_with_key(
        &s,
        &admin,
        "api_keys.revoke",
        &too_long,
        &json!({ "key_id": "key_00000000000000000000000000" }),
    )
    .await
    .error_with(400, "invalid_argument", &["Idempotency-Key", "255"]);
    let longest = "k".repeat(255);
    let ok = post_with_key(
        &s,
        &admin,
        "api_keys.revoke",
        &longest,
        &json!({ "key_id": "key_00000000000000000000000000" }),
    )
    .await;
    ok.error(404, "not_found");
    // Reads ignore it.
    let read = post_with_key(&s, &admin, "api_keys.list", "k", &json!({})).await;
    assert_eq!(
        (read.status, read.header("idempotent-replayed")),
        (200, None)
    );
    let again = post_with_key(&s, &admin, "api_keys.list", "k", &json!({})).await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (200, None)
    );
}

#[tokio::test]
async fn a_concurrent_retry_gets_409_while_the_first_runs() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "target" })).await["key_details"]);
    let body = serde_json::to_vec(&json!({ "key_id": id, "name": "slow" })).unwrap();

    // The first request sends its headers and half its body, then stalls.
    let addr = s.url("").trim_start_matches("http://").to_owned();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/op/api_keys.update HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: concurrent\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    first.write_all(head.as_bytes()).await.unwrap();
    first.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let body_json: Value = serde_json::from_slice(&body).unwrap();
    post_with_key(&s, &admin, "api_keys.update", "concurrent", &body_json)
        .await
        .error_with(409, "conflict", &["in progress"]);

    // The first completes normally; afterwards the retry is a replay.
    first.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"slow\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200 OK"));
    let retry = post_with_key(&s, &admin, "api_keys.update", "concurrent", &body_json).await;
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed")),
        (200, Some("true"))
    );
}

#[tokio::test]
async fn idempotency_keys_of_same_named_sessions_in_two_orgs_never_meet() {
    let s = TestServer::start();
    let acme_key = s.create_key("acme", &["*"]);
    let target = s
        .create(
            &acme_key,
            json!({ "name": "acme's", "permissions": ["api_keys:read"] }),
        )
        .await;
    let id = id_of(&target["key_details"]);
    let acme = s.mint_session(&["--org", "acme", "--sub", "alice", "--scopes", "api_keys:*"]);
    let globex = s.mint_session(&[
        "--org",
        "globex",
        "--sub",
        "alice",
        "--scopes",
        "api_keys:*",
    ]);
    let body = json!({ "key_id": id, "name": "renamed by acme's alice" });
    let first = post_with_key(&s, &acme, "api_keys.update", "k1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // The same key and body from the other organization's alice is her own request: a 404, not a replay.
    let other = post_with_key(&s, &globex, "api_keys.update", "k1", &body).await;
    other.error(404, "not_found");
    assert!(other.header("idempotent-replayed").is_none());
    assert!(!other.text().contains("acme"));
}

#[tokio::test]
async fn a_revoke_whose_client_disconnects_still_invalidates_the_key_and_is_audited() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let created = s.create(&admin, json!({ "name": "doomed" })).await;
    let (secret, id) = (
        created["key"].as_str().unwrap().to_owned(),
        id_of(&created["key_details"]),
    );
    // Used once, so the verification cache holds it.
    assert_eq!(
        s.post(&op_path("auth.whoami"), Some(&secret), &json!({}))
            .await
            .status,
        200
    );

    // Hold SQLite's write lock so the revoke is queued, and hang up before it can answer.
    let db = rusqlite::Connection::open(s.data_dir().join("opgate.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let hung_up = client
        .post(s.url(&op_path("api_keys.revoke")))
        .bearer_auth(&admin)
        .json(&json!({ "key_id": id }))
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up before the answer");
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.execute_batch("COMMIT").unwrap();
    drop(db);

    // The revoke commits, the cached key is dropped and the call is in the audit log.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .post(&op_path("auth.whoami"), Some(&secret), &json!({}))
            .await;
        if r.status == 401 {
            r.error_with(401, "unauthenticated", &["revoked"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still authenticates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revokes = audit(&s, &admin, json!({ "operation": "api_keys.revoke" })).await;
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0]["target_id"], id.as_str());
    assert_eq!(revokes[0]["status"], 200);
}
