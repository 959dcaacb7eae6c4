//! The API-key lifecycle end to end, in process with a manual clock: `api_keys.get`, `api_keys.update` and
//! `api_keys.rotate`, exact expiry, address allow-lists behind trusted proxies, last-used tracking, and the
//! `status` of a key (in its metadata and as a `list` filter).

use std::net::IpAddr;
use std::time::Duration;

use crate::support::*;
use opgate::core::Timestamp;
use reqwest::Method;
use serde_json::{json, Value};

const CREATE: &str = "api_keys.create";
const LIST: &str = "api_keys.list";
const GET: &str = "api_keys.get";
const UPDATE: &str = "api_keys.update";
const ROTATE: &str = "api_keys.rotate";

const READ: &str = "api_keys:read";
const WRITE: &str = "api_keys:write";

/// The lifecycle fields that come on top of the contract's [`METADATA_FIELDS`].
const LIFECYCLE_FIELDS: [&str; 6] = [
    "status",
    "last_used_ip",
    "last_used_user_agent",
    "replaced_by_key_id",
    "grace_expires_at",
    "last_used_at",
];

/// Asserts `v` is key metadata with the lifecycle fields, and returns its status.
#[track_caller]
fn assert_details(v: &Value) -> String {
    assert_metadata(v);
    for field in LIFECYCLE_FIELDS {
        assert!(v.get(field).is_some(), "metadata lacks `{field}`: {v}");
    }
    if !v["grace_expires_at"].is_null() {
        rfc3339_unix(v["grace_expires_at"].as_str().expect("timestamp string"));
    }
    let status = v["status"].as_str().expect("status is a string");
    assert!(
        ["active", "expired", "revoked", "rotating"].contains(&status),
        "{v}"
    );
    status.to_owned()
}

#[track_caller]
fn assert_secret(key: &Value) -> String {
    let key = key.as_str().expect("`key` is a string");
    assert!(key.starts_with("opg_") && key.len() == 42, "{key}");
    key.to_owned()
}

/// `api_keys.create` with `token`: the new secret and its id.
async fn make(s: &TestGateway, token: &str, body: Value) -> (String, String) {
    let out = s.create(token, body).await;
    (assert_secret(&out["key"]), id_of(&out["key_details"]))
}

/// The id of the key whose secret is `key`, found through `list` by its prefix.
async fn id_by_secret(s: &TestGateway, token: &str, key: &str) -> String {
    let lines = s.list(token, json!({ "include_revoked": true })).await;
    let line = lines
        .iter()
        .find(|l| l["key_prefix"] == key[..12])
        .unwrap_or_else(|| panic!("no key with prefix {} in {lines:?}", &key[..12]));
    id_of(line)
}

/// Calls `api_keys.list` with `key` (an operation every key in these tests may call).
async fn use_key(s: &TestGateway, key: &str) -> Reply {
    s.post(&op_path(LIST), Some(key), &json!({})).await
}

/// Calls `api_keys.list` with `key` and `X-Forwarded-For: xff`.
async fn use_key_via(s: &TestGateway, key: &str, xff: &str) -> Reply {
    s.request(Method::POST, &op_path(LIST), Some(key))
        .header("x-forwarded-for", xff)
        .json(&json!({}))
        .send()
        .await
}

/// Calls `api_keys.list` with `key` from the client address `ip`.
async fn use_key_from(s: &TestGateway, key: &str, ip: &str) -> Reply {
    s.request(Method::POST, &op_path(LIST), Some(key))
        .from(ip.parse::<IpAddr>().unwrap())
        .json(&json!({}))
        .send()
        .await
}

