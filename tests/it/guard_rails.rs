//! The dispatcher's guard rails, in process with a manual clock: per-key rate limits (GCRA, 429 with the
//! RateLimit headers), the audit log of state-changing calls (`audit.list`), and idempotent retries.

use std::time::Duration;

use crate::support::db::Db;
use crate::support::{eventually, id_of, op_path, Reply, TestGateway};
use futures_util::FutureExt;
use reqwest::Method;
use serde_json::{json, Value};

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("{name} header missing: {}", reply.text()))
        .parse()
        .unwrap()
}

/// A key of the admin's org with the given permissions and rate limit, created over the API.
async fn key_with_limit(
    s: &TestGateway,
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
    let s = TestGateway::start().await;
    let (key, id) = key_with_limit(&s, &["api_keys:read"], Some(60)).await;
    let (twin, _) = key_with_limit(&s, &["api_keys:read"], Some(60)).await;
    let get = json!({ "key_id": id });
    // 60 per minute: a burst of 60, each success announcing what is left.
    for i in 0..60u64 {
        let r = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(header_u64(&r, "ratelimit-limit"), 60);
        assert_eq!(header_u64(&r, "ratelimit-remaining"), 59 - i);
        assert_eq!(header_u64(&r, "ratelimit-reset"), i + 1);
        assert!(r.header("retry-after").is_none());
    }
    let refused = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
    refused.error_with(429, "rate_limited", &["60 requests per minute"]);
    assert_eq!(header_u64(&refused, "retry-after"), 1);
    assert_eq!(header_u64(&refused, "ratelimit-limit"), 60);
    assert_eq!(header_u64(&refused, "ratelimit-remaining"), 0);
    assert_eq!(header_u64(&refused, "ratelimit-reset"), 60);
    // Refusals do not push the limit further out: just short of one interval later it is still refused,
    // one interval later one request succeeds again.
    s.advance(Duration::from_millis(999));
    s.post(&op_path("api_keys.get"), Some(&key), &get)
        .await
        .error(429, "rate_limited");
    s.advance(Duration::from_millis(1));
    let recovered = s.post(&op_path("api_keys.get"), Some(&key), &get).await;
    assert_eq!(recovered.status, 200, "{}", recovered.text());
    assert_eq!(header_u64(&recovered, "ratelimit-remaining"), 0);

    // The limit is the key's own: another key with the same limit still has its whole burst.
    let other = s.post(&op_path("api_keys.get"), Some(&twin), &get).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(header_u64(&other, "ratelimit-limit"), 60);
    assert_eq!(header_u64(&other, "ratelimit-remaining"), 59);
}

#[tokio::test]
async fn the_server_default_limits_keys_without_their_own() {
    let s = TestGateway::start_with(|setup| setup.config.default_rate_limit = Some(2)).await;
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
    assert_eq!(header_u64(&refused, "retry-after"), 30);
    // A key's own limit wins over the default.
    let own = s.post(&op_path("api_keys.list"), Some(&key), &get).await;
    assert_eq!(own.status, 200);
    assert_eq!(header_u64(&own, "ratelimit-limit"), 1000);
    assert_eq!(header_u64(&own, "ratelimit-remaining"), 999);
    // Thirty seconds later the default lets one more through.
    s.advance(Duration::from_secs(30));
    let again = s
        .post(&op_path("api_keys.list"), Some(s.admin_key()), &get)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
}

