//! Webhooks end to end: a real receiver on 127.0.0.1 that checks every signature as a Standard Webhooks
//! library would, one that fails a few times first, one that never answers; the outbox's order per endpoint,
//! retries on the gateway's clock, giving up (and disabling the endpoint), redelivery, and addresses refused
//! before any connection is made.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::support::db::Db;
use crate::support::receiver::{Behaviour, Received, Receiver};
use crate::support::{eventually, id_of, op_path, TestGateway};
use opgate::webhooks::guard::{NameResolver, SystemResolver};
use opgate::webhooks::signature;
use opgate::webhooks::DispatchConfig;
use serde_json::{json, Value};

/// Short waits for tests: retries 5 s apart on the gateway's clock, a 1 s attempt timeout.
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

fn system() -> Arc<dyn NameResolver> {
    Arc::new(SystemResolver)
}

async fn create_webhook(s: &TestGateway, token: &str, body: Value) -> (String, String) {
    let out = s.call_ok("webhooks.create", token, body).await.json();
    (
        out["secret"].as_str().unwrap().to_owned(),
        id_of(&out["webhook"]),
    )
}

/// Checks `got` as a receiver with `secret` would, at the gateway's time.
fn verify(s: &TestGateway, secret: &str, got: &Received) {
    signature::verify(
        secret,
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
        &got.body,
        s.clock().now().unix(),
    )
    .unwrap_or_else(|e| panic!("signature of {got:?}: {e}"));
}

async fn deliveries(s: &TestGateway, token: &str, body: Value) -> Vec<Value> {
    s.call_ok("webhooks.deliveries", token, body).await.lines()
}