/// The ids `list {status}` returns, as a sorted list.
async fn ids_with_status(s: &TestGateway, token: &str, status: &str) -> Vec<String> {
    let lines = s.list(token, json!({ "status": status })).await;
    for line in &lines {
        assert_eq!(line["status"], status, "{line}");
    }
    let mut ids: Vec<String> = lines.iter().map(id_of).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The gateway's clock, in seconds since the epoch.
fn now(s: &TestGateway) -> i64 {
    s.clock().now().unix()
}

/// A key minted in the store (as `opgate admin create-key` does) that expires at `at`.
async fn key_expiring_at(s: &TestGateway, perms: &[&str], at: i64) -> String {
    s.create_key_with("default", perms, |k| k.expires_at = Some(Timestamp(at)))
        .await
}

// ---------------------------------------------------------------------------------------------------------
// rotate

#[tokio::test]
async fn rotate_through_both_paths_replaces_the_key_and_the_old_one_works_for_its_grace() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let mut olds = Vec::new();
    let mut news = Vec::new();
    for path in both_paths(ROTATE) {
        let (old_key, old_id) = make(
            &s,
            &admin,
            json!({
                "name": format!("rotated via {path}"),
                "description": "to be replaced",
                "permissions": [READ, WRITE],
                "rate_limit": 77,
                "allowed_ips": ["127.0.0.0/8", "::1"],
            }),
        )
        .await;
        let old = s.get(&admin, &old_id).await;
        s.call_ok(LIST, &old_key, json!({})).await;

        let reply = s
            .post(
                &path,
                Some(&admin),
                &json!({ "key_id": old_id, "grace_period_seconds": 2 }),
            )
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let out = reply.json();
        let mut top: Vec<&String> = out.as_object().unwrap().keys().collect();
        top.sort();
        assert_eq!(
            top,
            ["grace_expires_at", "key", "key_details", "old_key_id"],
            "{out}"
        );
        let new_key = assert_secret(&out["key"]);
        assert_ne!(new_key, old_key);
        let d = &out["key_details"];
        assert_eq!(assert_details(d), "active", "{d}");
        let new_id = id_of(d);
        assert_ne!(new_id, old_id);
        assert_eq!(out["old_key_id"], old_id.as_str());
        assert_eq!(d["key_prefix"], new_key[..12]);
        for same in [
            "name",
            "description",
            "permissions",
            "rate_limit",
            "allowed_ips",
            "org_id",
        ] {
            assert_eq!(d[same], old[same], "{same}: {d} vs {old}");
        }
        for unset in [
            "revoked_at",
            "expires_at",
            "last_used_at",
            "replaced_by_key_id",
            "grace_expires_at",
        ] {
            assert!(d[unset].is_null(), "{unset}: {d}");
        }
        let grace = rfc3339_unix(out["grace_expires_at"].as_str().expect("grace_expires_at"));
        assert_eq!(grace, now(&s) + 2, "grace = now + 2 s: {out}");

        // The old key's metadata records the rotation.
        let o = s.get(&admin, &old_id).await;
        assert_eq!(assert_details(&o), "rotating", "{o}");
        assert_eq!(o["replaced_by_key_id"], new_id.as_str());
        assert_eq!(o["grace_expires_at"], out["grace_expires_at"]);
        assert!(o["revoked_at"].is_null());

        // Inside the grace both keys work; rotating the old key again is a conflict.
        s.call_ok(LIST, &old_key, json!({})).await;
        s.call_ok(LIST, &new_key, json!({})).await;
        s.post(&op_path(ROTATE), Some(&admin), &json!({ "key_id": old_id }))
            .await
            .error_with(409, "conflict", &["rotating"]);
        olds.push((old_key, old_id, grace));
        news.push((new_key, new_id));
    }

    // One second before the grace ends the old keys still work; at its end they fail and read as expired,
    // while the new keys go on working.
    s.advance(Duration::from_secs(1));
    for (old_key, old_id, _) in &olds {
        s.call_ok(LIST, old_key, json!({})).await;
        assert_eq!(assert_details(&s.get(&admin, old_id).await), "rotating");
    }
    s.advance(Duration::from_secs(1));
    for ((old_key, old_id, grace), (new_key, new_id)) in olds.iter().zip(&news) {
        for path in both_paths(LIST) {
            s.post(&path, Some(old_key), &json!({})).await.error_with(
                401,
                "unauthenticated",
                &["grace period ended", &unix_rfc3339(*grace)],
            );
        }
        let o = s.get(&admin, old_id).await;
        assert_eq!(assert_details(&o), "expired", "{o}");
        assert_eq!(o["replaced_by_key_id"], new_id.as_str());
        s.call_ok(LIST, new_key, json!({})).await;
        assert_eq!(assert_details(&s.get(&admin, new_id).await), "active");
        // An expired key cannot be rotated either; the new one can.
        s.post(&op_path(ROTATE), Some(&admin), &json!({ "key_id": old_id }))
            .await
            .error_with(409, "conflict", &["expired"]);
    }
    let (new_key, new_id) = &news[0];
    let again = s
        .call_ok(ROTATE, &admin, json!({ "key_id": new_id }))
        .await
        .json();
    // The default grace is 24 hours.
    let grace = rfc3339_unix(again["grace_expires_at"].as_str().unwrap());
    assert_eq!(grace, now(&s) + 86_400, "{again}");
    s.call_ok(LIST, new_key, json!({})).await;
    s.call_ok(LIST, &assert_secret(&again["key"]), json!({}))
        .await;
}

#[tokio::test]
async fn rotate_with_zero_grace_ends_the_old_key_at_once() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (old_key, old_id) = make(&s, &admin, json!({ "name": "now" })).await;
    s.call_ok(LIST, &old_key, json!({})).await; // cached
    let out = s
        .call_ok(
            ROTATE,
            &admin,
            json!({ "key_id": old_id, "grace_period_seconds": 0 }),
        )
        .await
        .json();
    use_key(&s, &old_key)
        .await
        .error_with(401, "unauthenticated", &["grace period ended"]);
    let o = s.get(&admin, &old_id).await;
    assert_eq!(assert_details(&o), "expired", "{o}");
    assert_eq!(o["grace_expires_at"], out["grace_expires_at"]);
    s.call_ok(LIST, &assert_secret(&out["key"]), json!({}))
        .await;
}

