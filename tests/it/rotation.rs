//! Scheduled rotation end to end, on the gateway's clock (a test moves it by days): the new secret goes to the
//! key's rotation webhook, signed with the key's own rotation secret; only a 2xx answer starts the old key's
//! grace period; a webhook that never answers leaves the old key working and revokes the new one. Expiry
//! notices go out 7 days and 1 day ahead, once each.

use std::sync::Arc;
use std::time::Duration;

use crate::support::db::Db;
use crate::support::receiver::{Behaviour, Receiver};
use crate::support::{eventually, id_of, op_path, TestGateway};
use opgate::webhooks::guard::SystemResolver;
use opgate::webhooks::signature;
use opgate::webhooks::DispatchConfig;
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(86_400);

fn quick() -> DispatchConfig {
    DispatchConfig {
        policy: opgate::webhooks::guard::Policy {
            allow_private: true,
            allow_insecure: false,
        },
        attempt_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        retry_delays: vec![Duration::from_secs(5), Duration::from_secs(5)],
        max_in_flight: 4,
    }
}

async fn whoami(s: &TestGateway, token: &str) -> crate::support::Reply {
    s.post(&op_path("auth.whoami"), Some(token), &json!({}))
        .await
}

async fn audit_rows(s: &TestGateway) -> Vec<(String, u16, Option<String>, String)> {
    Db::open(s)
        .await
        .rows(
            "SELECT principal_id, status, error_code, target_id FROM audit_log
             WHERE principal_kind = 'system' ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_u64().unwrap() as u16,
                r[2].as_str().map(str::to_owned),
                r[3].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// How many rotation bodies (new secrets) are still sealed in the outbox.
async fn sealed_left(s: &TestGateway) -> i64 {
    Db::open(s)
        .await
        .count(
            "SELECT count(*) FROM webhook_deliveries WHERE payload_sealed IS NOT NULL",
            &[],
        )
        .await
}

#[tokio::test]
async fn a_key_rotates_itself_and_only_a_delivered_secret_starts_the_grace_period() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(1)).await;
    let created = s
        .create(
            &admin,
            json!({"name": "deploy", "permissions": ["api_keys:read"], "expires_in_days": 90,
                   "rotation_interval_days": 30, "rotation_webhook_url": receiver.url}),
        )
        .await;
    let old_secret = created["key"].as_str().unwrap().to_owned();
    let old = &created["key_details"];
    let old_id = id_of(old);
    let start = s.clock().now().unix();
    assert_eq!(old["rotation_interval_days"], 30);
    assert_eq!(old["rotation_webhook_url"], json!(receiver.url));
    assert_eq!(
        old["next_rotation_at"],
        json!(opgate::core::Timestamp(start + 30 * 86_400).to_rfc3339())
    );

    let scheduler = s.data().scheduler();
    let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
    let _running = dispatcher.spawn();
    // Not due yet: nothing happens.
    assert_eq!(scheduler.run_once().await.unwrap().rotations, 0);
    s.advance(30 * DAY);
    assert_eq!(scheduler.run_once().await.unwrap().rotations, 1);
    // The first attempt fails (500): the rotation is under way, the old key untouched, the new key made.
    receiver.wait_for(1).await;
    let rotating = s.get(&admin, &old_id).await;
    let new_id = rotating["rotating_to_key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&rotating["status"], &rotating["replaced_by_key_id"]),
        (&json!("active"), &Value::Null)
    );
    assert_eq!(whoami(&s, &old_secret).await.status, 200);
    // The new secret waits sealed: it is nowhere in the database in clear.
    let first = receiver.received()[0].json();
    let new_secret = first["data"]["key"].as_str().unwrap().to_owned();
    if s.database_url().is_none() {
        let db = std::fs::read(s.data_dir().join("opgate.db")).unwrap();
        let wal = std::fs::read(s.data_dir().join("opgate.db-wal")).unwrap_or_default();
        for file in [&db, &wal] {
            assert!(!file
                .windows(new_secret.len())
                .any(|w| w == new_secret.as_bytes()));
        }
    } else {
        // PostgreSQL's files are not ours to read: every column that could hold it is searched instead.
        let db = Db::open(&s).await;
        let clear = db
            .count(
                "SELECT (SELECT count(*) FROM webhook_events WHERE strpos(payload, ?1) > 0)
                      + (SELECT count(*) FROM webhook_deliveries
                         WHERE position(convert_to(?1, 'UTF8') in coalesce(payload_sealed, ''::bytea)) > 0
                            OR strpos(coalesce(last_error, ''), ?1) > 0)
                      + (SELECT count(*) FROM api_keys
                         WHERE position(convert_to(?1, 'UTF8') in coalesce(rotation_key_sealed, ''::bytea)) > 0)",
                &[(&new_secret).into()],
            )
            .await;
        assert_eq!(clear, 0);
    }
    // The retry (5 s later on the gateway's clock) is answered: the rotation ends.
    s.advance(Duration::from_secs(7));
    let got = receiver.wait_for(2).await;
    eventually("the rotation ends", Duration::from_secs(10), || async {
        s.get(&admin, &old_id).await["replaced_by_key_id"] == json!(new_id)
    })
    .await;
    // Both attempts carried the same event and secret, signed with the old key's rotation secret: the
    // consumer checks it with the key it holds.
    let rotation_secret = signature::rotation_secret(&old_secret);
    for g in &got {
        signature::verify(
            &rotation_secret,
            g.header("webhook-id"),
            g.header("webhook-timestamp"),
            g.header("webhook-signature"),
            &g.body,
            s.clock().now().unix(),
        )
        .unwrap();
        assert_eq!(g.header("webhook-id"), got[0].header("webhook-id"));
        assert_eq!(g.json()["data"]["key"], json!(new_secret));
    }
    assert_eq!(
        (
            &first["type"],
            &first["data"]["key_id"],
            &first["data"]["old_key_id"]
        ),
        (&json!("api_key.rotation"), &json!(new_id), &json!(old_id))
    );
    let now = s.clock().now().unix();
    let ended = s.get(&admin, &old_id).await;
    assert_eq!(
        (
            &ended["status"],
            &ended["grace_expires_at"],
            &ended["next_rotation_at"]
        ),
        (
            &json!("rotating"),
            &json!(opgate::core::Timestamp(now + 86_400).to_rfc3339()),
            &Value::Null
        )
    );
    let new = s.get(&admin, &new_id).await;
    assert_eq!(
        (
            &new["permissions"],
            &new["rotation_interval_days"],
            &new["created_by"]
        ),
        (&json!(["api_keys:read"]), &json!(30), &json!("scheduler"))
    );
    assert_eq!(
        new["next_rotation_at"],
        json!(opgate::core::Timestamp(now + 30 * 86_400).to_rfc3339())
    );
    // The new key expires when the old one would have: a schedule never extends a key's life.
    assert_eq!(
        new["expires_at"],
        json!(opgate::core::Timestamp(start + 90 * 86_400).to_rfc3339())
    );
    assert_eq!(whoami(&s, &new_secret).await.status, 200);
    assert_eq!(
        whoami(&s, &old_secret).await.status,
        200,
        "inside its grace period"
    );
    s.advance(DAY + Duration::from_secs(1));
    whoami(&s, &old_secret)
        .await
        .error_with(401, "unauthenticated", &["rotated"]);
    assert_eq!(
        audit_rows(&s).await,
        [("scheduler".to_owned(), 200, None, old_id.clone())]
    );
    // The sealed body is erased once the delivery ended.
    assert_eq!(sealed_left(&s).await, 0);
}

