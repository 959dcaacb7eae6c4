//! A key never grants more than its granter has — not more permissions, and not fewer restrictions: a
//! rate-limited, address-fenced or expiring caller cannot mint, open up or outlive-rotate a key beyond its own
//! limits, and a key cannot loosen its own restrictions.

use std::time::Duration;

use crate::support::{id_of, op_path, rfc3339_unix, unix_rfc3339, TestGateway};
use opgate::core::Timestamp;
use serde_json::json;

async fn whoami_id(s: &TestGateway, token: &str) -> String {
    s.id_of_key(token).await
}

/// The `expires_at` of `details`, in seconds since the epoch.
fn expiry(details: &serde_json::Value) -> i64 {
    rfc3339_unix(details["expires_at"].as_str().expect("expires_at is set"))
}

#[tokio::test]
async fn a_rate_limited_caller_passes_its_limit_on() {
    let s = TestGateway::start().await;
    let limited = s
        .create_key_with("default", &["api_keys:*"], |k| k.rate_limit = Some(100))
        .await;
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
    let s = TestGateway::start().await;
    let key = s
        .create_key_with("default", &["api_keys:*"], |k| k.rate_limit = Some(100))
        .await;
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
    let s = TestGateway::start().await;
    let fenced = s
        .create_key_with("default", &["api_keys:*"], |k| {
            k.allowed_ips = vec!["127.0.0.0/8".into()]
        })
        .await;
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
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let admin_id = whoami_id(&s, &admin).await;
    let writer = s
        .create_key("default", &["api_keys:read", "api_keys:write"])
        .await;
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
    let s = TestGateway::start().await;
    let expires = s.clock().now().unix() + 3600;
    let expiring = s
        .create_key_with("default", &["api_keys:*"], |k| {
            k.expires_at = Some(Timestamp(expires))
        })
        .await;
    let child = s.create(&expiring, json!({ "name": "child" })).await;
    assert_eq!(
        expiry(&child["key_details"]),
        expires,
        "an omitted expiry inherits the caller's"
    );
    s.post(
        &op_path("api_keys.create"),
        Some(&expiring),
        &json!({ "name": "long", "expires_in_days": 30 }),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["outlive", &unix_rfc3339(expires)],
    );
    // Rotating itself half-way through its life: the replacement would live another hour from now, but a
    // key rotating itself cannot extend its life, so it ends when the old key would have.
    s.advance(Duration::from_secs(1800));
    let own = whoami_id(&s, &expiring).await;
    let rotated = s
        .call_ok(
            "api_keys.rotate",
            &expiring,
            json!({ "key_id": own, "grace_period_seconds": 60 }),
        )
        .await
        .json();
    assert_eq!(expiry(&rotated["key_details"]), expires);
}

#[tokio::test]
async fn a_rotation_keeps_the_keys_lifetime_from_now_within_the_callers() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let t0 = s.clock().now().unix();
    let day = 86_400;
    let made = |name: &str| json!({ "name": name, "permissions": ["api_keys:read"], "expires_in_days": 90 });
    let by_admin = id_of(&s.create(&admin, made("by admin")).await["key_details"]);
    let by_expiring = id_of(&s.create(&admin, made("by an expiring key")).await["key_details"]);
    let expiring = s
        .create_key_with("default", &["api_keys:*"], |k| {
            k.expires_at = Some(Timestamp(t0 + 100 * day))
        })
        .await;
    // Thirty days on, a rotation gives the replacement the old key's 90 days, counted from now ...
    s.advance(Duration::from_secs(30 * day as u64));
    let rotated = s
        .call_ok("api_keys.rotate", &admin, json!({ "key_id": by_admin }))
        .await
        .json();
    assert_eq!(expiry(&rotated["key_details"]), t0 + 120 * day);
    assert_eq!(
        expiry(&s.get(&admin, &by_admin).await),
        t0 + 90 * day,
        "the old key keeps its own expiry"
    );
    // ... but never past the caller's own expiry.
    let rotated = s
        .call_ok(
            "api_keys.rotate",
            &expiring,
            json!({ "key_id": by_expiring }),
        )
        .await
        .json();
    assert_eq!(expiry(&rotated["key_details"]), t0 + 100 * day);
    // A key that never expires stays so when an unexpiring caller rotates it.
    let forever = id_of(&s.create(&admin, json!({ "name": "forever" })).await["key_details"]);
    let rotated = s
        .call_ok("api_keys.rotate", &admin, json!({ "key_id": forever }))
        .await
        .json();
    assert!(rotated["key_details"]["expires_at"].is_null(), "{rotated}");
}
