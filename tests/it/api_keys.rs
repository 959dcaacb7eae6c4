//! The `api_keys.*` operations end to end, in process: both HTTP paths, output shapes, the limits of
//! `create`'s input, revocation (immediate, durable, idempotent), expiry, address allow-lists, organization
//! scoping and concurrent creates.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};

const CREATE: &str = "api_keys.create";
const LIST: &str = "api_keys.list";
const REVOKE: &str = "api_keys.revoke";

/// The id of the admin key (the only key of org `default` on a fresh server).
async fn admin_id(s: &TestGateway) -> String {
    let ids = s.list_ids(s.admin_key(), json!({})).await;
    assert_eq!(ids.len(), 1, "a fresh server has exactly the admin key");
    ids[0].clone()
}

#[track_caller]
fn assert_secret(key: &Value) -> String {
    let key = key.as_str().expect("`key` is a string");
    assert!(key.starts_with("opg_"), "{key}");
    assert_eq!(key.len(), 42, "opg_ + 32 + 6: {key}");
    assert!(key[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    key.to_owned()
}

#[tokio::test]
async fn create_through_both_paths_returns_the_secret_and_the_metadata() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let admin_id = admin_id(&s).await;
    let mut secrets = Vec::new();
    for path in both_paths(CREATE) {
        let reply = s
            .post(
                &path,
                Some(&admin),
                &json!({
                    "name": format!("made via {path}"),
                    "description": "for the tests",
                    "permissions": ["api_keys:read", "api_keys:write"],
                    "rate_limit": 100,
                    "allowed_ips": ["127.0.0.1", "10.0.0.0/8"],
                }),
            )
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let out = reply.json();
        let top: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(top.len(), 2, "only `key` and `key_details`: {out}");
        let key = assert_secret(&out["key"]);
        let d = &out["key_details"];
        assert_metadata(d);
        assert_eq!(
            d["key_prefix"],
            key[..12],
            "key_prefix is the first 12 characters"
        );
        assert_eq!(d["name"], format!("made via {path}"));
        assert_eq!(d["description"], "for the tests");
        assert_eq!(d["permissions"], json!(["api_keys:read", "api_keys:write"]));
        assert_eq!(d["rate_limit"], 100);
        assert_eq!(d["allowed_ips"], json!(["127.0.0.1", "10.0.0.0/8"]));
        assert_eq!(d["org_id"], "default");
        assert_eq!(d["created_by"], admin_id);
        assert_eq!(
            rfc3339_unix(d["created_at"].as_str().unwrap()),
            s.clock().now().unix()
        );
        for unset in ["expires_at", "last_used_at", "revoked_at"] {
            assert!(d[unset].is_null(), "{unset}: {d}");
        }
        // The secret works at once, through either path.
        s.call_ok(LIST, &key, json!({})).await;
        secrets.push(key);
    }
    assert_ne!(secrets[0], secrets[1]);
}

#[tokio::test]
async fn create_defaults_to_the_callers_permissions_and_minimal_fields() {
    let s = TestGateway::start().await;
    let writer = s
        .create_key("default", &["api_keys:read", "api_keys:write"])
        .await;
    let out = s.create(&writer, json!({ "name": "n" })).await;
    let d = &out["key_details"];
    assert_metadata(d);
    assert_eq!(d["permissions"], json!(["api_keys:read", "api_keys:write"]));
    assert_eq!(d["description"], Value::Null);
    assert_eq!(d["rate_limit"], Value::Null);
    assert_eq!(d["allowed_ips"], json!([]));
    // A 128-character name is the longest allowed; a key may grant less than it holds.
    let long = "n".repeat(128);
    let out = s
        .create(
            &writer,
            json!({ "name": long, "permissions": ["api_keys:read"] }),
        )
        .await;
    assert_eq!(out["key_details"]["name"], long);
    assert_eq!(out["key_details"]["permissions"], json!(["api_keys:read"]));
}

#[tokio::test]
async fn list_through_both_paths_streams_metadata_oldest_first_never_secrets() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let mut secrets = vec![admin.clone()];
    let mut created = vec![admin_id(&s).await];
    for i in 0..3 {
        let out = s.create(&admin, json!({ "name": format!("k{i}") })).await;
        secrets.push(assert_secret(&out["key"]));
        created.push(id_of(&out["key_details"]));
    }
    for path in both_paths(LIST) {
        let reply = s.post(&path, Some(&admin), &json!({})).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let text = reply.text();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into the list"
            );
        }
        let lines = reply.lines();
        let ids: Vec<String> = lines.iter().map(id_of).collect();
        assert_eq!(ids, created, "{path}: every key, oldest first");
        for line in &lines {
            assert_metadata(line);
            assert!(line.get("key").is_none() && line.get("key_hash").is_none());
        }
        assert_eq!(lines[1]["name"], "k0");
    }
    // An empty body means `{}`, with or without a content type.
    for ct in [None, Some("application/json")] {
        let reply = s.post_raw(&op_path(LIST), Some(&admin), ct, "").await;
        assert_eq!(reply.status, 200, "{ct:?}: {}", reply.text());
        assert_eq!(reply.lines().len(), 4);
    }
    // limit through the alias path.
    let reply = s
        .post(&alias_path(LIST), Some(&admin), &json!({ "limit": 2 }))
        .await;
    assert_eq!(
        reply.lines().iter().map(id_of).collect::<Vec<_>>(),
        created[..2]
    );
}