#[tokio::test]
async fn refused_requests_count_toward_the_rate_limit() {
    let s = TestGateway::start().await;
    let (key, id) = key_with_limit(&s, &["api_keys:read"], Some(2)).await;
    // A forbidden call, a malformed one: both refused, both spend the limit.
    s.post(
        &op_path("api_keys.create"),
        Some(&key),
        &json!({ "name": "x" }),
    )
    .await
    .error(403, "permission_denied");
    s.post(&op_path("api_keys.get"), Some(&key), &json!({ "nope": 1 }))
        .await
        .error(400, "invalid_argument");
    let refused = s
        .post(
            &op_path("api_keys.get"),
            Some(&key),
            &json!({ "key_id": id }),
        )
        .await;
    refused.error(429, "rate_limited");
    assert_eq!(header_u64(&refused, "retry-after"), 30);
    // 429s themselves do not: one interval later exactly one call passes.
    s.advance(Duration::from_secs(30));
    let ok = s
        .post(
            &op_path("api_keys.get"),
            Some(&key),
            &json!({ "key_id": id }),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    s.post(
        &op_path("api_keys.get"),
        Some(&key),
        &json!({ "key_id": id }),
    )
    .await
    .error(429, "rate_limited");
}

/// Every field of an audit item, exactly.
const AUDIT_FIELDS: [&str; 15] = [
    "at",
    "client_ip",
    "count",
    "error_code",
    "id",
    "mode",
    "operation",
    "org_id",
    "principal_id",
    "principal_kind",
    "request_id",
    "status",
    "target_id",
    "via",
    "workspace_id",
];

async fn audit(s: &TestGateway, token: &str, body: Value) -> Vec<Value> {
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

/// `(operation, status, error_code, count)` of each audit item.
fn summary(items: &[Value]) -> Vec<(String, u64, Value, u64)> {
    items
        .iter()
        .map(|i| {
            (
                i["operation"].as_str().unwrap().to_owned(),
                i["status"].as_u64().unwrap(),
                i["error_code"].clone(),
                i["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(op: &str, status: u64, code: Value, count: u64) -> (String, u64, Value, u64) {
    (op.to_owned(), status, code, count)
}

#[tokio::test]
async fn audit_records_writes_and_failures_never_reads_or_secrets() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let created_reply = s
        .call_ok("api_keys.create", &admin, json!({ "name": "audited" }))
        .await;
    let created = created_reply.json();
    let secret = created["key"].as_str().unwrap().to_owned();
    let new_id = id_of(&created["key_details"]);
    s.advance(Duration::from_secs(1));
    let update = s
        .post(
            &op_path("api_keys.update"),
            Some(&admin),
            &json!({ "key_id": new_id, "name": "renamed" }),
        )
        .await;
    assert_eq!(update.status, 200);
    s.advance(Duration::from_secs(1));
    let missing = s
        .post(
            &op_path("api_keys.revoke"),
            Some(&admin),
            &json!({ "key_id": "key_00000000000000000000000000" }),
        )
        .await;
    missing.error(404, "not_found");
    s.advance(Duration::from_secs(1));
    let bad = s
        .post(
            &op_path("api_keys.create"),
            Some(&admin),
            &json!({ "name": "" }),
        )
        .await;
    bad.error(400, "invalid_argument");
    s.advance(Duration::from_secs(1));
    let reader = s.create_key("default", &["api_keys:read"]).await;
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
    s.restart().await;
    let items = audit(&s, &admin, json!({})).await;
    assert_eq!(
        summary(&items),
        vec![
            row("api_keys.create", 403, json!("permission_denied"), 1),
            row("api_keys.create", 400, json!("invalid_argument"), 1),
            row("api_keys.revoke", 404, json!("not_found"), 1),
            row("api_keys.update", 200, Value::Null, 1),
            row("api_keys.create", 200, Value::Null, 1),
        ],
        "newest first, successes and failures, no reads"
    );
    let [denied_item, bad_item, missing_item, update_item, create_item] = &items[..] else {
        unreachable!()
    };
    assert_eq!(create_item["target_id"], new_id.as_str());
    assert_eq!(create_item["request_id"], created_reply.request_id());
    assert_eq!(update_item["target_id"], new_id.as_str());
    assert_eq!(update_item["request_id"], update.request_id());
    assert_eq!(missing_item["target_id"], "key_00000000000000000000000000");
    assert_eq!(missing_item["request_id"], missing.request_id());
    assert_eq!(bad_item["target_id"], Value::Null);
    assert_eq!(bad_item["request_id"], bad.request_id());
    assert_eq!(denied_item["request_id"], denied.request_id());
    assert_eq!(
        denied_item["principal_id"],
        s.id_of_key(&reader).await.as_str()
    );
    let start = s.clock().now().unix() - 4;
    let ats: Vec<i64> = items
        .iter()
        .map(|i| crate::support::rfc3339_unix(i["at"].as_str().unwrap()))
        .collect();
    assert_eq!(ats, [start + 4, start + 3, start + 2, start + 1, start]);
    for item in &items {
        assert_eq!(item["org_id"], "default");
        assert_eq!(item["client_ip"], "127.0.0.1");
        assert_eq!(item["principal_kind"], "api_key");
        assert!(item["id"].as_str().unwrap().starts_with("aud_"));
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
    s.restart().await;
    assert_eq!(audit(&s, &admin, json!({})).await, items);
}

#[tokio::test]
async fn audited_calls_are_durable_before_their_answer_and_across_a_restart() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let db = Db::open(&s).await;
    async fn rows(db: &Db) -> Vec<(String, u16, String)> {
        db.rows(
            "SELECT operation, status, request_id FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_u64().unwrap() as u16,
                r[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
    }
    // Each acknowledged call of a handler is in the database, committed, when its answer arrives: another
    // connection sees it at once.
    let mut expected = Vec::new();
    let created = s
        .post(
            &op_path("api_keys.create"),
            Some(&admin),
            &json!({ "name": "durable" }),
        )
        .await;
    assert_eq!(created.status, 200);
    expected.push((
        "api_keys.create".to_owned(),
        200,
        created.request_id().to_owned(),
    ));
    assert_eq!(rows(&db).await, expected);
    let id = id_of(&created.json()["key_details"]);
    let absent = "key_00000000000000000000000000".to_owned();
    for (op, status, target) in [
        ("api_keys.update", 200, &id),
        ("api_keys.revoke", 404, &absent),
        ("api_keys.revoke", 200, &id),
    ] {
        let reply = s
            .post(&op_path(op), Some(&admin), &json!({ "key_id": target }))
            .await;
        assert_eq!(reply.status, status, "{}", reply.text());
        expected.push((op.to_owned(), status, reply.request_id().to_owned()));
        assert_eq!(rows(&db).await, expected, "after {op}");
    }
    // A restart that skips the shutdown's flush (as a crash would) loses none of them.
    s.restart_without_flush().await;
    let items = audit(&s, &admin, json!({})).await;
    let mut got: Vec<(String, u16, String)> = items
        .iter()
        .map(|i| {
            (
                i["operation"].as_str().unwrap().to_owned(),
                i["status"].as_u64().unwrap() as u16,
                i["request_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.reverse();
    assert_eq!(got, expected);
}

/// Rotates the revoked key `id` twice (the handler's own 409) and returns the answers' request ids.
async fn rotate_revoked(s: &TestGateway, id: &str) -> Vec<String> {
    let mut conflicts = Vec::new();
    for _ in 0..2 {
        let reply = s
            .post(
                &op_path("api_keys.rotate"),
                Some(s.admin_key()),
                &json!({ "key_id": id }),
            )
            .await;
        reply.error_with(409, "conflict", &["revoked"]);
        conflicts.push(reply.request_id().to_owned());
    }
    conflicts
}

#[tokio::test]
async fn a_handlers_409_is_audited_one_by_one_before_its_answer() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "gone" })).await["key_details"]);
    s.revoke(&admin, &id).await;
    // No flush: each record is there when its answer is.
    let conflicts = rotate_revoked(&s, &id).await;
    let items = audit(&s, &admin, json!({ "operation": "api_keys.rotate" })).await;
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(items[0]["request_id"], conflicts[1].as_str());
    assert_eq!(items[1]["request_id"], conflicts[0].as_str());
    for item in &items {
        assert_eq!(item["target_id"], id.as_str());
        assert_eq!(item["count"], 1);
    }
}

#[tokio::test]
async fn a_handlers_409_is_audited_as_a_409() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "gone" })).await["key_details"]);
    s.revoke(&admin, &id).await;
    rotate_revoked(&s, &id).await;
    let items = audit(&s, &admin, json!({ "operation": "api_keys.rotate" })).await;
    assert_eq!(
        summary(&items),
        vec![
            row("api_keys.rotate", 409, json!("conflict"), 1),
            row("api_keys.rotate", 409, json!("conflict"), 1),
        ]
    );
}

#[tokio::test]
async fn rate_limited_calls_are_tallied_not_written_one_by_one() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    // 429s are tallied: nothing is written per refusal, one record with their count per interval.
    let (limited, limited_id) = key_with_limit(&s, &["api_keys:*"], Some(1)).await;
    s.create(&limited, json!({ "name": "spends the limit" }))
        .await;
    let mut last = String::new();
    for _ in 0..3 {
        let reply = s
            .post(
                &op_path("api_keys.create"),
                Some(&limited),
                &json!({ "name": "x" }),
            )
            .await;
        reply.error(429, "rate_limited");
        last = reply.request_id().to_owned();
    }
    let before = audit(&s, &admin, json!({})).await;
    assert!(
        before.iter().all(|i| i["status"] != 429),
        "no record per refusal: {before:#?}"
    );
    s.flush_refusals().await;
    let after = audit(&s, &admin, json!({})).await;
    assert_eq!(after.len(), before.len() + 1, "{after:#?}");
    let tally = &after[0];
    assert_eq!(
        summary(std::slice::from_ref(tally)),
        vec![row("api_keys.create", 429, json!("rate_limited"), 3)]
    );
    assert_eq!(tally["principal_id"], limited_id.as_str());
    assert_eq!(tally["request_id"], last.as_str(), "the last refusal's id");
    // Flushed once: another flush writes nothing new.
    s.flush_refusals().await;
    assert_eq!(audit(&s, &admin, json!({})).await, after);
}