#[tokio::test]
async fn a_key_that_became_due_while_the_server_was_down_rotates_on_start() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let old_id = id_of(
        &s.create(
            &admin,
            json!({"name": "k", "rotation_interval_days": 1, "rotation_webhook_url": receiver.url}),
        )
        .await["key_details"],
    );
    s.restart().await;
    s.advance(3 * DAY);
    // The first pass after the start finds it due.
    let pass = s.data().scheduler().run_once().await.unwrap();
    assert_eq!(pass.rotations, 1);
    let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
    let _running = dispatcher.spawn();
    receiver.wait_for(1).await;
    eventually("the rotation ends", Duration::from_secs(10), || async {
        s.get(&admin, &old_id).await["status"] == "rotating"
    })
    .await;
}

#[tokio::test]
async fn a_rotation_webhook_that_never_answers_leaves_the_old_key_working() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let silent = Receiver::start(Behaviour::Hang).await;
    let watcher = Receiver::start(Behaviour::FailFirst(0)).await;
    s.call_ok(
        "webhooks.create",
        &admin,
        json!({"url": watcher.url, "event_types": ["api_key.rotation_failed"]}),
    )
    .await;
    let created = s
        .create(
            &admin,
            json!({"name": "fragile", "rotation_interval_days": 7, "rotation_webhook_url": silent.url}),
        )
        .await;
    let old_secret = created["key"].as_str().unwrap().to_owned();
    let old_id = id_of(&created["key_details"]);
    let scheduler = s.data().scheduler();
    let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
    let _running = dispatcher.spawn();
    s.advance(7 * DAY);
    assert_eq!(scheduler.run_once().await.unwrap().rotations, 1);
    let new_id = s.get(&admin, &old_id).await["rotating_to_key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=3 {
        silent.wait_for(n).await;
        s.advance(Duration::from_secs(7));
    }
    let failed = watcher.wait_for(1).await;
    let event = failed[0].json();
    assert_eq!(event["type"], "api_key.rotation_failed");
    assert_eq!(event["data"]["id"], json!(old_id));
    assert_eq!(event["data"]["revoked_key_id"], json!(new_id));
    assert_eq!(event["data"]["rotation_error"], "timed out after 1 s");
    // The old key works on, untouched; the new one is revoked; the next attempt is in a day.
    assert_eq!(whoami(&s, &old_secret).await.status, 200);
    let old = s.get(&admin, &old_id).await;
    let now = s.clock().now().unix();
    assert_eq!(
        (
            &old["status"],
            &old["rotating_to_key_id"],
            &old["replaced_by_key_id"]
        ),
        (&json!("active"), &Value::Null, &Value::Null)
    );
    let retry_at = opgate::core::Timestamp(now + 86_400).to_rfc3339();
    assert!(
        old["next_rotation_at"].as_str().unwrap() <= retry_at.as_str(),
        "{old}"
    );
    assert_eq!(s.get(&admin, &new_id).await["status"], "revoked");
    assert_eq!(
        audit_rows(&s).await,
        [(
            "scheduler".to_owned(),
            502,
            Some("rotation_webhook_failed".to_owned()),
            old_id
        )]
    );
    // No sealed secret is left behind.
    assert_eq!(sealed_left(&s).await, 0);
}