#[tokio::test]
async fn revoke_through_both_paths_returns_metadata_and_takes_effect_at_once() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for path in both_paths(REVOKE) {
        let out = s.create(&admin, json!({ "name": "victim" })).await;
        let key = assert_secret(&out["key"]);
        let id = id_of(&out["key_details"]);
        s.call_ok(LIST, &key, json!({})).await;

        let reply = s.post(&path, Some(&admin), &json!({ "key_id": id })).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let d = reply.json();
        assert_metadata(&d);
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["name"], "victim");
        assert_eq!(d["key_prefix"], key[..12]);
        let revoked_at = rfc3339_unix(d["revoked_at"].as_str().expect("revoked_at is set"));
        assert_eq!(revoked_at, s.clock().now().unix());

        // The very next request with the key fails, through either path.
        for list_path in both_paths(LIST) {
            s.post(&list_path, Some(&key), &json!({})).await.error_with(
                401,
                "unauthenticated",
                &["revoked"],
            );
        }
        // Hidden from the default list, shown with include_revoked.
        assert!(!s.list_ids(&admin, json!({})).await.contains(&id));
        let all = s.list(&admin, json!({ "include_revoked": true })).await;
        let line = all.iter().find(|l| l["id"] == id.as_str()).expect("listed");
        assert_eq!(line["revoked_at"], d["revoked_at"]);
    }
    // The admin key itself is untouched.
    s.call_ok(LIST, &admin, json!({})).await;
}

#[tokio::test]
async fn a_revocation_survives_a_restart_and_revoking_twice_keeps_the_first_time() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let out = s.create(&admin, json!({ "name": "short-lived" })).await;
    let key = assert_secret(&out["key"]);
    let id = id_of(&out["key_details"]);
    let keeper = assert_secret(&s.create(&admin, json!({ "name": "keeper" })).await["key"]);

    let first = s.revoke(&admin, &id).await;
    let first_at = first["revoked_at"].as_str().expect("revoked_at").to_owned();
    s.post(&op_path(LIST), Some(&key), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);

    s.restart().await;
    s.post(&op_path(LIST), Some(&key), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);
    // Keys that were not revoked, the admin key included, still work after the restart.
    s.call_ok(LIST, &keeper, json!({})).await;
    let all = s.list(&admin, json!({ "include_revoked": true })).await;
    let line = all.iter().find(|l| l["id"] == id.as_str()).expect("listed");
    assert_eq!(line["revoked_at"], first_at.as_str());

    // Let the clock move so that a new revocation time would differ.
    s.advance(Duration::from_secs(60));
    let again = s.revoke(&admin, &id).await;
    assert_eq!(
        again["revoked_at"],
        first_at.as_str(),
        "revoking twice keeps the first time"
    );
    assert_eq!(again["id"], id.as_str());
}