#[tokio::test]
async fn another_orgs_audit_log_is_invisible_and_reading_needs_the_scope() {
    let s = TestGateway::start().await;
    s.create(s.admin_key(), json!({ "name": "in default" }))
        .await;
    let other = s.create_key("other", &["*"]).await;
    assert!(audit(&s, &other, json!({})).await.is_empty());
    s.create(&other, json!({ "name": "in other" })).await;
    let theirs = audit(&s, &other, json!({})).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["org_id"], "other");
    let ours = audit(&s, s.admin_key(), json!({})).await;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["org_id"], "default");
    // Another organization's record id is not a cursor here.
    s.post(
        &op_path("audit.list"),
        Some(s.admin_key()),
        &json!({ "before": theirs[0]["id"] }),
    )
    .await
    .error(404, "not_found");
    let keys_only = s.create_key("default", &["api_keys:*"]).await;
    s.post(&op_path("audit.list"), Some(&keys_only), &json!({}))
        .await
        .error_with(403, "permission_denied", &["audit:read"]);
}

async fn post_with_key(s: &TestGateway, token: &str, op: &str, key: &str, body: &Value) -> Reply {
    s.request(Method::POST, &op_path(op), Some(token))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
}

/// Asserts `replay` is a replay of `first`: same status and body byte for byte, a new request id.
#[track_caller]
fn assert_replay_of(replay: &Reply, first: &Reply) {
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert!(first.header("idempotent-replayed").is_none());
    assert_eq!(replay.status, first.status);
    assert_eq!(
        replay.text(),
        first.text(),
        "the replay's body is the original, byte for byte"
    );
    assert_ne!(
        replay.request_id(),
        first.request_id(),
        "a replay has its own X-Request-Id"
    );
}