#[tokio::test]
async fn rotate_refuses_revoked_unknown_foreign_out_of_range_and_unauthorized_requests() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();

    // A revoked key cannot be rotated.
    let (_, revoked_id) = make(&s, &admin, json!({ "name": "gone" })).await;
    s.revoke(&admin, &revoked_id).await;
    for path in both_paths(ROTATE) {
        s.post(&path, Some(&admin), &json!({ "key_id": revoked_id }))
            .await
            .error_with(409, "conflict", &["revoked"]);
    }

    // Unknown ids and another organization's keys are not found.
    let b_key = s.create_key("b", &[READ, WRITE]).await;
    let b_id = id_by_secret(&s, &b_key, &b_key).await;
    for id in ["key_00000000000000000000000000", b_id.as_str()] {
        for path in both_paths(ROTATE) {
            s.post(&path, Some(&admin), &json!({ "key_id": id }))
                .await
                .error_with(404, "not_found", &["key_id", id]);
        }
    }
    // ... and untouched: b's key still works and is still active.
    s.call_ok(LIST, &b_key, json!({})).await;
    assert_eq!(s.get(&b_key, &b_id).await["status"], "active");

    // grace_period_seconds is 0..=2592000.
    let (key, id) = make(&s, &admin, json!({ "name": "ranged" })).await;
    for bad in [json!(2_592_001), json!(-1), json!("60"), json!(1.5)] {
        s.post(
            &op_path(ROTATE),
            Some(&admin),
            &json!({ "key_id": id, "grace_period_seconds": bad }),
        )
        .await
        .error_with(400, "invalid_argument", &["grace_period_seconds"]);
    }
    s.post(
        &op_path(ROTATE),
        Some(&admin),
        &json!({ "key_id": id, "bogus": 1 }),
    )
    .await
    .error_with(400, "invalid_argument", &["unknown field `bogus`"]);
    s.post(&op_path(ROTATE), Some(&admin), &json!({}))
        .await
        .error_with(400, "invalid_argument", &["key_id"]);
    // None of that touched the key.
    assert_eq!(s.get(&admin, &id).await["status"], "active");
    s.call_ok(LIST, &key, json!({})).await;

    // Rotation needs api_keys:write.
    let reader = s.create_key("default", &[READ]).await;
    s.post(&op_path(ROTATE), Some(&reader), &json!({ "key_id": id }))
        .await
        .error_with(403, "permission_denied", &["api_keys:write"]);

    // The longest grace is accepted.
    let out = s
        .call_ok(
            ROTATE,
            &admin,
            json!({ "key_id": id, "grace_period_seconds": 2_592_000 }),
        )
        .await
        .json();
    let grace = rfc3339_unix(out["grace_expires_at"].as_str().unwrap());
    assert_eq!(grace, now(&s) + 2_592_000, "{out}");
    s.call_ok(LIST, &key, json!({})).await;
}

#[tokio::test]
async fn rotate_never_hands_out_more_than_the_caller_holds() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let writer = s.create_key("default", &[READ, WRITE]).await;
    let admin_id = id_by_secret(&s, &admin, &admin).await;
    // Rotating the admin key would mint a `*` secret for a caller that holds only api_keys:*.
    s.post(
        &op_path(ROTATE),
        Some(&writer),
        &json!({ "key_id": admin_id }),
    )
    .await
    .error_with(403, "permission_denied", &["*"]);
    let a = s.get(&admin, &admin_id).await;
    assert_eq!(assert_details(&a), "active", "{a}");
    assert!(a["replaced_by_key_id"].is_null());
    // A key within the caller's own permissions may be rotated.
    let (_, reader_id) = make(&s, &admin, json!({ "name": "r", "permissions": [READ] })).await;
    let out = s
        .call_ok(ROTATE, &writer, json!({ "key_id": reader_id }))
        .await
        .json();
    assert_eq!(out["key_details"]["permissions"], json!([READ]));
}

// ---------------------------------------------------------------------------------------------------------
// expiry

#[tokio::test]
async fn a_key_expires_to_the_second() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let expires = now(&s) + 2;
    let key = key_expiring_at(&s, &[READ], expires).await;
    s.call_ok(LIST, &key, json!({})).await;
    let id = id_by_secret(&s, &admin, &key).await;
    let d = s.get(&admin, &id).await;
    assert_eq!(assert_details(&d), "active", "{d}");
    assert_eq!(d["expires_at"], unix_rfc3339(expires));
    assert!(ids_with_status(&s, &admin, "active").await.contains(&id));
    assert!(!ids_with_status(&s, &admin, "expired").await.contains(&id));

    // One second before: still fine (the key is cached now, which changes nothing).
    s.advance(Duration::from_secs(1));
    s.call_ok(LIST, &key, json!({})).await;
    assert_eq!(s.get(&admin, &id).await["status"], "active");
    // At `expires_at` exactly: refused, through either path.
    s.advance(Duration::from_secs(1));
    for path in both_paths(LIST) {
        s.post(&path, Some(&key), &json!({})).await.error_with(
            401,
            "unauthenticated",
            &["expired at", &unix_rfc3339(expires)],
        );
    }
    let d = s.get(&admin, &id).await;
    assert_eq!(assert_details(&d), "expired", "{d}");
    assert!(ids_with_status(&s, &admin, "expired").await.contains(&id));
    assert!(!ids_with_status(&s, &admin, "active").await.contains(&id));
    // Expired keys are still listed by default (only revoked ones are hidden).
    assert!(s.list_ids(&admin, json!({})).await.contains(&id));
    // A key created over the API with `expires_in_days` ends the same way, to the second.
    let (days, days_id) = make(
        &s,
        &admin,
        json!({ "name": "a day", "permissions": [READ], "expires_in_days": 1 }),
    )
    .await;
    s.advance(Duration::from_secs(86_399));
    s.call_ok(LIST, &days, json!({})).await;
    s.advance(Duration::from_secs(1));
    use_key(&s, &days)
        .await
        .error_with(401, "unauthenticated", &["expired at"]);
    assert_eq!(s.get(&admin, &days_id).await["status"], "expired");
}