#[tokio::test]
async fn expiring_keys_are_announced_a_week_and_a_day_ahead_once_each() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let watcher = Receiver::start(Behaviour::FailFirst(0)).await;
    s.call_ok(
        "webhooks.create",
        &admin,
        json!({"url": watcher.url, "event_types": ["api_key.expiring"]}),
    )
    .await;
    let key = id_of(
        &s.create(&admin, json!({"name": "temp", "expires_in_days": 10}))
            .await["key_details"],
    );
    let scheduler = s.data().scheduler();
    let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
    let _running = dispatcher.spawn();
    assert_eq!(scheduler.run_once().await.unwrap().notices, 0);
    s.advance(3 * DAY + Duration::from_secs(1));
    assert_eq!(scheduler.run_once().await.unwrap().notices, 1);
    assert_eq!(scheduler.run_once().await.unwrap().notices, 0, "once");
    s.advance(6 * DAY);
    assert_eq!(scheduler.run_once().await.unwrap().notices, 1);
    assert_eq!(scheduler.run_once().await.unwrap().notices, 0, "once");
    let got = watcher.wait_for(2).await;
    let notices: Vec<(Value, Value)> = got
        .iter()
        .map(|g| {
            (
                g.json()["data"]["id"].clone(),
                g.json()["data"]["expires_within"].clone(),
            )
        })
        .collect();
    assert_eq!(
        notices,
        [(json!(key), json!("7 days")), (json!(key), json!("1 day"))]
    );
}