#[tokio::test]
async fn key_events_arrive_signed_in_order_and_without_secrets() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let (secret, webhook_id) = create_webhook(&s, &admin, json!({"url": receiver.url})).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let dispatcher = s.dispatcher(quick(), system());
    let _running = dispatcher.spawn();

    let created = s.create(&admin, json!({"name": "ci"})).await;
    let key_id = id_of(&created["key_details"]);
    s.call_ok(
        "api_keys.update",
        &admin,
        json!({"key_id": key_id, "name": "ci-2"}),
    )
    .await;
    s.revoke(&admin, &key_id).await;

    let got = receiver.wait_for(3).await;
    let types: Vec<String> = got
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        ["api_key.created", "api_key.updated", "api_key.revoked"]
    );
    for g in &got {
        verify(&s, &secret, g);
        assert!(g.header("webhook-id").starts_with("msg_"));
        assert_eq!(g.header("content-type"), "application/json");
        let body = g.json();
        assert_eq!(body["data"]["id"], json!(key_id));
        assert_eq!(
            body["timestamp"],
            json!(opgate::core::Timestamp(s.clock().now().unix()).to_rfc3339())
        );
        // Metadata only: the key's secret is nowhere in it.
        let text = String::from_utf8_lossy(&g.body);
        assert!(!text.contains(created["key"].as_str().unwrap()));
        assert!(!text.contains("key_hash"));
    }
    assert_eq!(got[1].json()["data"]["name"], "ci-2");
    assert_eq!(got[2].json()["data"]["status"], "revoked");
    // A forged or stale delivery fails a receiver's check.
    let mut forged = got[0].clone();
    forged.body = br#"{"type":"api_key.created","data":{}}"#.to_vec();
    assert!(signature::verify(
        &secret,
        forged.header("webhook-id"),
        forged.header("webhook-timestamp"),
        forged.header("webhook-signature"),
        &forged.body,
        s.clock().now().unix()
    )
    .is_err());

    // The deliveries list shows each, delivered (once the dispatcher has recorded the receiver's answers),
    // newest first, never a payload or secret.
    eventually("all three recorded", Duration::from_secs(10), || async {
        deliveries(&s, &admin, json!({"webhook_id": webhook_id}))
            .await
            .iter()
            .all(|d| d["status"] == "delivered")
    })
    .await;
    let listed = deliveries(&s, &admin, json!({"webhook_id": webhook_id})).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["event_type"], "api_key.revoked");
    for d in &listed {
        assert_eq!(
            (&d["status"], &d["attempts"], &d["last_status"]),
            (&json!("delivered"), &json!(1), &json!(204))
        );
        assert!(d.get("payload").is_none() && !d.to_string().contains("whsec_"));
    }
    // The same event, once more, with the same webhook-id.
    let again = s
        .call_ok(
            "webhooks.redeliver",
            &admin,
            json!({"delivery_id": listed[2]["id"]}),
        )
        .await
        .json();
    assert_eq!(again["status"], "pending");
    let got = receiver.wait_for(4).await;
    assert_eq!(got[3].header("webhook-id"), got[0].header("webhook-id"));
    verify(&s, &secret, &got[3]);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_until_it_answers() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(2)).await;
    let (secret, webhook_id) = create_webhook(&s, &admin, json!({"url": receiver.url})).await;
    let dispatcher = s.dispatcher(quick(), system());
    let _running = dispatcher.spawn();
    s.create(&admin, json!({"name": "one"})).await;
    s.create(&admin, json!({"name": "two"})).await;

    receiver.wait_for(1).await;
    eventually(
        "the first attempt is recorded",
        Duration::from_secs(10),
        || async {
            deliveries(&s, &admin, json!({"status": "pending"}))
                .await
                .iter()
                .any(|d| d["attempts"] == 1)
        },
    )
    .await;
    let pending = deliveries(&s, &admin, json!({"status": "pending"})).await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    let first = pending
        .iter()
        .find(|d| d["attempts"] == 1)
        .expect("the first event was tried once");
    assert_eq!(first["last_status"], 500);
    // The answer's start is kept, without its control characters.
    assert_eq!(
        first["last_error"],
        json!("HTTP 500 Internal Server Error: receiver is down [31m")
    );
    // The second event waits behind the first: an endpoint gets its events in order.
    assert_eq!(receiver.received().len(), 1);
    // Nothing more until the retry is due on the gateway's clock (5 s ± 20%).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
    s.advance(Duration::from_secs(7));
    receiver.wait_for(2).await;
    s.advance(Duration::from_secs(7));
    let got = receiver.wait_for(4).await;
    let names: Vec<Value> = got
        .iter()
        .map(|g| g.json()["data"]["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("one"), json!("one"), json!("one"), json!("two")]
    );
    assert!(got[..3]
        .iter()
        .all(|g| g.header("webhook-id") == got[0].header("webhook-id")));
    for g in &got {
        verify(&s, &secret, g);
    }
    // Recorded once the receiver's answer is back.
    let attempts = || async {
        deliveries(&s, &admin, json!({"webhook_id": webhook_id}))
            .await
            .iter()
            .map(|d| (d["status"].clone(), d["attempts"].clone()))
            .collect::<Vec<(Value, Value)>>()
    };
    eventually(
        "both deliveries recorded",
        Duration::from_secs(10),
        || async {
            attempts()
                .await
                .iter()
                .all(|(status, _)| status == "delivered")
        },
    )
    .await;
    assert_eq!(
        attempts().await,
        [
            (json!("delivered"), json!(1)),
            (json!("delivered"), json!(3))
        ]
    );
    // Each attempt is in the history, oldest first, with its answer, latency and outcome.
    let tried = &deliveries(&s, &admin, json!({"webhook_id": webhook_id})).await[1];
    let history = tried["history"].as_array().unwrap();
    let outcomes: Vec<(Value, Value)> = history
        .iter()
        .map(|a| (a["status"].clone(), a["error"].clone()))
        .collect();
    let failed = json!("HTTP 500 Internal Server Error: receiver is down [31m");
    assert_eq!(
        outcomes,
        [
            (json!(500), failed.clone()),
            (json!(500), failed),
            (json!(204), Value::Null)
        ]
    );
    assert!(history.iter().all(|a| a["latency_ms"].is_u64()));
    let times: Vec<&str> = history.iter().map(|a| a["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_given_up_and_its_endpoint_disabled() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let silent = Receiver::start(Behaviour::Hang).await;
    let watcher = Receiver::start(Behaviour::FailFirst(0)).await;
    let (_, silent_id) = create_webhook(&s, &admin, json!({"url": silent.url})).await;
    let (watcher_secret, _) = create_webhook(
        &s,
        &admin,
        json!({"url": watcher.url, "event_types": ["webhook.disabled"]}),
    )
    .await;
    let dispatcher = s.dispatcher(quick(), system());
    let _running = dispatcher.spawn();
    s.create(&admin, json!({"name": "k"})).await;

    // Three attempts (the first and two retries), each cut off after the 1 s timeout.
    for n in 1..=3 {
        silent.wait_for(n).await;
        eventually(
            "the attempt is recorded",
            Duration::from_secs(10),
            || async {
                deliveries(&s, &admin, json!({"webhook_id": silent_id})).await[0]["attempts"] == n
            },
        )
        .await;
        s.advance(Duration::from_secs(7));
    }
    let failed = deliveries(&s, &admin, json!({"webhook_id": silent_id})).await;
    assert_eq!(
        (
            &failed[0]["status"],
            &failed[0]["last_error"],
            &failed[0]["last_status"]
        ),
        (
            &json!("failed"),
            &json!("timed out after 1 s"),
            &Value::Null
        )
    );
    let endpoint = s
        .call_ok("webhooks.get", &admin, json!({"webhook_id": silent_id}))
        .await
        .json();
    assert_eq!(
        (&endpoint["enabled"], &endpoint["disabled_reason"]),
        (&json!(false), &json!("deliveries kept failing"))
    );
    // The organization's other endpoint is told.
    let told = watcher.wait_for(1).await;
    verify(&s, &watcher_secret, &told[0]);
    assert_eq!(told[0].json()["type"], "webhook.disabled");
    assert_eq!(told[0].json()["data"]["id"], json!(silent_id));
    // Disabling it again keeps why and when it was disabled.
    let again = s
        .call_ok(
            "webhooks.update",
            &admin,
            json!({"webhook_id": silent_id, "enabled": false}),
        )
        .await
        .json();
    assert_eq!(
        (&again["disabled_reason"], &again["disabled_at"]),
        (&endpoint["disabled_reason"], &endpoint["disabled_at"])
    );
    // While disabled nothing is queued for it; enabled again, it gets the events from then on.
    s.create(&admin, json!({"name": "meanwhile"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(silent.received().len(), 3);
    s.call_ok(
        "webhooks.update",
        &admin,
        json!({"webhook_id": silent_id, "enabled": true}),
    )
    .await;
    s.create(&admin, json!({"name": "later"})).await;
    silent.wait_for(4).await;
    assert_eq!(silent.received()[3].json()["data"]["name"], "later");
}

/// A name that resolves to a refused address, mapped by the test without asking any DNS server.
struct Intranet;

#[async_trait::async_trait]
impl NameResolver for Intranet {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let ip: IpAddr = match host {
            "intranet.test" => "10.0.0.7".parse().unwrap(),
            _ => "169.254.169.254".parse().unwrap(),
        };
        Ok(vec![SocketAddr::new(ip, port)])
    }
}

#[tokio::test]
async fn webhooks_cannot_be_aimed_at_the_operators_network() {
    let s = TestGateway::start_with(|setup| setup.webhook_policy = Default::default()).await;
    let admin = s.admin_key().to_owned();
    for (url, why) in [
        ("http://127.0.0.1:9/hook", "refused"),
        ("https://127.0.0.1/hook", "refused"),
        ("https://[::1]/hook", "refused"),
        ("https://169.254.169.254/latest/meta-data", "refused"),
        ("https://10.1.2.3/hook", "refused"),
        (
            "http://hooks.example.com/hook",
            "plain http:// is only for loopback",
        ),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
        ("ftp://hooks.example.com/hook", "must be https://"),
    ] {
        s.post(
            &op_path("webhooks.create"),
            Some(&admin),
            &json!({"url": url}),
        )
        .await
        .error_with(400, "invalid_argument", &[why]);
    }
    // A name is checked again at every delivery, after resolving it: refused before any connection.
    let (_, id) = create_webhook(&s, &admin, json!({"url": "https://intranet.test/hook"})).await;
    let strict = DispatchConfig {
        policy: Default::default(),
        ..quick()
    };
    let dispatcher = s.dispatcher(strict, Arc::new(Intranet));
    s.create(&admin, json!({"name": "k"})).await;
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    let tried = deliveries(&s, &admin, json!({"webhook_id": id})).await;
    assert_eq!(tried[0]["status"], "pending");
    // One message whatever the cause: the tenant learns nothing of the operator's names and addresses.
    assert_eq!(
        tried[0]["last_error"],
        json!(opgate::webhooks::REFUSED_TARGET)
    );
    // Refused while resolving: no connection was made, so the attempt took next to nothing.
    assert!(
        tried[0]["last_latency_ms"].as_u64().unwrap() < 1_000,
        "{tried:?}"
    );
}

#[tokio::test]
async fn endpoints_belong_to_an_organization_and_a_mode() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let live = Receiver::start(Behaviour::FailFirst(0)).await;
    let test = Receiver::start(Behaviour::FailFirst(0)).await;
    let (_, live_id) = create_webhook(&s, &admin, json!({"url": live.url})).await;
    let tester = s
        .create(
            &admin,
            json!({"name": "t", "mode": "test", "key_type": "admin", "permissions": ["*"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, test_id) = create_webhook(&s, &tester, json!({"url": test.url})).await;
    let dispatcher = s.dispatcher(quick(), system());
    let _running = dispatcher.spawn();
    // A test key's events go to test endpoints only, and the other way round.
    s.create(&tester, json!({"name": "sandbox"})).await;
    let got = test.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["mode"], "test");
    s.create(&admin, json!({"name": "prod"})).await;
    let got = live.wait_for(1).await;
    assert!(
        got.iter().all(|g| g.json()["data"]["mode"] == "live"),
        "{got:?}"
    );
    assert_eq!(test.received().len(), 1);
    // Neither mode, nor another organization, nor a workspace key sees the other's endpoints.
    s.post(
        &op_path("webhooks.get"),
        Some(&tester),
        &json!({"webhook_id": live_id}),
    )
    .await
    .error(404, "not_found");
    let evil = s.create_key("evil", &["*"]).await;
    s.post(
        &op_path("webhooks.get"),
        Some(&evil),
        &json!({"webhook_id": test_id}),
    )
    .await
    .error(404, "not_found");
    let confined = s
        .create(&admin, json!({"name": "w", "permissions": ["*"]}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&op_path("webhooks.list"), Some(&confined), &json!({}))
        .await
        .error_with(403, "permission_denied", &["belong to the organization"]);
    let listed = s.call_ok("webhooks.list", &admin, json!({})).await.lines();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].to_string().contains("whsec_"));
    // A rotated secret signs from now on; the old one no longer verifies.
    let rotated = s
        .call_ok(
            "webhooks.rotate_secret",
            &admin,
            json!({"webhook_id": live_id}),
        )
        .await
        .json();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    s.create(&admin, json!({"name": "after"})).await;
    let got = live.wait_for(3).await;
    signature::verify(
        &new_secret,
        got[2].header("webhook-id"),
        got[2].header("webhook-timestamp"),
        got[2].header("webhook-signature"),
        &got[2].body,
        s.clock().now().unix(),
    )
    .unwrap();
    // The stored secret is sealed: not in the database file in any readable form.
    let raw = signature::secret_bytes(&new_secret).unwrap();
    if s.database_url().is_none() {
        let db = std::fs::read(s.data_dir().join("opgate.db")).unwrap();
        let wal = std::fs::read(s.data_dir().join("opgate.db-wal")).unwrap_or_default();
        for file in [&db, &wal] {
            assert!(!file.windows(raw.len()).any(|w| w == raw.as_slice()));
            assert!(!file
                .windows(new_secret.len())
                .any(|w| w == new_secret.as_bytes()));
        }
    } else {
        // PostgreSQL's files are not ours to read: the columns that could hold it are searched instead.
        let raw_hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let found = Db::open(&s)
            .await
            .count(
                "SELECT count(*) FROM webhooks
                 WHERE position(decode(?1, 'hex') in secret_sealed) > 0
                    OR position(convert_to(?2, 'UTF8') in secret_sealed) > 0
                    OR strpos(url || coalesce(description, '') || event_types, ?2) > 0",
                &[(&raw_hex).into(), (&new_secret).into()],
            )
            .await;
        assert_eq!(found, 0);
    }
    // Deleting the endpoint stops its deliveries.
    s.call_ok("webhooks.delete", &admin, json!({"webhook_id": live_id}))
        .await;
    s.post(
        &op_path("webhooks.get"),
        Some(&admin),
        &json!({"webhook_id": live_id}),
    )
    .await
    .error(404, "not_found");
}

#[tokio::test]
async fn endpoint_edges_redeliver_after_delete_and_duplicate_types() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let out = s
        .call_ok(
            "webhooks.create",
            &admin,
            json!({"url": "http://127.0.0.1:9/hook",
                   "event_types": ["api_key.created", "api_key.revoked", "api_key.created"]}),
        )
        .await
        .json();
    let id = id_of(&out["webhook"]);
    assert_eq!(
        out["webhook"]["event_types"],
        json!(["api_key.created", "api_key.revoked"]),
        "each type once"
    );
    let updated = s
        .call_ok(
            "webhooks.update",
            &admin,
            json!({"webhook_id": id, "event_types": ["api_key.revoked", "api_key.revoked"]}),
        )
        .await
        .json();
    assert_eq!(updated["event_types"], json!(["api_key.revoked"]));
    // A delivery whose endpoint is gone cannot be sent again.
    s.call_ok(
        "webhooks.update",
        &admin,
        json!({"webhook_id": id, "event_types": []}),
    )
    .await;
    s.create(&admin, json!({"name": "k"})).await;
    let delivery = id_of(&deliveries(&s, &admin, json!({})).await[0]);
    s.call_ok("webhooks.delete", &admin, json!({"webhook_id": id}))
        .await;
    let gone = deliveries(&s, &admin, json!({})).await;
    assert_eq!(
        (&gone[0]["status"], &gone[0]["last_error"]),
        (&json!("failed"), &json!("the endpoint was deleted"))
    );
    s.post(
        &op_path("webhooks.redeliver"),
        Some(&admin),
        &json!({"delivery_id": delivery}),
    )
    .await
    .error_with(409, "conflict", &["endpoint was deleted"]);
}

#[tokio::test]
async fn workspaces_and_service_accounts_send_their_events_too() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let (secret, _) = create_webhook(
        &s,
        &admin,
        json!({"url": receiver.url, "event_types": [
            "workspace.created", "workspace.updated", "workspace.deleted",
            "service_account.created", "service_account.disabled", "service_account.enabled",
            "service_account.updated", "service_account.deleted"]}),
    )
    .await;
    let dispatcher = s.dispatcher(quick(), system());
    let _running = dispatcher.spawn();
    let ws = id_of(
        &s.call_ok("workspaces.create", &admin, json!({"name": "A"}))
            .await
            .json(),
    );
    s.call_ok(
        "workspaces.update",
        &admin,
        json!({"workspace_id": ws, "name": "B"}),
    )
    .await;
    let sa = id_of(
        &s.call_ok(
            "service_accounts.create",
            &admin,
            json!({"name": "bot", "workspace_id": ws}),
        )
        .await
        .json(),
    );
    for disabled in [true, false] {
        s.call_ok(
            "service_accounts.update",
            &admin,
            json!({"service_account_id": sa, "disabled": disabled}),
        )
        .await;
    }
    s.call_ok(
        "service_accounts.update",
        &admin,
        json!({"service_account_id": sa, "name": "robot"}),
    )
    .await;
    s.call_ok(
        "service_accounts.delete",
        &admin,
        json!({"service_account_id": sa}),
    )
    .await;
    s.call_ok("workspaces.delete", &admin, json!({"workspace_id": ws}))
        .await;
    let got = receiver.wait_for(8).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|g| {
            let body = g.json();
            (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("workspace.created", &ws),
        ("workspace.updated", &ws),
        ("service_account.created", &sa),
        ("service_account.disabled", &sa),
        ("service_account.enabled", &sa),
        ("service_account.updated", &sa),
        ("service_account.deleted", &sa),
        ("workspace.deleted", &ws),
    ]
    .iter()
    .map(|(t, id)| (t.to_string(), id.to_string()))
    .collect();
    assert_eq!(seen, expected);
    for g in &got {
        verify(&s, &secret, g);
    }
    assert_eq!(got[1].json()["data"]["name"], "B");
    assert_eq!(got[3].json()["data"]["is_active"], false);
}

#[tokio::test]
async fn ended_deliveries_past_their_retention_are_deleted_and_pending_ones_kept() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let up = Receiver::start(Behaviour::FailFirst(0)).await;
    let down = Receiver::start(Behaviour::FailFirst(usize::MAX)).await;
    let (_, up_id) = create_webhook(&s, &admin, json!({"url": up.url})).await;
    let (_, down_id) = create_webhook(&s, &admin, json!({"url": down.url})).await;
    let dispatcher = s.dispatcher(quick(), system());
    s.create(&admin, json!({"name": "old"})).await;
    assert_eq!(dispatcher.run_once().await.unwrap(), 2);
    let ended = deliveries(&s, &admin, json!({"webhook_id": up_id})).await;
    assert_eq!(ended[0]["status"], "delivered");
    let old_id = ended[0]["id"].as_str().unwrap().to_owned();
    // A month and a day later, another event: its deliveries are pending, as is the failing endpoint's first.
    s.advance(Duration::from_secs(31 * 86_400));
    s.create(&admin, json!({"name": "new"})).await;
    assert_eq!(deliveries(&s, &admin, json!({})).await.len(), 4);

    let upkeep = s.data().spawn_housekeeping(None, Some(30));
    eventually(
        "the ended delivery is deleted",
        Duration::from_secs(10),
        || async { deliveries(&s, &admin, json!({})).await.len() == 3 },
    )
    .await;
    upkeep.abort();
    let left: Vec<(Value, Value)> = deliveries(&s, &admin, json!({}))
        .await
        .iter()
        .map(|d| (d["webhook_id"].clone(), d["status"].clone()))
        .collect();
    assert_eq!(
        left,
        [
            (json!(down_id), json!("pending")),
            (json!(up_id), json!("pending")),
            (json!(down_id), json!("pending")),
        ]
    );
    let gone = s
        .post(
            &op_path("webhooks.redeliver"),
            Some(&admin),
            &json!({"delivery_id": old_id}),
        )
        .await;
    assert_eq!(
        gone.error(404, "not_found"),
        format!("delivery_id: no webhook delivery `{old_id}` in this organization")
    );
    // The old event stays while the failing endpoint's delivery still needs it; its attempt went with it.
    let db = Db::open(&s).await;
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events", &[]).await,
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_attempts", &[]).await,
        1
    );
}

#[tokio::test]
async fn organizations_whose_endpoints_hang_do_not_hold_up_another_and_endpoints_are_bounded() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let hang = Receiver::start(Behaviour::Hang).await;
    let victim = Receiver::start(Behaviour::FailFirst(0)).await;
    // At most 20 endpoints per organization and mode, however many are asked for at once.
    let crowd = s.create_key("crowd", &["*"]).await;
    let path = op_path("webhooks.create");
    let bodies: Vec<Value> = (0..25)
        .map(|i| json!({"url": format!("{}/crowd{i}", hang.url)}))
        .collect();
    let asked =
        futures_util::future::join_all(bodies.iter().map(|b| s.post(&path, Some(&crowd), b))).await;
    let made = asked.iter().filter(|r| r.status == 200).count();
    assert_eq!(made, 20);
    for refused in asked.iter().filter(|r| r.status != 200) {
        refused.error_with(409, "conflict", &["at most 20 webhook endpoints"]);
    }
    // Five organizations whose 5 endpoints each never answer: more than every slot.
    let mut noisy = Vec::new();
    for org in 0..5 {
        let key = s.create_key(&format!("noisy{org}"), &["*"]).await;
        for i in 0..5 {
            create_webhook(
                &s,
                &key,
                json!({"url": format!("{}/org{org}-{i}", hang.url)}),
            )
            .await;
        }
        noisy.push(key);
    }
    create_webhook(&s, &admin, json!({"url": victim.url})).await;
    let patient = DispatchConfig {
        attempt_timeout: Duration::from_secs(30),
        max_in_flight: 16,
        ..quick()
    };
    let dispatcher = s.dispatcher(patient, system());
    let _running = dispatcher.spawn();
    for key in &noisy {
        s.create(key, json!({"name": "noise"})).await;
    }
    eventually(
        "the hanging attempts take their slots",
        Duration::from_secs(10),
        || async { hang.received().len() >= 12 },
    )
    .await;
    let started = std::time::Instant::now();
    s.create(&admin, json!({"name": "victim"})).await;
    let got = victim.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["name"], "victim");
    // Well within the hanging attempts' 30 s: 4 of the 16 slots are kept for organizations with nothing
    // under way, and the busy ones hold at most 4 each.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(hang.received().len() <= 16, "{}", hang.received().len());
}