#[tokio::test]
async fn create_key_takes_an_exact_expiry_with_any_offset() {
    // `opgate admin create-key` works on the data directory of a running gateway.
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let key = create_key_in_with(
        s.data_dir(),
        "default",
        &[READ],
        &["--expires-at", "2126-11-25T19:00:00+01:00"],
    );
    let id = id_by_secret(&s, &admin, &key).await;
    assert_eq!(
        s.get(&admin, &id).await["expires_at"],
        "2126-11-25T18:00:00Z"
    );
    s.call_ok(LIST, &key, json!({})).await;
}

// ---------------------------------------------------------------------------------------------------------
// allowed IPs

#[tokio::test]
async fn allowed_ips_use_the_socket_peer_without_trusted_proxies() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let cases: [(&[&str], bool); 4] = [
        (&["127.0.0.1"], true),
        (&["10.0.0.0/8"], false),
        (&["::1", "127.0.0.0/8"], true),
        (&["203.0.113.0/24"], false),
    ];
    for (allowed, works) in cases {
        let (key, _) = make(&s, &admin, json!({ "name": "ip", "allowed_ips": allowed })).await;
        // From another peer address the answer turns around for the range entries.
        let elsewhere = use_key_from(&s, &key, "10.1.2.3").await;
        if allowed.contains(&"10.0.0.0/8") {
            assert_eq!(elsewhere.status, 200, "{allowed:?}: {}", elsewhere.text());
        } else {
            elsewhere.error_with(403, "permission_denied", &["10.1.2.3"]);
        }
        // X-Forwarded-For from a peer that is not a trusted proxy is ignored.
        for reply in [
            use_key(&s, &key).await,
            use_key_via(&s, &key, "203.0.113.5").await,
        ] {
            if works {
                assert_eq!(reply.status, 200, "{allowed:?}: {}", reply.text());
            } else {
                reply.error_with(403, "permission_denied", &["127.0.0.1"]);
            }
        }
    }
    // A bad entry is refused, naming it.
    for path in both_paths(CREATE) {
        s.post(
            &path,
            Some(&admin),
            &json!({ "name": "n", "allowed_ips": ["127.0.0.1", "not-an-ip"] }),
        )
        .await
        .error_with(400, "invalid_argument", &["allowed_ips[1]", "not-an-ip"]);
    }
}