#[tokio::test]
async fn a_rotation_schedule_needs_a_webhook_it_may_reach() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    s.post(
        &op_path("api_keys.create"),
        Some(&admin),
        &json!({"name": "x", "rotation_interval_days": 30}),
    )
    .await
    .error_with(400, "invalid_argument", &["rotation_webhook_url: required"]);
    s.post(
        &op_path("api_keys.create"),
        Some(&admin),
        &json!({"name": "x", "rotation_interval_days": 0, "rotation_webhook_url": "https://example.com/r"}),
    )
    .await
    .error_with(400, "invalid_argument", &["rotation_interval_days"]);
    s.post(
        &op_path("api_keys.create"),
        Some(&admin),
        &json!({"name": "x", "rotation_interval_days": 30, "rotation_webhook_url": "ftp://example.com/r"}),
    )
    .await
    .error_with(400, "invalid_argument", &["rotation_webhook_url: must be https://"]);
    // Turned on later, and off again.
    let id = id_of(&s.create(&admin, json!({"name": "later"})).await["key_details"]);
    s.post(
        &op_path("api_keys.update"),
        Some(&admin),
        &json!({"key_id": id, "rotation_interval_days": 14}),
    )
    .await
    .error_with(400, "invalid_argument", &["rotation_webhook_url: required"]);
    let on = s
        .call_ok(
            "api_keys.update",
            &admin,
            json!({"key_id": id, "rotation_interval_days": 14,
                   "rotation_webhook_url": "http://127.0.0.1:9/rotate"}),
        )
        .await
        .json();
    let now = s.clock().now().unix();
    assert_eq!(
        on["next_rotation_at"],
        json!(opgate::core::Timestamp(now + 14 * 86_400).to_rfc3339())
    );
    let off = s
        .call_ok(
            "api_keys.update",
            &admin,
            json!({"key_id": id, "rotation_interval_days": null}),
        )
        .await
        .json();
    assert_eq!(
        (&off["rotation_interval_days"], &off["next_rotation_at"]),
        (&Value::Null, &Value::Null)
    );
    // The bootstrap key predates nothing here, but a key without a rotation secret cannot be scheduled.
    Db::open(&s)
        .await
        .execute(
            "UPDATE api_keys SET rotation_key_sealed = NULL WHERE id = ?1",
            &[(&id).into()],
        )
        .await;
    s.post(
        &op_path("api_keys.update"),
        Some(&admin),
        &json!({"key_id": id, "rotation_interval_days": 14}),
    )
    .await
    .error_with(409, "conflict", &["made before scheduled rotation existed"]);
}

