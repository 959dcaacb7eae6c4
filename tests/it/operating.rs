//! Operating the gateway, against the real binary: limits against real slow and huge clients over loopback,
//! HTTP/2 (h2c) on the same port, `/readyz` and graceful shutdown, `/metrics`, and the server secret from
//! `OPGATE_SECRET`.

use std::time::{Duration, Instant};

use crate::support::{
    create_key_in, create_key_in_with, eventually, op_path, opgate, read_response,
    read_until_closed, start_upload, TestServer,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_slowloris_client_is_cut_off_after_the_header_timeout() {
    let s = TestServer::start_with(&["--header-read-timeout-seconds", "1"]);
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    conn.write_all(b"POST /v1/op/auth.whoami HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    // The server is fine.
    assert_eq!(
        s.post("/v1/op/auth.whoami", Some(s.admin_key()), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let s = TestServer::start_with(&["--max-header-bytes", "16384"]);
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let req = format!("POST /v1/op/auth.whoami HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = conn.write_all(req.as_bytes()).await;
    // Refused: answered 431 or cut off, and the connection closed (not merely left unanswered).
    let got = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 431"),
        "{}",
        &got[..got.len().min(200)]
    );
    assert_eq!(
        s.post("/v1/op/auth.whoami", Some(s.admin_key()), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_get_503_at_once() {
    let s = TestServer::start_with(&["--max-concurrent-requests", "1"]);
    let admin = s.admin_key().to_owned();
    let body = br#"{"limit": 1}"#;
    // One request holds the only slot while it uploads its body slowly (the gateway is reading it).
    let mut slow = start_upload(&s, &admin, "api_keys.list", body.len(), &body[..3]).await;
    let refused = s
        .post(&op_path("api_keys.list"), Some(&admin), &json!({}))
        .await;
    refused.error_with(503, "unavailable", &["concurrent requests"]);
    slow.write_all(&body[3..]).await.unwrap();
    let got = read_response(&mut slow, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert_eq!(
        s.post(&op_path("auth.whoami"), Some(&admin), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_503() {
    let s = TestServer::start_with(&["--request-timeout-seconds", "1"]);
    let admin = s.admin_key().to_owned();
    let mut slow = start_upload(&s, &admin, "auth.whoami", 10, b"{").await;
    let started = Instant::now();
    let got = read_until_closed(&mut slow, Duration::from_secs(4)).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "{got}");
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.contains(r#""code":"unavailable""#) && got.contains("did not complete within 1 s"),
        "{got}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_on_the_same_port() {
    let s = TestServer::start();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(s.url("/v1/op/auth.whoami"))
        .bearer_auth(s.admin_key())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["kind"],
        "api_key"
    );
    // HTTP/1.1 on the same port still works.
    assert_eq!(
        s.post("/v1/op/auth.whoami", Some(s.admin_key()), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn shutdown_turns_readyz_503_finishes_in_flight_requests_and_exits_0() {
    // The delay is the window in which readyz answers 503 before the listener closes: long enough for a
    // loaded machine to poll it.
    let mut s = TestServer::start_with(&["--shutdown-delay-seconds", "5"]);
    let admin = s.admin_key().to_owned();
    let ready = s
        .request(reqwest::Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);

    // A request in flight when the signal arrives.
    let body = serde_json::to_vec(&json!({ "name": "during shutdown" })).unwrap();
    let mut in_flight = start_upload(&s, &admin, "api_keys.create", body.len(), &body[..5]).await;
    s.terminate();
    eventually("readyz turns 503", Duration::from_secs(10), || async {
        s.request(reqwest::Method::GET, "/readyz", None)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    let draining = crate::support::send(s.request(reqwest::Method::GET, "/readyz", None)).await;
    draining.error_with(503, "unavailable", &["shutting down"]);
    // Still serving during the delay.
    assert_eq!(
        s.post("/v1/op/auth.whoami", Some(&admin), &json!({}))
            .await
            .status,
        200
    );
    in_flight.write_all(&body[5..]).await.unwrap();
    let got = read_response(&mut in_flight, Duration::from_secs(5)).await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && got.contains("during shutdown"),
        "{got}"
    );
    s.wait_exit();
}

#[tokio::test]
async fn metrics_count_requests_every_auth_failure_reason_and_storage() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    s.list(&admin, json!({})).await;
    // One failure of every reason the README names.
    let elsewhere = tempfile::tempdir().unwrap();
    let unknown = create_key_in(elsewhere.path(), "default", &["*"]);
    let last = if admin.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{}{last}", &admin[..admin.len() - 1]);
    let revoked = {
        let out = s.create(&admin, json!({ "name": "revoked" })).await;
        s.revoke(&admin, out["key_details"]["id"].as_str().unwrap())
            .await;
        out["key"].as_str().unwrap().to_owned()
    };
    let expired = s.create_key_with("default", &["*"], &["--expires-at", "2020-01-01T00:00:00Z"]);
    let rotated = {
        let out = s.create(&admin, json!({ "name": "rotated" })).await;
        let id = out["key_details"]["id"].as_str().unwrap();
        s.call_ok(
            "api_keys.rotate",
            &admin,
            json!({ "key_id": id, "grace_period_seconds": 0 }),
        )
        .await;
        out["key"].as_str().unwrap().to_owned()
    };
    let fenced = s.create_key_with("default", &["*"], &["--allowed-ips", "10.0.0.0/8"]);
    let failures = [
        ("opg_garbage", 401, "malformed_key"),
        ("garbage", 401, "unrecognized_token"),
        (forged.as_str(), 401, "bad_checksum"),
        (unknown.as_str(), 401, "unknown_key"),
        (revoked.as_str(), 401, "revoked"),
        (expired.as_str(), 401, "expired"),
        (rotated.as_str(), 401, "rotated"),
        (fenced.as_str(), 403, "ip_not_allowed"),
        ("abc.def.ghi", 401, "bad_session"),
    ];
    for (token, status, reason) in failures {
        let reply = s.post("/v1/op/auth.whoami", Some(token), &json!({})).await;
        assert_eq!(reply.status, status, "{reason}: {}", reply.text());
    }
    let limited = s
        .create(&admin, json!({ "name": "limited", "rate_limit": 1 }))
        .await;
    let limited = limited["key"].as_str().unwrap();
    s.call_ok("auth.whoami", limited, json!({})).await;
    s.post("/v1/op/auth.whoami", Some(limited), &json!({}))
        .await
        .error(429, "rate_limited");

    let resp = s
        .request(reqwest::Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let mut needles = vec![
        r#"opgate_requests_total{operation="api_keys.list",status="200"} 1"#.to_owned(),
        r#"opgate_requests_total{operation="auth.whoami",status="401"} 8"#.to_owned(),
        r#"opgate_requests_total{operation="auth.whoami",status="403"} 1"#.to_owned(),
        r#"opgate_requests_total{operation="auth.whoami",status="429"} 1"#.to_owned(),
        "opgate_rate_limited_total 1".to_owned(),
        r#"opgate_request_duration_seconds_bucket{operation="api_keys.list",le="#.to_owned(),
        r#"opgate_storage_seconds_count{kind="read"}"#.to_owned(),
        r#"opgate_storage_seconds_count{kind="write"}"#.to_owned(),
        "opgate_requests_in_flight".to_owned(),
    ];
    for (_, _, reason) in failures {
        needles.push(format!(
            r#"opgate_auth_failures_total{{reason="{reason}"}} 1"#
        ));
    }
    for needle in &needles {
        assert!(
            text.contains(needle.as_str()),
            "missing {needle} in:\n{text}"
        );
    }
    for secret in [&admin, &revoked, &expired, &rotated, &fenced, &unknown] {
        assert!(!text.contains(&secret[4..]), "no secret in metrics");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let s = TestServer::start_with(&["--header-read-timeout-seconds", "1"]);
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    let idle_from = Instant::now();
    let rest = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    let idle = idle_from.elapsed();
    assert!(rest.is_empty(), "{rest}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?}"
    );
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_are_closed() {
    let s = TestServer::start_with(&["--max-connections", "2"]);
    let a = TcpStream::connect(s.addr()).await.unwrap();
    let b = TcpStream::connect(s.addr()).await.unwrap();
    // Accepted in order: the third is past the limit and closed unanswered.
    let mut third = TcpStream::connect(s.addr()).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(
        got.is_empty(),
        "the third connection is closed unanswered: {got}"
    );
    // Once the first two are gone, a new connection is served again.
    drop((a, b));
    eventually(
        "a new connection is served",
        Duration::from_secs(5),
        || async {
            let Ok(mut fourth) = TcpStream::connect(s.addr()).await else {
                return false;
            };
            let sent = fourth
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut got = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(2), fourth.read_to_end(&mut got)).await;
            sent.is_ok() && read.is_ok() && got.starts_with(b"HTTP/1.1 200 OK")
        },
    )
    .await;
}

#[tokio::test]
async fn a_key_minted_offline_with_opgate_secret_needs_the_same_secret_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let secret = (
        "OPGATE_SECRET",
        "c2hhcmVkLXNlcnZlci1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==",
    );
    // Minted offline under the secret from the environment.
    let out = opgate()
        .args(["admin", "create-key", "--org", "acme", "--name", "ci"])
        .args(["--permissions", "api_keys:read"])
        .arg("--data-dir")
        .arg(dir.path())
        .env(secret.0, secret.1)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // A server with the same secret takes it ...
    let mut with = TestServer::start_existing(dir.path(), &[], &[secret]);
    let me = with.call_ok("auth.whoami", &key, json!({})).await.json();
    assert_eq!(
        (&me["org"], &me["kind"]),
        (&json!("acme"), &json!("api_key"))
    );
    with.terminate();
    with.wait_exit();
    drop(with);
    // ... a server without it (its own secret file) refuses it as unknown.
    let without = TestServer::start_existing(dir.path(), &[], &[]);
    without
        .post(&op_path("auth.whoami"), Some(&key), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["the API key is not valid"]);
    // And a key minted without the variable is refused by a server that has it.
    let local = create_key_in_with(dir.path(), "acme", &["api_keys:read"], &[]);
    assert_eq!(
        without
            .post(&op_path("auth.whoami"), Some(&local), &json!({}))
            .await
            .status,
        200
    );
    drop(without);
    let with = TestServer::start_existing(dir.path(), &[], &[secret]);
    with.post(&op_path("auth.whoami"), Some(&local), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["the API key is not valid"]);
    with.call_ok("auth.whoami", &key, json!({})).await;
}