#[tokio::test]
async fn admin_create_key_takes_allowed_ips() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let fenced = create_key_in_with(
        s.data_dir(),
        "default",
        &[READ],
        &["--allowed-ips", "10.0.0.0/8,::1"],
    );
    let id = id_by_secret(&s, &admin, &fenced).await;
    assert_eq!(
        s.get(&admin, &id).await["allowed_ips"],
        json!(["10.0.0.0/8", "::1"])
    );
    use_key(&s, &fenced)
        .await
        .error_with(403, "permission_denied", &["127.0.0.1"]);
    for ip in ["10.9.8.7", "::1"] {
        assert_eq!(use_key_from(&s, &fenced, ip).await.status, 200, "{ip}");
    }
    let local = create_key_in_with(
        s.data_dir(),
        "default",
        &[READ],
        &["--allowed-ips", "127.0.0.1,2001:db8::/32"],
    );
    s.call_ok(LIST, &local, json!({})).await;
    let id = id_by_secret(&s, &admin, &local).await;
    assert_eq!(
        s.get(&admin, &id).await["allowed_ips"],
        json!(["127.0.0.1", "2001:db8::/32"])
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_the_client() {
    let s = TestGateway::start_with(|setup| {
        setup.config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let admin = s.admin_key().to_owned();
    let (net, net_id) = make(
        &s,
        &admin,
        json!({ "name": "net", "allowed_ips": ["203.0.113.0/24"] }),
    )
    .await;
    let (v6, _) = make(
        &s,
        &admin,
        json!({ "name": "v6", "allowed_ips": ["2001:db8::/32"] }),
    )
    .await;
    let (exact, _) = make(
        &s,
        &admin,
        json!({ "name": "exact", "allowed_ips": ["203.0.113.7"] }),
    )
    .await;
    #[rustfmt::skip]
    let cases: [(&str, &str, Result<(), &str>); 11] = [
        (&net, "203.0.113.5", Ok(())),
        (&net, "198.51.100.1", Err("198.51.100.1")),
        (&net, "203.0.113.5, 198.51.100.1", Err("198.51.100.1")),
        (&net, "198.51.100.1, 203.0.113.5", Ok(())),
        // Trusted hops on the right are skipped.
        (&net, "203.0.113.5, 127.0.0.1", Ok(())),
        (&v6, "2001:db8::7", Ok(())),
        (&v6, "2001:db9::1", Err("2001:db9::1")),
        (&v6, "203.0.113.5", Err("203.0.113.5")),
        (&exact, "203.0.113.7", Ok(())),
        (&exact, "203.0.113.8", Err("203.0.113.8")),
        (&exact, "203.0.113.5, 203.0.113.7", Ok(())),
    ];
    for (key, xff, want) in cases {
        let reply = use_key_via(&s, key, xff).await;
        match want {
            Ok(()) => assert_eq!(reply.status, 200, "{xff}: {}", reply.text()),
            Err(addr) => {
                reply.error_with(403, "permission_denied", &[addr]);
            }
        }
    }
    // Without X-Forwarded-For the client is the proxy itself.
    use_key(&s, &net)
        .await
        .error_with(403, "permission_denied", &["127.0.0.1"]);
    // A peer that is not a trusted proxy is the client, whatever it forwards.
    s.request(Method::POST, &op_path(LIST), Some(&net))
        .from("198.51.100.9".parse().unwrap())
        .header("x-forwarded-for", "203.0.113.5")
        .json(&json!({}))
        .send()
        .await
        .error_with(403, "permission_denied", &["198.51.100.9"]);
    // The forwarded address is what last-used records.
    s.flush_usage().await;
    let d = s.get(&admin, &net_id).await;
    assert_eq!(d["last_used_ip"], "203.0.113.5", "{d}");
}

// ---------------------------------------------------------------------------------------------------------
// update

#[tokio::test]
async fn update_narrows_permissions_effective_from_the_very_next_request() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (key, id) = make(
        &s,
        &admin,
        json!({ "name": "rw", "permissions": [READ, WRITE] }),
    )
    .await;
    s.create(&key, json!({ "name": "made while rw" })).await; // cached, with write
    for path in both_paths(UPDATE) {
        let reply = s
            .post(
                &path,
                Some(&admin),
                &json!({ "key_id": id, "permissions": [READ] }),
            )
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let d = reply.json();
        assert_eq!(assert_details(&d), "active");
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["permissions"], json!([READ]));
        assert_eq!(d["name"], "rw");
    }
    s.post(&op_path(CREATE), Some(&key), &json!({ "name": "x" }))
        .await
        .error_with(403, "permission_denied", &["api_keys:write"]);
    s.call_ok(LIST, &key, json!({})).await;
    assert_eq!(s.get(&admin, &id).await["permissions"], json!([READ]));
}

#[tokio::test]
async fn update_never_widens_a_key_nor_grants_beyond_the_caller() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    // Widening: a read-only key cannot be given write, not even by the admin.
    let (reader, reader_id) = make(&s, &admin, json!({ "name": "r", "permissions": [READ] })).await;
    for perms in [json!([WRITE]), json!([READ, WRITE]), json!(["*"])] {
        s.post(
            &op_path(UPDATE),
            Some(&admin),
            &json!({ "key_id": reader_id, "permissions": perms }),
        )
        .await
        .error_with(403, "permission_denied", &["permissions"]);
    }
    assert_eq!(
        s.get(&admin, &reader_id).await["permissions"],
        json!([READ])
    );
    s.post(&op_path(CREATE), Some(&reader), &json!({ "name": "x" }))
        .await
        .error_with(403, "permission_denied", &[]);

    // Beyond the caller: a writer cannot set `*`, even on a key that holds it.
    let writer = s.create_key("default", &[WRITE, READ]).await;
    let (_, star_id) = make(&s, &admin, json!({ "name": "star", "permissions": ["*"] })).await;
    s.post(
        &op_path(UPDATE),
        Some(&writer),
        &json!({ "key_id": star_id, "permissions": ["*"] }),
    )
    .await
    .error_with(403, "permission_denied", &["`*`"]);
    assert_eq!(s.get(&admin, &star_id).await["permissions"], json!(["*"]));

    // Update needs api_keys:write.
    s.post(
        &op_path(UPDATE),
        Some(&reader),
        &json!({ "key_id": reader_id, "name": "self" }),
    )
    .await
    .error_with(403, "permission_denied", &["api_keys:write"]);
}

