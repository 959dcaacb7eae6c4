//! Several gateway instances over one PostgreSQL database: a key revoked, rotated or narrowed through one is
//! refused (or narrowed) by every other within a second, though each caches the keys it has seen. These run
//! on the PostgreSQL pass of the suite (`scripts/test-postgres`) and are skipped on SQLite, which is not for
//! fleets.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{id_of, op_path, TestGateway};

/// The most a change may take to reach another instance (the contract's bound).
const PROPAGATION: Duration = Duration::from_secs(1);

/// Polls `whoami` with `token` on `s` until `done` holds for its status and body; returns how long it took.
async fn until(
    s: &TestGateway,
    token: &str,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = s
            .post(&op_path("auth.whoami"), Some(token), &json!({}))
            .await;
        let body = serde_json::from_slice(&reply.body).unwrap_or_default();
        if done(reply.status, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change never arrived: {} {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn revocation_rotation_and_narrowing_reach_every_instance_within_a_second() {
    let a = TestGateway::start().await;
    let Some(b) = a.another_instance().await else {
        return;
    };
    let (_fa, _fb) = (a.follow_changes(), b.follow_changes());
    let admin = a.admin_key().to_owned();
    let created = a
        .create(
            &admin,
            json!({"name": "shared", "permissions": ["api_keys:read", "api_keys:write"]}),
        )
        .await;
    let (key, id) = (
        created["key"].as_str().unwrap().to_owned(),
        id_of(&created["key_details"]),
    );
    // B knows the key, and caches it.
    for _ in 0..3 {
        let reply = b
            .post(&op_path("auth.whoami"), Some(&key), &json!({}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    // Narrowed through A: B's answers narrow.
    a.call_ok(
        "api_keys.update",
        &admin,
        json!({"key_id": id, "permissions": ["api_keys:read"]}),
    )
    .await;
    let narrowed = until(&b, &key, |status, body| {
        status == 200 && body["permissions"] == json!(["api_keys:read"])
    })
    .await;

    // Rotated through A with no grace: the old secret is refused by B, the new one works there.
    let rotated = a
        .call_ok(
            "api_keys.rotate",
            &admin,
            json!({"key_id": id, "grace_period_seconds": 0}),
        )
        .await
        .json();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let rotation = until(&b, &key, |status, _| status == 401).await;
    assert_eq!(
        b.post(&op_path("auth.whoami"), Some(&new_key), &json!({}))
            .await
            .status,
        200
    );

    // Revoked through A: refused by B.
    let new_id = id_of(&rotated["key_details"]);
    b.post(&op_path("auth.whoami"), Some(&new_key), &json!({}))
        .await;
    a.revoke(&admin, &new_id).await;
    let revocation = until(&b, &new_key, |status, _| status == 401).await;

    eprintln!(
        "propagation to another instance: narrowing {narrowed:?}, rotation {rotation:?}, revocation {revocation:?}"
    );
    for (what, took) in [
        ("narrowing", narrowed),
        ("rotation", rotation),
        ("revocation", revocation),
    ] {
        assert!(took < PROPAGATION, "{what} took {took:?}");
    }
}

#[tokio::test]
async fn instances_share_keys_and_the_admin_key_is_minted_once() {
    let a = TestGateway::start().await;
    let Some(b) = a.another_instance().await else {
        return;
    };
    let admin = a.admin_key().to_owned();
    // A key made through one instance works through the other, and both list the same keys.
    let made = b.create(&admin, json!({"name": "from b"})).await;
    let key = made["key"].as_str().unwrap();
    let reply = a.post(&op_path("auth.whoami"), Some(key), &json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        a.list_ids(&admin, json!({})).await,
        b.list_ids(&admin, json!({})).await
    );
}