#[tokio::test]
async fn scheduling_a_rotation_needs_what_rotating_the_key_needs() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let sa = s
        .call_ok("service_accounts.create", &admin, json!({"name": "bot"}))
        .await
        .json();
    // A key of a service account, with a fence and a limit, expiring in a day ...
    let bot = s
        .create(
            &admin,
            json!({"name": "bot", "service_account_id": id_of(&sa), "permissions": ["api_keys:read", "api_keys:write"],
                   "rate_limit": 5, "allowed_ips": ["127.0.0.1/32"], "expires_in_days": 1}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // ... and a plain workspace key with the same permissions, no limits, no expiry.
    let target = id_of(
        &s.create(
            &admin,
            json!({"name": "target", "key_type": "workspace", "permissions": ["api_keys:read"]}),
        )
        .await["key_details"],
    );
    let schedule = json!({"key_id": target, "rotation_interval_days": 1, "rotation_webhook_url": receiver.url});
    // Rotating it is refused to the bot, so scheduling its rotations to the bot's own URL is too.
    s.post(
        &op_path("api_keys.rotate"),
        Some(&bot),
        &json!({"key_id": target}),
    )
    .await
    .error_with(403, "permission_denied", &["service account"]);
    s.post(&op_path("api_keys.update"), Some(&bot), &schedule)
        .await
        .error_with(403, "permission_denied", &["service account"]);
    // A key with an expiry may not schedule a key that outlives it, even its own environment's.
    let short = s
        .create(
            &admin,
            json!({"name": "short", "permissions": ["api_keys:read", "api_keys:write"], "expires_in_days": 1}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&op_path("api_keys.update"), Some(&short), &schedule)
        .await
        .error_with(403, "permission_denied", &["outlives the caller"]);
    // The admin may; nothing was stored by the refusals.
    assert_eq!(
        s.get(&admin, &target).await["rotation_webhook_url"],
        Value::Null
    );
    s.call_ok("api_keys.update", &admin, schedule).await;
}

#[tokio::test]
async fn a_key_that_cannot_rotate_does_not_hold_up_the_others_and_a_schedule_never_extends_a_life()
{
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let sa = id_of(
        &s.call_ok("service_accounts.create", &admin, json!({"name": "bot"}))
            .await
            .json(),
    );
    // Due first: a key whose service account is then disabled (its replacement cannot be made).
    s.create(
        &admin,
        json!({"name": "stuck", "service_account_id": sa, "rotation_interval_days": 1,
               "rotation_webhook_url": receiver.url}),
    )
    .await;
    s.call_ok(
        "service_accounts.update",
        &admin,
        json!({"service_account_id": sa, "disabled": true}),
    )
    .await;
    s.advance(Duration::from_secs(60));
    let fine = s
        .create(
            &admin,
            json!({"name": "fine", "expires_in_days": 30, "rotation_interval_days": 1,
                   "rotation_webhook_url": receiver.url}),
        )
        .await;
    let expires_at = fine["key_details"]["expires_at"].clone();
    s.advance(DAY);
    let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
    let _running = dispatcher.spawn();
    assert_eq!(s.data().scheduler().run_once().await.unwrap().rotations, 1);
    let got = receiver.wait_for(1).await;
    let data = &got[0].json()["data"];
    assert_eq!(data["old_key_id"], fine["key_details"]["id"]);
    // The replacement expires when the old key would have: a schedule does not extend a key's life.
    assert_eq!(data["expires_at"], expires_at);
    let new_id = data["key_id"].as_str().unwrap().to_owned();
    eventually("the rotation ends", Duration::from_secs(10), || async {
        s.get(&admin, &new_id).await["expires_at"] == expires_at
            && s.get(&admin, &id_of(&fine["key_details"])).await["replaced_by_key_id"]
                == json!(new_id)
    })
    .await;
}

#[tokio::test]
async fn revoking_or_rotating_a_key_cancels_its_rotation_under_way() {
    for manual in [
        "api_keys.revoke",
        "api_keys.rotate",
        "service_accounts.delete",
    ] {
        let s = TestGateway::start().await;
        let admin = s.admin_key().to_owned();
        // The receiver fails first, so the rotation is under way when the key is revoked, rotated by hand, or
        // its service account deleted.
        let receiver = Receiver::start(Behaviour::FailFirst(1)).await;
        let sa = id_of(
            &s.call_ok("service_accounts.create", &admin, json!({"name": "bot"}))
                .await
                .json(),
        );
        let old_id = id_of(
            &s.create(
                &admin,
                json!({"name": "k", "rotation_interval_days": 1, "rotation_webhook_url": receiver.url,
                       "service_account_id": sa}),
            )
            .await["key_details"],
        );
        s.advance(DAY);
        let dispatcher = s.dispatcher(quick(), Arc::new(SystemResolver));
        assert_eq!(s.data().scheduler().run_once().await.unwrap().rotations, 1);
        assert_eq!(dispatcher.run_once().await.unwrap(), 1);
        let first = receiver.wait_for(1).await[0].json();
        let scheduled_id = first["data"]["key_id"].as_str().unwrap().to_owned();
        let scheduled_secret = first["data"]["key"].as_str().unwrap().to_owned();
        // The failed answer to a body holding a secret is kept as its status only (it might echo the secret).
        let errors = Db::open(&s)
            .await
            .rows("SELECT error FROM webhook_attempts", &[])
            .await;
        assert_eq!(
            errors,
            [[json!("HTTP 500 Internal Server Error")]],
            "{manual}"
        );
        let body = match manual {
            "api_keys.rotate" => json!({"key_id": old_id, "grace_period_seconds": 0}),
            "service_accounts.delete" => json!({"service_account_id": sa}),
            _ => json!({"key_id": old_id}),
        };
        s.call_ok(manual, &admin, body).await;
        // The scheduled replacement is revoked, and its webhook is not tried again: its secret is erased.
        assert_eq!(
            s.get(&admin, &scheduled_id).await["status"],
            "revoked",
            "{manual}"
        );
        assert_eq!(whoami(&s, &scheduled_secret).await.status, 401, "{manual}");
        assert_eq!(sealed_left(&s).await, 0, "{manual}");
        s.advance(Duration::from_secs(60));
        assert_eq!(dispatcher.run_once().await.unwrap(), 0, "{manual}");
        assert_eq!(receiver.received().len(), 1, "{manual}");
        let old = s.get(&admin, &old_id).await;
        assert_eq!(old["rotating_to_key_id"], Value::Null, "{manual}");
    }
}
