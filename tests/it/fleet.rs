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

/// Runs `scripts/pg-cluster` with `args`; its output.
fn pg_cluster(args: &[&str]) -> String {
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-cluster"))
            .args(args)
            .output()
            .expect("run scripts/pg-cluster");
    assert!(
        out.status.success(),
        "pg-cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn postgres_going_away_under_load_loses_no_acknowledged_write_and_readyz_follows() {
    // On the PostgreSQL pass only: the test runs a cluster of its own, which it kills and restarts.
    if std::env::var("OPGATE_TEST_DATABASE_URL").is_err() {
        return;
    }
    let url = pg_cluster(&["start"]);
    let server = crate::support::TestServer::start_with_own_storage(&["--database-url", &url], &[]);
    let admin = server.admin_key().to_owned();
    let ready = |s: &crate::support::TestServer| {
        let request = s.client().get(s.url("/readyz"));
        async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(&server).await, 200);

    // Four clients create keys without pause; each remembers what was acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, admin, stop) = (
            server.client().clone(),
            server.url(&crate::support::op_path("api_keys.create")),
            admin.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut acknowledged, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let name = format!("c{c}-{n}");
                let reply = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({ "name": name }))
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await;
                let status = reply.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                *statuses.entry(status).or_insert(0u32) += 1;
                if status == 200 {
                    acknowledged.push(name);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acknowledged, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg_cluster(&["kill", &url]);
    let mut down = false;
    for _ in 0..100 {
        if ready(&server).await == 503 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "/readyz still 200 with the database gone");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pg_cluster(&["restart", &url]);
    let mut up = false;
    for _ in 0..200 {
        if ready(&server).await == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "/readyz never came back");
    // The instance reconnected by itself: writes go on.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
    for c in clients {
        let (acked, counts) = c.await.unwrap();
        acknowledged.extend(acked);
        for (status, n) in counts {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    // Only answers and refusals as unavailable: no 500, no hang.
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
    // Every acknowledged create is there.
    let stored: std::collections::HashSet<String> = server
        .list(&admin, json!({}))
        .await
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    eprintln!(
        "database outage: {} creates acknowledged, answers {statuses:?}, {} lost",
        acknowledged.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    drop(server);
    pg_cluster(&["stop", &url]);
}

#[tokio::test]
async fn a_keys_rate_limit_holds_for_the_fleet_not_per_instance() {
    let a = TestGateway::start().await;
    let Some(b) = a.another_instance().await else {
        return;
    };
    let admin = a.admin_key().to_owned();
    // 100 a minute: a burst of 100, then none until the (manual) clock moves.
    let key = a
        .create(
            &admin,
            json!({"name": "limited", "permissions": ["api_keys:read"], "rate_limit": 100}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..150 {
        let instance = if i % 2 == 0 { &a } else { &b };
        let reply = instance
            .post(&op_path("auth.whoami"), Some(&key), &json!({}))
            .await;
        match reply.status {
            200 => admitted += 1,
            _ => refused.push(reply),
        }
    }
    // Alone, each instance would have admitted its 75. Together they admit the limit, less at most what each
    // holds leased and unspent (2% of the limit: 2 requests each).
    eprintln!("fleet rate limit of 100: {admitted} of 150 admitted across two instances");
    assert!((96..=100).contains(&admitted), "{admitted}");
    let first = &refused[0];
    first.error_with(429, "rate_limited", &["100 requests per minute"]);
    assert!(first.header("retry-after").is_some());
}
