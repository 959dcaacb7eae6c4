//! Crash safety: a storm of creates and revokes (under idempotency keys), the server killed with SIGKILL at
//! random moments and restarted. Every create the client saw acknowledged must still authenticate, every
//! acknowledged revoke must still hold (401), each acknowledged change must have its audit record, each
//! acknowledged idempotent revoke must replay byte for byte, and the database must pass `PRAGMA integrity_check`.
//!
//! The outbox goes through the same storm: a webhook endpoint (a receiver in the test) gets every acknowledged
//! change's event after the kills, each under the same `webhook-id` however often it was attempted.
//!
//! `CRASH_CYCLES` (default 4) sets the number of kills; `scripts/crash-test` runs a longer storm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::db::Db;
use crate::support::receiver::{Behaviour, Receiver};
use crate::support::{eventually, op_path, TestServer};
use serde_json::json;

#[derive(Default)]
struct Ledger {
    /// Secrets of keys whose create was acknowledged, by key id.
    created: HashMap<String, String>,
    /// Key ids whose revoke was acknowledged, with its idempotency key and the body acknowledged.
    revoked: HashMap<String, (String, Vec<u8>)>,
    /// Key ids whose revoke was sent but not acknowledged: either outcome is correct.
    in_doubt: Vec<String>,
    requests: u64,
    failures: u64,
}