#[tokio::test]
async fn idempotent_replay_and_mismatch() {
    let mut s = TestGateway::start().await;
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
    s.advance(Duration::from_secs(5));
    s.call_ok(
        "api_keys.update",
        &admin,
        json!({ "key_id": id, "name": "changed" }),
    )
    .await;
    let replay = post_with_key(&s, &admin, "api_keys.update", "retry-1", &body).await;
    assert_replay_of(&replay, &first);
    let now = s.get(&admin, &id).await;
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
    assert_eq!(s.get(&admin, &id).await["status"], "active");

    // Errors are replayed as well: a 404 stays a 404, with the first answer's body (and its request id in
    // it) byte for byte.
    let missing = json!({ "key_id": "key_00000000000000000000000000" });
    let e1 = post_with_key(&s, &admin, "api_keys.revoke", "retry-2", &missing).await;
    e1.error(404, "not_found");
    let e2 = post_with_key(&s, &admin, "api_keys.revoke", "retry-2", &missing).await;
    assert_replay_of(&e2, &e1);
    assert_eq!(e2.json()["error"]["request_id"], e1.request_id());

    // Keys are per principal: another key using the same idempotency key runs its own request.
    let writer = s
        .create_key("default", &["api_keys:read", "api_keys:write"])
        .await;
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
    assert_eq!(theirs.json()["name"], "w");

    // Replays survive a restart.
    s.restart().await;
    let after = post_with_key(&s, &admin, "api_keys.update", "retry-1", &body).await;
    assert_replay_of(&after, &first);
}

