//! Operating the gateway: limits against real slow and huge clients over loopback, HTTP/2 (h2c) on the same
//! port, `/readyz` and graceful shutdown, and `/metrics`.

use std::time::{Duration, Instant};

use crate::support::{op_path, read_all, start_upload, TestServer};
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
    let got = read_all(&mut conn, Duration::from_secs(5)).await;
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
    let got = read_all(&mut conn, Duration::from_secs(5)).await;
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
    // One request holds the only slot while it uploads its body slowly.
    let mut slow = start_upload(&s, &admin, "api_keys.list", body.len(), &body[..3]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = s
        .post(&op_path("api_keys.list"), Some(&admin), &json!({}))
        .await;
    refused.error_with(503, "unavailable", &["concurrent requests"]);
    slow.write_all(&body[3..]).await.unwrap();
    let got = read_all(&mut slow, Duration::from_millis(1500)).await;
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
    let got = read_all(&mut slow, Duration::from_secs(4)).await;
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
    let mut s = TestServer::start_with(&["--shutdown-delay-seconds", "2"]);
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let got = read_all(&mut in_flight, Duration::from_secs(1)).await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && got.contains("during shutdown"),
        "{got}"
    );
    s.wait_exit();
}

#[tokio::test]
async fn metrics_count_requests_auth_failures_and_storage() {
    let s = TestServer::start();
    let admin = s.admin_key().to_owned();
    s.list(&admin, json!({})).await;
    s.post("/v1/op/auth.whoami", Some("opg_garbage"), &json!({}))
        .await
        .error(401, "unauthenticated");
    s.post("/v1/op/auth.whoami", Some("garbage"), &json!({}))
        .await
        .error(401, "unauthenticated");
    // The last checksum character changed to another one: well formed, wrong checksum.
    let last = if admin.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{}{last}", &admin[..admin.len() - 1]);
    s.post("/v1/op/auth.whoami", Some(&forged), &json!({}))
        .await
        .error(401, "unauthenticated");
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
    for needle in [
        r#"opgate_requests_total{operation="api_keys.list",status="200"} 1"#,
        r#"opgate_requests_total{operation="auth.whoami",status="401"} 3"#,
        r#"opgate_auth_failures_total{reason="malformed_key"} 1"#,
        r#"opgate_auth_failures_total{reason="unrecognized_token"} 1"#,
        r#"opgate_auth_failures_total{reason="bad_checksum"} 1"#,
        r#"opgate_request_duration_seconds_bucket{operation="api_keys.list",le="#,
        r#"opgate_storage_seconds_count{kind="read"}"#,
        "opgate_requests_in_flight",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains(&admin[4..]), "no secret in metrics");
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
    let rest = read_all(&mut conn, Duration::from_secs(5)).await;
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
    let _a = TcpStream::connect(s.addr()).await.unwrap();
    let _b = TcpStream::connect(s.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(s.addr()).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = read_all(&mut third, Duration::from_secs(2)).await;
    assert!(
        got.is_empty(),
        "the third connection is closed unanswered: {got}"
    );
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(s.addr()).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_all(&mut fourth, Duration::from_secs(2))
        .await
        .starts_with("HTTP/1.1 200 OK"));
}