/// Creates and revokes as fast as it can until the server dies under it.
async fn storm(base: String, admin: String, ledger: Arc<Mutex<Ledger>>, worker: usize) {
    let client = reqwest::Client::new();
    let mut i = 0u64;
    loop {
        i += 1;
        let created = client
            .post(format!("{base}{}", op_path("api_keys.create")))
            .bearer_auth(&admin)
            .json(
                &json!({ "name": format!("storm-{worker}-{i}"), "permissions": ["api_keys:read"] }),
            )
            .send()
            .await;
        let Ok(resp) = created else { return };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            ledger.lock().unwrap().failures += 1;
            return;
        };
        let id = {
            let mut l = ledger.lock().unwrap();
            l.requests += 1;
            if status != 200 {
                l.failures += 1;
                None
            } else {
                let id = body["key_details"]["id"].as_str().unwrap().to_owned();
                l.created
                    .insert(id.clone(), body["key"].as_str().unwrap().to_owned());
                Some(id)
            }
        };
        let Some(id) = id else { continue };
        if i.is_multiple_of(2) {
            ledger.lock().unwrap().in_doubt.push(id.clone());
            let key = format!("revoke-{id}");
            let revoked = client
                .post(format!("{base}{}", op_path("api_keys.revoke")))
                .bearer_auth(&admin)
                .header("idempotency-key", &key)
                .json(&json!({ "key_id": id }))
                .send()
                .await;
            let Ok(resp) = revoked else { return };
            let status = resp.status().as_u16();
            let body = resp.bytes().await;
            let mut l = ledger.lock().unwrap();
            l.requests += 1;
            match body {
                Ok(body) if status == 200 => {
                    l.in_doubt.retain(|d| d != &id);
                    l.revoked.insert(id, (key, body.to_vec()));
                }
                _ => l.failures += 1,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut s = TestServer::start_with(&["--allow-private-webhooks"]);
    let admin = s.admin_key().to_owned();
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;
    let hook = s
        .call_ok("webhooks.create", &admin, json!({ "url": receiver.url }))
        .await;
    assert_eq!(hook.status, 200);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..cycles {
        let workers: Vec<_> = (0..8)
            .map(|w| tokio::spawn(storm(s.url(""), admin.clone(), Arc::clone(&ledger), w)))
            .collect();
        // A pseudo-random moment between 150 and 900 ms into the storm.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 750)).await;
        s.crash_and_restart();
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }

    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        !l.created.is_empty() && !l.revoked.is_empty(),
        "the storm did some work"
    );
    let mut checked_created = 0;
    for (id, secret) in &l.created {
        let r = s
            .post(&op_path("auth.whoami"), Some(secret), &json!({}))
            .await;
        if l.revoked.contains_key(id) {
            r.error_with(401, "unauthenticated", &["revoked"]);
        } else if l.in_doubt.contains(id) {
            assert!(r.status == 200 || r.status == 401, "{}", r.text());
        } else {
            assert_eq!(r.status, 200, "acknowledged key {id} lost: {}", r.text());
            checked_created += 1;
        }
    }
    // Each acknowledged idempotent revoke replays: the same status and body, marked as a replay.
    for (id, (key, body)) in &l.revoked {
        let replay = crate::support::send(
            s.request(
                reqwest::Method::POST,
                &op_path("api_keys.revoke"),
                Some(&admin),
            )
            .header("idempotency-key", key)
            .json(&json!({ "key_id": id })),
        )
        .await;
        assert_eq!(replay.status, 200, "{}", replay.text());
        assert_eq!(
            replay.header("idempotent-replayed"),
            Some("true"),
            "{id}: not a replay"
        );
        assert_eq!(
            &replay.body, body,
            "{id}: the replay differs from the acknowledged answer"
        );
    }
    // Each acknowledged change has its audit record: it committed with the change.
    let db = Db::open_dir(s.data_dir()).await;
    let audited = |operation: &'static str| {
        let db = &db;
        async move {
            db.rows(
                "SELECT target_id FROM audit_log WHERE operation = ?1 AND status = 200",
                &[operation.into()],
            )
            .await
            .into_iter()
            .map(|row| row[0].as_str().unwrap().to_owned())
            .collect::<std::collections::HashSet<String>>()
        }
    };
    let (creates, revokes) = (
        audited("api_keys.create").await,
        audited("api_keys.revoke").await,
    );
    for id in l.created.keys() {
        assert!(
            creates.contains(id),
            "acknowledged create of {id} has no audit record"
        );
    }
    for id in l.revoked.keys() {
        assert!(
            revokes.contains(id),
            "acknowledged revoke of {id} has no audit record"
        );
    }
    // SQLite checks its file; PostgreSQL's own crash safety is not ours to test (the server went down, not it).
    let check = match &db {
        Db::Sqlite(file) => {
            let check: String = file
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            check
        }
        Db::Postgres(_) => "not applicable (PostgreSQL)".to_owned(),
    };

    // The outbox: every acknowledged create and revoke has its event delivered after the kills. Each event
    // carries one webhook-id on every attempt; a kill between a delivery and its record means that event is
    // sent again (at least once), never a second id for one change.
    let wanted = l.created.len() + l.revoked.len();
    let events = || {
        let mut by_change: HashMap<(String, String), std::collections::HashSet<String>> =
            HashMap::new();
        for got in receiver.received() {
            let body = got.json();
            let change = (
                body["type"].as_str().unwrap_or("").to_owned(),
                body["data"]["id"].as_str().unwrap_or("").to_owned(),
            );
            by_change
                .entry(change)
                .or_default()
                .insert(got.header("webhook-id").to_owned());
        }
        by_change
    };
    let delivered = |by_change: &HashMap<(String, String), std::collections::HashSet<String>>| {
        let created = l
            .created
            .keys()
            .filter(|id| by_change.contains_key(&("api_key.created".to_owned(), (*id).clone())))
            .count();
        let revoked = l
            .revoked
            .keys()
            .filter(|id| by_change.contains_key(&("api_key.revoked".to_owned(), (*id).clone())))
            .count();
        created + revoked
    };
    eventually(
        "every acknowledged change's event at the receiver",
        // On PostgreSQL the deliveries a killed server had leased wait out their lease (DELIVERY_LEASE_SECS):
        // another instance may still be sending them. SQLite's lone server takes them back when it starts.
        Duration::from_secs(if matches!(db, Db::Postgres(_)) {
            240
        } else {
            120
        }),
        || async { delivered(&events()) == wanted },
    )
    .await;
    let by_change = events();
    for (change, ids) in &by_change {
        assert_eq!(
            ids.len(),
            1,
            "{change:?} was sent under several webhook-ids: {ids:?}"
        );
    }
    let sent = receiver.received().len();
    println!(
        "crash test: {cycles} kills, {} requests acknowledged or refused, {} failures, {} acknowledged creates \
         ({checked_created} checked live), {} acknowledged idempotent revokes (all replayed), {} revokes in doubt, \
         every acknowledged change audited, integrity_check {check}; outbox: {wanted} acknowledged changes, \
         {} delivered after the kills ({} events in all, {} requests at the receiver: {} repeats), one \
         webhook-id each",
        l.requests,
        l.failures,
        l.created.len(),
        l.revoked.len(),
        l.in_doubt.len(),
        delivered(&by_change),
        by_change.len(),
        sent,
        sent - by_change.len(),
    );
}