#[tokio::test]
async fn idempotency_key_rules() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    // export operations refuse it: their response holds a secret that is never stored.
    post_with_key(&s, &admin, "api_keys.create", "k", &json!({ "name": "x" }))
        .await
        .error_with(400, "invalid_argument", &["Idempotency-Key", "secret"]);
    let too_long = "k".repeat(256);
    for bad in [too_long.as_str(), "has space", "tab\tkey"] {
        post_with_key(
            &s,
            &admin,
            "api_keys.revoke",
            bad,
            &json!({ "key_id": "key_00000000000000000000000000" }),
        )
        .await
        .error_with(400, "invalid_argument", &["Idempotency-Key", "255"]);
    }
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
    let again = post_with_key(
        &s,
        &admin,
        "api_keys.revoke",
        &longest,
        &json!({ "key_id": "key_00000000000000000000000000" }),
    )
    .await;
    assert_replay_of(&again, &ok);
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
async fn a_stored_response_expires_after_24_hours() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "target" })).await["key_details"]);
    let body = json!({ "key_id": id, "name": "first" });
    let first = post_with_key(&s, &admin, "api_keys.update", "daily", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    s.call_ok(
        "api_keys.update",
        &admin,
        json!({ "key_id": id, "name": "changed" }),
    )
    .await;
    // One second short of 24 hours it is still replayed (and a different body still refused).
    s.advance(Duration::from_secs(24 * 3600 - 1));
    let replay = post_with_key(&s, &admin, "api_keys.update", "daily", &body).await;
    assert_replay_of(&replay, &first);
    post_with_key(
        &s,
        &admin,
        "api_keys.update",
        "daily",
        &json!({ "key_id": id, "name": "other" }),
    )
    .await
    .error(422, "idempotency_mismatch");
    assert_eq!(s.get(&admin, &id).await["name"], "changed");
    // Past 24 hours the key is free again: the same body runs anew (the old answer is not replayed) ...
    s.advance(Duration::from_secs(2));
    let rerun = post_with_key(&s, &admin, "api_keys.update", "daily", &body).await;
    assert_eq!(
        (rerun.status, rerun.header("idempotent-replayed")),
        (200, None),
        "{}",
        rerun.text()
    );
    assert_eq!(s.get(&admin, &id).await["name"], "first", "it ran again");
    // ... and what it answered now is what a retry gets.
    let replay = post_with_key(&s, &admin, "api_keys.update", "daily", &body).await;
    assert_replay_of(&replay, &rerun);
}

#[tokio::test]
async fn failures_worth_retrying_and_exports_are_never_stored() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let target = json!({ "name": "target", "permissions": ["api_keys:read"] });
    let id = id_of(&s.create(&admin, target).await["key_details"]);

    // 429: refused before anything ran; once the limit is back the same key and body run.
    let (limited, _) = key_with_limit(&s, &["api_keys:*"], Some(1)).await;
    s.call_ok("auth.whoami", &limited, json!({})).await;
    let body = json!({ "key_id": id, "name": "after the limit" });
    post_with_key(&s, &limited, "api_keys.update", "k429", &body)
        .await
        .error(429, "rate_limited");
    s.advance(Duration::from_secs(60));
    let ran = post_with_key(&s, &limited, "api_keys.update", "k429", &body).await;
    assert_eq!(
        (ran.status, ran.header("idempotent-replayed")),
        (200, None),
        "{}",
        ran.text()
    );
    assert_eq!(ran.json()["name"], "after the limit");

    // 5xx: storage fails under the call; after recovery the same key and body run, nothing was kept.
    s.data().store.close().await;
    let body = json!({ "key_id": id, "name": "after the outage" });
    post_with_key(&s, &admin, "api_keys.update", "k503", &body)
        .await
        .error(503, "unavailable");
    s.restart().await;
    let ran = post_with_key(&s, &admin, "api_keys.update", "k503", &body).await;
    assert_eq!(
        (ran.status, ran.header("idempotent-replayed")),
        (200, None),
        "{}",
        ran.text()
    );
    assert_eq!(ran.json()["name"], "after the outage");

    // Exports: their answers (holding secrets) are never kept, under any key.
    let created = s.create(&admin, json!({ "name": "exported" })).await;
    let rotated = s
        .call_ok(
            "api_keys.rotate",
            &admin,
            json!({ "key_id": id_of(&created["key_details"]) }),
        )
        .await
        .json();
    let stored = Db::open(&s)
        .await
        .rows("SELECT key, body FROM idempotency ORDER BY key", &[])
        .await;
    let keys: Vec<&str> = stored.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(keys, ["k429", "k503"], "only the two answers that ran");
    for row in &stored {
        let text = row[1].as_str().unwrap();
        for secret in [&created["key"], &rotated["key"]] {
            assert!(!text.contains(secret.as_str().unwrap()), "{text}");
        }
    }
}