#[tokio::test]
async fn update_changes_only_the_given_fields_and_null_clears() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (key, id) = make(
        &s,
        &admin,
        json!({
            "name": "before",
            "description": "some words",
            "permissions": [READ],
            "rate_limit": 100,
            "allowed_ips": ["127.0.0.0/8"],
        }),
    )
    .await;
    let before = s.get(&admin, &id).await;

    let d = s
        .call_ok(
            UPDATE,
            &admin,
            json!({ "key_id": id, "description": null, "rate_limit": null }),
        )
        .await
        .json();
    assert_details(&d);
    assert!(d["description"].is_null(), "{d}");
    assert!(d["rate_limit"].is_null(), "{d}");
    for same in [
        "name",
        "permissions",
        "allowed_ips",
        "key_prefix",
        "created_at",
        "created_by",
        "expires_at",
    ] {
        assert_eq!(d[same], before[same], "{same}: {d}");
    }
    let got = s.get(&admin, &id).await;
    assert_eq!(
        stable(&got),
        stable(&d),
        "get agrees with what update returned"
    );
    assert!(got["description"].is_null() && got["rate_limit"].is_null());

    let d = s
        .call_ok(
            UPDATE,
            &admin,
            json!({ "key_id": id, "name": "after", "description": "new words", "rate_limit": 5 }),
        )
        .await
        .json();
    assert_eq!(
        (&d["name"], &d["description"], &d["rate_limit"]),
        (&json!("after"), &json!("new words"), &json!(5))
    );
    assert_eq!(d["permissions"], json!([READ]));
    assert_eq!(d["allowed_ips"], json!(["127.0.0.0/8"]));
    // An update with nothing to change changes nothing.
    let same = s
        .call_ok(UPDATE, &admin, json!({ "key_id": id }))
        .await
        .json();
    assert_eq!(stable(&same), stable(&d));
    s.call_ok(LIST, &key, json!({})).await;
}

#[tokio::test]
async fn update_allowed_ips_takes_effect_on_the_very_next_request() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (key, id) = make(&s, &admin, json!({ "name": "fence" })).await;
    s.call_ok(LIST, &key, json!({})).await; // cached
    let d = s
        .call_ok(
            UPDATE,
            &admin,
            json!({ "key_id": id, "allowed_ips": ["10.0.0.0/8"] }),
        )
        .await
        .json();
    assert_eq!(d["allowed_ips"], json!(["10.0.0.0/8"]));
    use_key(&s, &key)
        .await
        .error_with(403, "permission_denied", &["127.0.0.1"]);
    // `null` and `[]` both allow any address again.
    for open in [json!(null), json!([])] {
        s.call_ok(
            UPDATE,
            &admin,
            json!({ "key_id": id, "allowed_ips": ["10.0.0.0/8"] }),
        )
        .await;
        use_key(&s, &key).await.error(403, "permission_denied");
        let d = s
            .call_ok(UPDATE, &admin, json!({ "key_id": id, "allowed_ips": open }))
            .await
            .json();
        assert_eq!(d["allowed_ips"], json!([]), "{open}");
        s.call_ok(LIST, &key, json!({})).await;
    }
    // An entry naming the client's own address lets it in at once, too.
    s.call_ok(
        UPDATE,
        &admin,
        json!({ "key_id": id, "allowed_ips": ["127.0.0.1"] }),
    )
    .await;
    s.call_ok(LIST, &key, json!({})).await;
}

#[tokio::test]
async fn update_refuses_unknown_foreign_and_invalid_requests() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (_, id) = make(&s, &admin, json!({ "name": "target", "rate_limit": 9 })).await;
    let b_key = s.create_key("b", &[READ, WRITE]).await;
    let b_id = id_by_secret(&s, &b_key, &b_key).await;
    for missing in ["key_00000000000000000000000000", b_id.as_str()] {
        for body in [
            json!({ "key_id": missing, "name": "x" }),
            json!({ "key_id": missing, "permissions": [READ] }),
        ] {
            for path in both_paths(UPDATE) {
                s.post(&path, Some(&admin), &body).await.error_with(
                    404,
                    "not_found",
                    &["key_id", missing],
                );
            }
        }
    }
    // b's key is untouched.
    let b = s.get(&b_key, &b_id).await;
    assert_eq!(b["name"], "test-key");
    assert_eq!(b["permissions"], json!([READ, WRITE]));

    #[rustfmt::skip]
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({ "key_id": id, "bogus": 1 }), vec!["unknown field `bogus`"]),
        (json!({ "name": "x" }), vec!["missing field `key_id`"]),
        (json!({ "key_id": id, "allowed_ips": ["10.0.0.1", "not-an-ip"] }), vec!["allowed_ips", "not-an-ip"]),
        (json!({ "key_id": id, "allowed_ips": ["10.0.0.0/33"] }), vec!["allowed_ips", "10.0.0.0/33"]),
        (json!({ "key_id": id, "rate_limit": 0 }), vec!["rate_limit"]),
        (json!({ "key_id": id, "rate_limit": 1_000_001 }), vec!["rate_limit"]),
        (json!({ "key_id": id, "rate_limit": "fast" }), vec!["rate_limit"]),
        (json!({ "key_id": id, "name": "" }), vec!["name"]),
        (json!({ "key_id": id, "permissions": ["Bad"] }), vec!["permissions[0]", "not a scope"]),
        (json!({ "key_id": id, "description": "d".repeat(1025) }), vec!["description"]),
    ];
    for (body, parts) in &cases {
        let reply = s.post(&op_path(UPDATE), Some(&admin), body).await;
        let message = reply.error(400, "invalid_argument");
        for part in parts {
            assert!(message.contains(part), "{body}: {message:?} lacks {part:?}");
        }
    }
    let d = s.get(&admin, &id).await;
    assert_eq!(d["rate_limit"], 9, "bad updates change nothing: {d}");
    assert_eq!(d["name"], "target");
    assert_eq!(d["allowed_ips"], json!([]));
}