#[tokio::test]
async fn expires_in_days_sets_expires_at() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for days in [1i64, 90, 3650] {
        let now = s.clock().now().unix();
        let out = s
            .create(&admin, json!({ "name": "temp", "expires_in_days": days }))
            .await;
        let d = &out["key_details"];
        let expires = rfc3339_unix(d["expires_at"].as_str().expect("expires_at is set"));
        let created = rfc3339_unix(d["created_at"].as_str().unwrap());
        assert_eq!(created, now, "{d}");
        assert_eq!(expires, now + days * 86_400, "{d}");
        // Not expired yet: it works.
        s.call_ok(LIST, &assert_secret(&out["key"]), json!({}))
            .await;
    }
}

#[tokio::test]
async fn allowed_ips_restrict_where_a_key_may_be_used_from() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let cases: [(&[&str], bool); 5] = [
        (&["10.0.0.0/8"], false),
        (&["192.0.2.1", "::1"], false),
        (&["127.0.0.1"], true),
        (&["::1", "127.0.0.0/8"], true),
        (&[], true),
    ];
    for (allowed, works) in cases {
        let out = s
            .create(&admin, json!({ "name": "ip", "allowed_ips": allowed }))
            .await;
        assert_eq!(out["key_details"]["allowed_ips"], json!(allowed));
        let key = assert_secret(&out["key"]);
        let reply = s.post(&op_path(LIST), Some(&key), &json!({})).await;
        if works {
            assert_eq!(reply.status, 200, "{allowed:?}: {}", reply.text());
        } else {
            reply.error_with(403, "permission_denied", &["127.0.0.1"]);
        }
    }
}