#[tokio::test]
async fn a_concurrent_retry_gets_409_while_the_first_runs() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let id = id_of(&s.create(&admin, json!({ "name": "target" })).await["key_details"]);
    let body_json = json!({ "key_id": id, "name": "slow" });
    let body = serde_json::to_vec(&body_json).unwrap();

    // The first request's body arrives in two halves; the gateway has taken the first when `send` returns.
    let (first, upload) = s
        .request(Method::POST, &op_path("api_keys.update"), Some(&admin))
        .header("content-type", "application/json")
        .header("idempotency-key", "concurrent")
        .header("content-length", body.len().to_string())
        .body_stream();
    let first = tokio::spawn(first.send());
    upload.send(body[..body.len() / 2].to_vec()).await;

    let held = post_with_key(&s, &admin, "api_keys.update", "concurrent", &body_json).await;
    held.error_with(409, "conflict", &["in progress"]);

    // The first completes normally; afterwards the retry is a replay of it (the 409 was not kept).
    upload.send(body[body.len() / 2..].to_vec()).await;
    drop(upload);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["name"], "slow");
    let retry = post_with_key(&s, &admin, "api_keys.update", "concurrent", &body_json).await;
    assert_replay_of(&retry, &first);
}

#[tokio::test]
async fn idempotency_keys_of_same_named_sessions_in_two_orgs_never_meet() {
    let s = TestGateway::start().await;
    let acme_key = s.create_key("acme", &["*"]).await;
    let target = s
        .create(
            &acme_key,
            json!({ "name": "acme's", "permissions": ["api_keys:read"] }),
        )
        .await;
    let id = id_of(&target["key_details"]);
    let acme = s.mint_session("acme", "alice", &["api_keys:*"], 3600);
    let globex = s.mint_session("globex", "alice", &["api_keys:*"], 3600);
    let body = json!({ "key_id": id, "name": "renamed by acme's alice" });
    let first = post_with_key(&s, &acme, "api_keys.update", "k1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // The same key and body from the other organization's alice is her own request: a 404, not a replay.
    let other = post_with_key(&s, &globex, "api_keys.update", "k1", &body).await;
    other.error(404, "not_found");
    assert!(other.header("idempotent-replayed").is_none());
    assert!(!other.text().contains("acme"));
    // While acme's alice gets her replay.
    let replay = post_with_key(&s, &acme, "api_keys.update", "k1", &body).await;
    assert_replay_of(&replay, &first);
}

#[tokio::test]
async fn a_revoke_whose_client_disconnects_still_invalidates_the_key_and_is_audited() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let created = s.create(&admin, json!({ "name": "doomed" })).await;
    let (secret, id) = (
        created["key"].as_str().unwrap().to_owned(),
        id_of(&created["key_details"]),
    );
    // Used once, so the verification cache holds it.
    s.call_ok("auth.whoami", &secret, json!({})).await;

    // The client hangs up before any answer: the request is dropped after its first poll, as hyper drops a
    // request whose connection went away.
    let revoke = s
        .request(Method::POST, &op_path("api_keys.revoke"), Some(&admin))
        .json(&json!({ "key_id": id }))
        .send();
    assert!(
        revoke.now_or_never().is_none(),
        "the client gave up before the answer"
    );

    // The revoke still commits, the cached key is dropped and the call is in the audit log.
    eventually(
        "the revoked key is refused",
        Duration::from_secs(10),
        || async {
            s.post(&op_path("auth.whoami"), Some(&secret), &json!({}))
                .await
                .status
                == 401
        },
    )
    .await;
    s.post(&op_path("auth.whoami"), Some(&secret), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);
    let revokes = audit(&s, &admin, json!({ "operation": "api_keys.revoke" })).await;
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0]["target_id"], id.as_str());
    assert_eq!(revokes[0]["status"], 200);
}
