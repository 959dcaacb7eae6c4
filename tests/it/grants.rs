//! A key never grants more than its granter has — not more permissions, and not fewer restrictions: a
//! rate-limited, address-fenced or expiring caller cannot mint, open up or outlive-rotate a key beyond its own
//! limits, and a key cannot loosen its own restrictions.

use crate::support::{id_of, now_unix, op_path, rfc3339_unix, unix_rfc3339, TestServer};
use serde_json::json;

async fn whoami_id(s: &TestServer, token: &str) -> String {
    id_of(&s.call_ok("auth.whoami", token, json!({})).await.json())
}

#[tokio::test]
async fn a_rate_limited_caller_passes_its_limit_on() {
    let s = TestServer::start();
    let limited = s.create_key_with("default", &["api_keys:*"], &["--rate-limit", "100"]);
    let inherited = s.create(&limited, json!({ "name": "child" })).await;
    assert_eq!(
        inherited["key_details"]["rate_limit"], 100,
        "an omitted limit inherits the caller's"
    );
    let lower = s
        .create(&limited, json!({ "name": "lower", "rate_limit": 10 }))
        .await;
    assert_eq!(lower["key_details"]["rate_limit"], 10);
    s.post(
        &op_path("api_keys.create"),
        Some(&limited),
        &json!({ "name": "higher", "rate_limit": 101 }),
    )
    .await
    .error_with(403, "permission_denied", &["rate_limit", "100"]);
    // Nor can it lift the limit of a key it manages.
    let child = id_of(&inherited["key_details"]);
    s.post(
        &op_path("api_keys.update"),
        Some(&limited),
        &json!({ "key_id": child, "rate_limit": null }),
    )
    .await
    .error_with(403, "permission_denied", &["rate_limit"]);
    let narrowed = s
        .call_ok(
            "api_keys.update",
            &limited,
            json!({ "key_id": child, "rate_limit": 50 }),
        )
        .await;
    assert_eq!(narrowed.json()["rate_limit"], 50);
}

#[tokio::test]
async fn a_key_cannot_loosen_its_own_restrictions() {
    let s = TestServer::start();
    let key = s.create_key_with("default", &["api_keys:*"], &["--rate-limit", "100"]);
    let own = whoami_id(&s, &key).await;
    for change in [
        json!({ "rate_limit": null }),
        json!({ "rate_limit": 1000 }),
        json!({ "allowed_ips": null }),
    ] {
        let mut body = change.clone();
        body["key_id"] = json!(own);
        s.post(&op_path("api_keys.update"), Some(&key), &body)
            .await
            .error_with(403, "permission_denied", &["its own"]);
    }
    // Renaming itself is fine.
    s.call_ok(
        "api_keys.update",
        &key,
        json!({ "key_id": own, "name": "still limited" }),
    )
    .await;
}

#[tokio::test]
async fn a_fenced_caller_keeps_its_keys_inside_the_fence() {
    let s = TestServer::start();
    let fenced = s.create_key_with(
        "default",
        &["api_keys:*"],
        &["--allowed-ips", "127.0.0.0/8"],
    );
    let inherited = s.create(&fenced, json!({ "name": "child" })).await;
    assert_eq!(
        inherited["key_details"]["allowed_ips"],
        json!(["127.0.0.0/8"])
    );
    let inside = s
        .create(
            &fenced,
            json!({ "name": "inside", "allowed_ips": ["127.0.0.1"] }),
        )
        .await;
    assert_eq!(inside["key_details"]["allowed_ips"], json!(["127.0.0.1"]));
    s.post(
        &op_path("api_keys.create"),
        Some(&fenced),
        &json!({ "name": "out", "allowed_ips": ["10.0.0.0/8"] }),
    )
    .await
    .error_with(403, "permission_denied", &["10.0.0.0/8"]);
    let child = id_of(&inherited["key_details"]);
    for open in [json!(null), json!([]), json!(["0.0.0.0/0"])] {
        s.post(
            &op_path("api_keys.update"),
            Some(&fenced),
            &json!({ "key_id": child, "allowed_ips": open }),
        )
        .await
        .error(403, "permission_denied");
    }
}

#[tokio::test]
async fn a_lesser_key_cannot_touch_a_more_powerful_one() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    let admin_id = whoami_id(&s, &admin).await;
    let writer = s.create_key("default", &["api_keys:read", "api_keys:write"]);
    for body in [
        json!({ "key_id": admin_id, "allowed_ips": ["127.0.0.1"] }),
        json!({ "key_id": admin_id, "name": "pwned" }),
    ] {
        s.post(&op_path("api_keys.update"), Some(&writer), &body)
            .await
            .error_with(403, "permission_denied", &["`*`"]);
    }
    s.post(
        &op_path("api_keys.rotate"),
        Some(&writer),
        &json!({ "key_id": admin_id }),
    )
    .await
    .error(403, "permission_denied");
    assert_eq!(s.get(&admin, &admin_id).await["name"], "admin", "unchanged");
}

#[tokio::test]
async fn an_expiring_caller_cannot_mint_or_rotate_past_its_own_expiry() {
    let s = TestServer::start();
    let expires = now_unix() + 3600;
    let expiring = s.create_key_with(
        "default",
        &["api_keys:*"],
        &["--expires-at", &unix_rfc3339(expires)],
    );
    let child = s.create(&expiring, json!({ "name": "child" })).await;
    assert_eq!(
        rfc3339_unix(child["key_details"]["expires_at"].as_str().unwrap()),
        expires
    );
    s.post(
        &op_path("api_keys.create"),
        Some(&expiring),
        &json!({ "name": "long", "expires_in_days": 30 }),
    )
    .await
    .error_with(403, "permission_denied", &["outlive"]);
    // Rotating itself gives a replacement that expires no later than the key it replaces.
    let own = whoami_id(&s, &expiring).await;
    let rotated = s
        .call_ok(
            "api_keys.rotate",
            &expiring,
            json!({ "key_id": own, "grace_period_seconds": 60 }),
        )
        .await;
    let new_expiry = rfc3339_unix(
        rotated.json()["key_details"]["expires_at"]
            .as_str()
            .unwrap(),
    );
    assert!(new_expiry <= expires, "{new_expiry} > {expires}");
}