#[tokio::test]
async fn organizations_never_see_each_others_keys() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned(); // org `default`
    let b_key = s
        .create_key("b", &["api_keys:read", "api_keys:write"])
        .await;
    let a_made = s.create(&admin, json!({ "name": "a1" })).await;
    let a_made_id = id_of(&a_made["key_details"]);
    let b_made = s.create(&b_key, json!({ "name": "b1" })).await;
    assert_eq!(b_made["key_details"]["org_id"], "b");
    let b_made_id = id_of(&b_made["key_details"]);
    let b_made_key = assert_secret(&b_made["key"]);

    let b_lines = s.list(&b_key, json!({ "include_revoked": true })).await;
    assert_eq!(b_lines.len(), 2, "b sees its CLI-made key and b1 only");
    assert!(b_lines.iter().all(|l| l["org_id"] == "b"));
    assert_eq!(b_lines[0]["key_prefix"], b_key[..12]);
    assert_eq!(id_of(&b_lines[1]), b_made_id);
    let b_ids: HashSet<String> = b_lines.iter().map(id_of).collect();

    let a_lines = s.list(&admin, json!({ "include_revoked": true })).await;
    assert_eq!(a_lines.len(), 2, "admin and a1");
    assert!(a_lines.iter().all(|l| l["org_id"] == "default"));
    assert!(a_lines.iter().all(|l| !b_ids.contains(&id_of(l))));

    // Another organization's key id is not found, whichever way it is used.
    for id in &b_ids {
        for path in both_paths(REVOKE) {
            s.post(&path, Some(&admin), &json!({ "key_id": id }))
                .await
                .error_with(404, "not_found", &["key_id", id]);
        }
        s.post(&op_path(LIST), Some(&admin), &json!({ "after_id": id }))
            .await
            .error_with(404, "not_found", &["after_id", id]);
    }
    s.post(
        &op_path(REVOKE),
        Some(&b_key),
        &json!({ "key_id": a_made_id }),
    )
    .await
    .error_with(404, "not_found", &[&a_made_id]);

    // B's keys are unharmed by A's attempts; A's key too.
    s.call_ok(LIST, &b_made_key, json!({})).await;
    let b_after = s.list(&b_key, json!({})).await;
    assert_eq!(b_after.len(), 2);
    assert!(b_after.iter().all(|l| l["revoked_at"].is_null()));
    s.call_ok(LIST, &assert_secret(&a_made["key"]), json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_all_succeed_and_are_listed() {
    let s = std::sync::Arc::new(TestGateway::start().await);
    let admin = s.admin_key().to_owned();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = std::sync::Arc::clone(&s);
            let admin = admin.clone();
            tokio::spawn(async move {
                let reply = s
                    .post(
                        &op_path(CREATE),
                        Some(&admin),
                        &json!({ "name": format!("c{i}") }),
                    )
                    .await;
                assert_eq!(reply.status, 200, "create c{i}: {}", reply.text());
                reply.json()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut secrets = HashSet::new();
    let mut names = HashSet::new();
    for task in tasks {
        let out = task.await.expect("task");
        ids.insert(id_of(&out["key_details"]));
        secrets.insert(assert_secret(&out["key"]));
        names.insert(out["key_details"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!((ids.len(), secrets.len(), names.len()), (50, 50, 50));

    let listed = s.list_ids(&admin, json!({})).await;
    assert_eq!(listed.len(), 51, "the admin key and the 50 new ones");
    let listed_set: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed_set.len(), 51, "no duplicates");
    assert!(ids.is_subset(&listed_set));
}

#[test]
fn rfc3339_helper() {
    assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), 0);
    assert_eq!(rfc3339_unix("2026-11-25T18:06:29Z"), 1_795_629_989);
    assert_eq!(rfc3339_unix("2000-02-29T00:00:00Z"), 951_782_400);
}

#[tokio::test]
async fn create_takes_each_limit_and_refuses_one_past_it() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let ips = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200))
            .collect()
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        ("name", json!("n".repeat(128)), json!("n".repeat(129)), "name: "),
        ("name (characters, not bytes)", json!("é".repeat(128)), json!("é".repeat(129)), "name: "),
        ("description", json!("d".repeat(1024)), json!("d".repeat(1025)), "description: "),
        ("permissions", json!(vec!["api_keys:read"; 64]), json!(vec!["api_keys:read"; 65]), "permissions: "),
        ("allowed_ips", json!(ips(100)), json!(ips(101)), "allowed_ips: "),
        ("expires_in_days", json!(3650), json!(3651), "expires_in_days: "),
        ("rate_limit", json!(1_000_000), json!(1_000_001), "rate_limit: "),
        ("rate_limit (lowest)", json!(1), json!(0), "rate_limit: "),
        ("expires_in_days (lowest)", json!(1), json!(0), "expires_in_days: "),
    ];
    for (what, ok, over, part) in cases {
        let field = what.split(' ').next().unwrap();
        let mut body = json!({ "name": "limits" });
        body[field] = ok.clone();
        let out = s.create(&admin, body.clone()).await;
        let d = &out["key_details"];
        match field {
            // Duplicates are dropped.
            "permissions" => assert_eq!(d["permissions"], json!(["api_keys:read"]), "{what}"),
            "expires_in_days" => assert_eq!(
                rfc3339_unix(d["expires_at"].as_str().unwrap()),
                s.clock().now().unix() + ok.as_i64().unwrap() * 86_400,
                "{what}"
            ),
            _ => assert_eq!(d[field], ok, "{what}"),
        }
        body[field] = over;
        s.post(&op_path(CREATE), Some(&admin), &body)
            .await
            .error_with(400, "invalid_argument", &[part]);
    }
    // None of the refused bodies made a key: the admin key and one per case.
    assert_eq!(s.list(&admin, json!({})).await.len(), 10);
}