// ---------------------------------------------------------------------------------------------------------
// last used

#[tokio::test]
async fn last_use_is_recorded_with_address_and_user_agent_and_survives_a_restart() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (key, id) = make(&s, &admin, json!({ "name": "used" })).await;
    let fresh = s.get(&admin, &id).await;
    assert_details(&fresh);
    for f in ["last_used_at", "last_used_ip", "last_used_user_agent"] {
        assert!(fresh[f].is_null(), "{f}: {fresh}");
    }

    s.advance(Duration::from_secs(7));
    let used_at = now(&s);
    let reply = s
        .request(Method::POST, &op_path(LIST), Some(&key))
        .header("user-agent", "lifecycle-test/1.0")
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Kept in memory until the flush (every second in a server).
    assert!(s.get(&admin, &id).await["last_used_at"].is_null());
    s.flush_usage().await;
    let d = s.get(&admin, &id).await;
    assert_eq!(d["last_used_at"], unix_rfc3339(used_at), "{d}");
    assert_eq!(d["last_used_ip"], "127.0.0.1", "{d}");
    assert_eq!(d["last_used_user_agent"], "lifecycle-test/1.0", "{d}");
    let listed = s.list(&admin, json!({})).await;
    let line = listed
        .iter()
        .find(|l| l["id"] == id.as_str())
        .expect("listed");
    for f in ["last_used_at", "last_used_ip", "last_used_user_agent"] {
        assert_eq!(line[f], d[f], "{f}: {line}");
    }

    s.restart().await;
    let after = s.get(&admin, &id).await;
    for f in ["last_used_at", "last_used_ip", "last_used_user_agent"] {
        assert_eq!(after[f], d[f], "{f} after restart: {after}");
    }
}

#[tokio::test]
async fn last_use_is_flushed_on_shutdown_and_long_user_agents_are_cut() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (key, id) = make(&s, &admin, json!({ "name": "last-second" })).await;
    let long = "a".repeat(300);
    let reply = s
        .request(Method::POST, &op_path(LIST), Some(&key))
        .header("user-agent", &long)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Straight to shutdown: the pending use must be written on the way out.
    s.restart().await;
    let d = s.get(&admin, &id).await;
    assert!(!d["last_used_at"].is_null(), "{d}");
    assert_eq!(d["last_used_ip"], "127.0.0.1");
    assert_eq!(d["last_used_user_agent"], long[..256], "{d}");
}

#[tokio::test]
async fn failed_requests_do_not_count_as_use() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let (fenced, fenced_id) = make(
        &s,
        &admin,
        json!({ "name": "fenced", "allowed_ips": ["10.0.0.0/8"] }),
    )
    .await;
    let (marker, marker_id) = make(&s, &admin, json!({ "name": "marker" })).await;
    s.call_ok(LIST, &marker, json!({})).await;
    use_key(&s, &fenced).await.error(403, "permission_denied");
    // After a flush the marker's use is written; a recorded refused use would be written with it.
    s.flush_usage().await;
    assert!(!s.get(&admin, &marker_id).await["last_used_at"].is_null());
    let d = s.get(&admin, &fenced_id).await;
    assert!(d["last_used_at"].is_null(), "{d}");
}

// ---------------------------------------------------------------------------------------------------------
// status

#[tokio::test]
async fn every_status_is_reported_and_filters_the_list() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let admin_id = id_by_secret(&s, &admin, &admin).await;
    let (_, active_id) = make(&s, &admin, json!({ "name": "active" })).await;
    let (_, revoked_id) = make(&s, &admin, json!({ "name": "revoked" })).await;
    s.revoke(&admin, &revoked_id).await;
    let (_, rotating_id) = make(&s, &admin, json!({ "name": "rotating" })).await;
    let rotated = s
        .call_ok(ROTATE, &admin, json!({ "key_id": rotating_id }))
        .await
        .json();
    let rotated_id = id_of(&rotated["key_details"]);
    let (_, graceless_id) = make(&s, &admin, json!({ "name": "graceless" })).await;
    let replaced = s
        .call_ok(
            ROTATE,
            &admin,
            json!({ "key_id": graceless_id, "grace_period_seconds": 0 }),
        )
        .await
        .json();
    let replaced_id = id_of(&replaced["key_details"]);
    let past = key_expiring_at(&s, &[READ], rfc3339_unix("2020-01-01T00:00:00Z")).await;
    let past_id = id_by_secret(&s, &admin, &past).await;
    use_key(&s, &past).await.error_with(
        401,
        "unauthenticated",
        &["expired at 2020-01-01T00:00:00Z"],
    );
    // A key of another organization never shows up.
    s.create_key("b", &[READ]).await;

    let want: [(&str, Vec<&String>); 4] = [
        (
            "active",
            vec![&admin_id, &active_id, &rotated_id, &replaced_id],
        ),
        ("revoked", vec![&revoked_id]),
        ("rotating", vec![&rotating_id]),
        ("expired", vec![&graceless_id, &past_id]),
    ];
    for (status, ids) in &want {
        for path in both_paths(LIST) {
            let reply = s
                .post(&path, Some(&admin), &json!({ "status": status }))
                .await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let lines = reply.lines();
            let got: Vec<String> = lines.iter().map(id_of).collect();
            let created: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            assert_eq!(got, created, "{path} status {status}: oldest first");
            for line in &lines {
                assert_eq!(assert_details(line), *status, "{line}");
            }
        }
        for id in ids {
            assert_eq!(assert_details(&s.get(&admin, id).await), *status, "{id}");
        }
    }
    // `status` wins over include_revoked; without it only revoked keys are hidden.
    assert_eq!(
        ids_with_status(&s, &admin, "active").await,
        sorted(&want[0].1)
    );
    let revoked_only = s
        .list(
            &admin,
            json!({ "status": "revoked", "include_revoked": false }),
        )
        .await;
    assert_eq!(revoked_only.len(), 1);
    let default = s.list_ids(&admin, json!({})).await;
    assert_eq!(default.len(), 7, "{default:?}");
    assert!(!default.contains(&revoked_id));
    assert_eq!(
        s.list_ids(&admin, json!({ "include_revoked": true }))
            .await
            .len(),
        8
    );
    // A page of a filtered list.
    assert_eq!(
        s.list_ids(&admin, json!({ "status": "active", "limit": 2 }))
            .await,
        vec![admin_id.clone(), active_id.clone()]
    );
    assert_eq!(
        s.list_ids(&admin, json!({ "status": "active", "after_id": active_id }))
            .await,
        vec![rotated_id.clone(), replaced_id.clone()]
    );

    for bad in ["bogus", "ACTIVE", ""] {
        for path in both_paths(LIST) {
            s.post(&path, Some(&admin), &json!({ "status": bad }))
                .await
                .error_with(400, "invalid_argument", &["status"]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// get

#[tokio::test]
async fn get_through_both_paths_returns_the_metadata_never_the_secret() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let out = s
        .create(
            &admin,
            json!({
                "name": "seen",
                "description": "d",
                "permissions": [READ],
                "rate_limit": 10,
                "allowed_ips": ["127.0.0.1"],
            }),
        )
        .await;
    let key = assert_secret(&out["key"]);
    let id = id_of(&out["key_details"]);
    let reader = s.create_key("default", &[READ]).await;
    for path in both_paths(GET) {
        for token in [&admin, &reader, &key] {
            let reply = s.post(&path, Some(token), &json!({ "key_id": id })).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert!(!reply.text().contains(&key), "the secret leaked");
            let d = reply.json();
            assert_eq!(assert_details(&d), "active");
            assert!(d.get("key").is_none() && d.get("key_hash").is_none());
            assert_eq!(stable(&d), stable(&out["key_details"]));
            for f in ["revoked_at", "replaced_by_key_id", "grace_expires_at"] {
                assert!(d[f].is_null(), "{f}: {d}");
            }
        }
    }
    // A revoked key can still be looked at.
    s.revoke(&admin, &id).await;
    let d = s.get(&admin, &id).await;
    assert_eq!(assert_details(&d), "revoked");
    assert!(!d["revoked_at"].is_null());

    // Unknown ids and other organizations' keys are not found.
    let b_key = s.create_key("b", &[READ]).await;
    let b_id = id_by_secret(&s, &b_key, &b_key).await;
    let admin_id = id_by_secret(&s, &admin, &admin).await;
    for (token, missing) in [
        (&admin, "key_00000000000000000000000000"),
        (&admin, b_id.as_str()),
        (&b_key, admin_id.as_str()),
        (&b_key, id.as_str()),
    ] {
        for path in both_paths(GET) {
            s.post(&path, Some(token), &json!({ "key_id": missing }))
                .await
                .error_with(404, "not_found", &["key_id", missing]);
        }
    }
    for (body, part) in [
        (json!({}), "missing field `key_id`"),
        (json!({ "key_id": "" }), "key_id"),
        (json!({ "key_id": id, "x": 1 }), "unknown field `x`"),
    ] {
        s.post(&op_path(GET), Some(&admin), &body).await.error_with(
            400,
            "invalid_argument",
            &[part],
        );
    }
    // get needs api_keys:read.
    let other = s.create_key("default", &["audit:read"]).await;
    s.post(&op_path(GET), Some(&other), &json!({ "key_id": id }))
        .await
        .error_with(403, "permission_denied", &["api_keys:read"]);
}
