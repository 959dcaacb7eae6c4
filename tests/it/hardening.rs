//! What an outside review found by attacking a running gateway. What happens on connections (silent and
//! half-open sockets, one address or one key taking every slot, trickled bodies, stalled streams, early
//! answers that drop keep-alive requests, a second server on one data directory, loose file modes and
//! metrics, the CLI's refusals) is reproduced against the real binary over loopback; what the API answers
//! (control characters, narrower keys, refusals turned into durable writes, retention, unknown scopes,
//! tokens refused without storage) is checked in process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::{
    eventually, id_of, op_path, opgate, read_until_closed, start_upload, TestGateway, TestServer,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from a given loopback source address (127.0.0.0/8 is all loopback on Linux).
async fn connect_from(source: &str, to: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse::<SocketAddr>().unwrap())?;
    socket.connect(to.parse().unwrap()).await
}

/// Waits until the server closes `conn` (EOF or reset), at most `limit`; how long it took.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), conn.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthz_from(source: &str, s: &TestServer) -> String {
    let mut conn = connect_from(source, &s.addr()).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut conn, Duration::from_secs(3)).await
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_from_accept() {
    let s = TestServer::start_with(&["--header-read-timeout-seconds", "1"]);
    // Nothing at all, part of the HTTP/2 preface, part of an HTTP/1 request line: each is dropped one
    // header timeout after connecting, protocol detection included.
    let mut silent = TcpStream::connect(s.addr()).await.unwrap();
    let mut preface = TcpStream::connect(s.addr()).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut partial = TcpStream::connect(s.addr()).await.unwrap();
    partial.write_all(b"POST /v1/op/auth.wh").await.unwrap();
    for (name, conn) in [
        ("silent", &mut silent),
        ("partial h2 preface", &mut preface),
        ("partial request line", &mut partial),
    ] {
        let after = closed_within(conn, Duration::from_secs(4))
            .await
            .unwrap_or_else(|| panic!("{name}: still open after 4 s"));
        assert!(
            after < Duration::from_millis(2500),
            "{name}: closed after {after:?}"
        );
    }
}

#[tokio::test]
async fn a_flood_of_silent_sockets_from_one_address_does_not_starve_others() {
    let s = TestServer::start_with(&[
        "--max-connections-per-ip",
        "50",
        "--header-read-timeout-seconds",
        "5",
    ]);
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(connect_from("127.0.0.1", &s.addr()).await.expect("connect"));
    }
    // Past the per-address cap, connections from the flooding address are closed at once ...
    let mut refused = flood.pop().unwrap();
    assert!(
        closed_within(&mut refused, Duration::from_millis(3500))
            .await
            .is_some(),
        "the 300th connection from one address is closed at once"
    );
    // ... while another address is served.
    let answer = healthz_from("127.0.0.2", &s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // Once the silent sockets time out (the server closes each of them), the flooding address is served again.
    for conn in &mut flood {
        assert!(
            closed_within(conn, Duration::from_secs(10)).await.is_some(),
            "a silent socket outlived the header timeout"
        );
    }
    let answer = healthz_from("127.0.0.1", &s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let s = TestServer::start_with(&["--header-read-timeout-seconds", "1"]);
    let stream = TcpStream::connect(s.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/healthz", s.addr()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let idle_from = Instant::now();
    // The server sends GOAWAY and closes: the client's connection task ends.
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the idle HTTP/2 connection is closed by the server")
        .unwrap()
        .ok();
    let idle = idle_from.elapsed();
    assert!(idle < Duration::from_secs(3), "closed after {idle:?}");
}

#[tokio::test]
async fn control_characters_and_malformed_ids_are_refused_by_field() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for (field, value) in [
        ("name", "a\u{1b}[31mred"),
        ("name", "bell\u{7}"),
        ("name", "two\nlines"),
        ("description", "osc\u{1b}]52;c;ZXZpbA==\u{7}"),
        ("description", "c1\u{9b}31m"),
        ("description", "nul\u{0}"),
    ] {
        let mut body = json!({ "name": "ok" });
        body[field] = json!(value);
        s.post(&op_path("api_keys.create"), Some(&admin), &body)
            .await
            .error_with(
                400,
                "invalid_argument",
                &[&format!("{field}: must not contain control characters")],
            );
    }
    let made = s.create(&admin, json!({ "name": "fine" })).await;
    let id = id_of(&made["key_details"]);
    s.post(
        &op_path("api_keys.update"),
        Some(&admin),
        &json!({ "key_id": id, "description": "x\ry" }),
    )
    .await
    .error_with(
        400,
        "invalid_argument",
        &["description: must not contain control characters (found U+000D)"],
    );
    // An id that is not an id never reaches a handler, nor the audit log as a target.
    let ops = [
        "api_keys.get",
        "api_keys.revoke",
        "api_keys.update",
        "api_keys.rotate",
    ];
    for op in ops {
        s.post(
            &op_path(op),
            Some(&admin),
            &json!({ "key_id": "key_\u{1b}]52;c;ZXZpbA==\u{7}" }),
        )
        .await
        .error_with(
            400,
            "invalid_argument",
            &["key_id: must be an id of the form `key_`"],
        );
    }
    s.flush_refusals().await;
    let records = audit(&s, &admin).await;
    for op in &ops[1..] {
        let mine: Vec<&Value> = records.iter().filter(|r| r["operation"] == *op).collect();
        assert_eq!(mine.len(), 1, "{op}: one tallied refusal: {records:#?}");
        assert_eq!(mine[0]["status"], 400);
        assert_eq!(mine[0]["target_id"], Value::Null, "{op}");
    }
    s.post(
        &op_path("api_keys.list"),
        Some(&admin),
        &json!({ "after_id": "key_1" }),
    )
    .await
    .error_with(400, "invalid_argument", &["after_id: must be an id"]);
    s.post(
        &op_path("audit.list"),
        Some(&admin),
        &json!({ "operation": "x\u{1b}" }),
    )
    .await
    .error_with(
        400,
        "invalid_argument",
        &["operation: must be an operation id"],
    );
}

#[tokio::test]
async fn a_narrower_key_cannot_revoke_update_or_rotate_a_more_powerful_one() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let admin_id = s.id_of_key(&admin).await;
    let ci = s.create_key("default", &["api_keys:write"]).await;
    for (op, body) in [
        ("api_keys.revoke", json!({ "key_id": admin_id })),
        (
            "api_keys.update",
            json!({ "key_id": admin_id, "name": "mine now" }),
        ),
        ("api_keys.rotate", json!({ "key_id": admin_id })),
    ] {
        s.post(&op_path(op), Some(&ci), &body).await.error_with(
            403,
            "permission_denied",
            &["key_id: the key holds `*`, beyond the caller's own permissions"],
        );
    }
    // The admin key still works, untouched; the narrow key may still revoke a key it could have made.
    let me = s.call_ok("auth.whoami", &admin, json!({})).await.json();
    assert_eq!(me["permissions"], json!(["*"]));
    let a = s.get(&admin, &admin_id).await;
    assert_eq!(
        (&a["name"], &a["status"]),
        (&json!("admin"), &json!("active"))
    );
    let peer = s
        .create(
            &admin,
            json!({ "name": "peer", "permissions": ["api_keys:read"] }),
        )
        .await;
    let revoked = s
        .call_ok(
            "api_keys.revoke",
            &ci,
            json!({ "key_id": id_of(&peer["key_details"]) }),
        )
        .await
        .json();
    assert_eq!(revoked["status"], "revoked");
}

/// The audit log of `token`'s organization, newest first.
async fn audit(s: &TestGateway, token: &str) -> Vec<Value> {
    s.call_ok("audit.list", token, json!({ "limit": 1000 }))
        .await
        .lines()
}

#[tokio::test]
async fn refusals_are_tallied_not_written_one_by_one() {
    let mut s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let limited = s
        .create(&admin, json!({ "name": "limited", "rate_limit": 1 }))
        .await;
    let limited_key = limited["key"].as_str().unwrap().to_owned();
    let reader = s.create_key("default", &["api_keys:read"]).await;
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..400 {
        let token = if i % 2 == 0 { &limited_key } else { &reader };
        let reply = s
            .post(
                &op_path("api_keys.create"),
                Some(token),
                &json!({ "name": "x" }),
            )
            .await;
        *statuses.entry(reply.status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        [(200, 1), (403, 200), (429, 199)].into_iter().collect()
    );
    // Not a row per refusal: the tallies are written once per interval, and when the server stops.
    let before = audit(&s, &admin).await;
    assert_eq!(
        before.len(),
        2,
        "the admin's create and the limited key's one create: {before:?}"
    );
    s.restart().await;
    let items = audit(&s, &admin).await;
    let summary: Vec<(u64, u64)> = items
        .iter()
        .map(|i| (i["status"].as_u64().unwrap(), i["count"].as_u64().unwrap()))
        .collect();
    // Newest first: the reader's 403s ended last.
    assert_eq!(
        summary,
        vec![(403, 200), (429, 199), (200, 1), (200, 1)],
        "{items:#?}"
    );
    assert_eq!(items[0]["error_code"], "permission_denied");
    assert_eq!(items[1]["error_code"], "rate_limited");
    assert_eq!(items[1]["operation"], "api_keys.create");
    for item in &items {
        let id = item["id"].as_str().unwrap();
        assert!(
            opgate::core::validate::is_id("aud", id),
            "audit ids are random and time-ordered, not a counter: {id}"
        );
    }
}

#[tokio::test]
async fn audit_records_past_their_retention_are_deleted() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    s.create(&admin, json!({ "name": "old" })).await;
    s.advance(Duration::from_secs(86_400));
    s.create(&admin, json!({ "name": "day old" })).await;
    // Thirty days and a second after the first record, a retention of 30 days deletes it (only it).
    s.advance(Duration::from_secs(29 * 86_400 + 1));
    s.create(&admin, json!({ "name": "new" })).await;
    assert_eq!(audit(&s, &admin).await.len(), 3);
    // The upkeep runs at start, then hourly.
    let upkeep = s.data().spawn_housekeeping(Some(30), None);
    eventually(
        "the old record is deleted",
        Duration::from_secs(10),
        || async { audit(&s, &admin).await.len() == 2 },
    )
    .await;
    upkeep.abort();
    let items = audit(&s, &admin).await;
    let left: Vec<i64> = items
        .iter()
        .map(|i| crate::support::rfc3339_unix(i["at"].as_str().unwrap()))
        .collect();
    let now = s.clock().now().unix();
    assert_eq!(left, [now, now - 29 * 86_400 - 1]);
}

#[tokio::test]
async fn one_key_cannot_take_every_request_slot_and_a_trickled_body_is_cut_off() {
    let s = TestServer::start_with(&[
        "--max-concurrent-requests-per-principal",
        "2",
        "--body-read-timeout-seconds",
        "1",
    ]);
    let admin = s.admin_key().to_owned();
    let nobody = s
        .create(
            &admin,
            json!({ "name": "nobody", "permissions": ["api_keys:read"] }),
        )
        .await;
    let nobody = nobody["key"].as_str().unwrap().to_owned();
    let body = br#"{"limit": 1}"#;
    // Two slow uploads hold the key's two slots (the gateway is reading their bodies) ...
    let mut a = start_upload(&s, &nobody, "api_keys.list", body.len(), &body[..2]).await;
    let mut b = start_upload(&s, &nobody, "api_keys.list", body.len(), &body[..2]).await;
    // ... so its third request is refused, while the admin is served.
    s.post(&op_path("api_keys.list"), Some(&nobody), &json!({}))
        .await
        .error_with(503, "unavailable", &["2 requests in flight"]);
    assert_eq!(
        s.post(&op_path("auth.whoami"), Some(&admin), &json!({}))
            .await
            .status,
        200
    );
    // The trickled bodies are cut off after the body timeout: 400, and the connection closes.
    for conn in [&mut a, &mut b] {
        let got = read_until_closed(conn, Duration::from_secs(3)).await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request"), "{got}");
        assert!(
            got.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
        assert!(got.contains("did not arrive within 1 s"), "{got}");
    }
    // The slots are free again.
    assert_eq!(
        s.post(&op_path("api_keys.list"), Some(&nobody), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_dropped_and_its_slot_freed() {
    let s = TestServer::start_with(&[
        "--write-timeout-seconds",
        "1",
        "--max-streams-per-principal",
        "1",
    ]);
    s.seed_keys("default", 30_000);
    let admin = s.admin_key().to_owned();
    // A client with a tiny receive window asks for every key and reads nothing.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(s.addr().parse().unwrap()).await.unwrap();
    let head = format!(
        "POST /v1/op/api_keys.list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    // Once its answer has begun, and while it is open, the principal's one stream slot is taken.
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stalled.read_exact(&mut head))
        .await
        .expect("the stream's answer begins")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s.post(
        &op_path("api_keys.list"),
        Some(&admin),
        &json!({ "limit": 1 }),
    )
    .await
    .error_with(503, "unavailable", &["1 streams open"]);
    // The server gives up on it after the write timeout: the slot is free again.
    eventually(
        "the stalled stream's slot is freed",
        Duration::from_secs(10),
        || async {
            s.post(
                &op_path("api_keys.list"),
                Some(&admin),
                &json!({ "limit": 1 }),
            )
            .await
            .status
                == 200
        },
    )
    .await;
    // What the stalled client can still read ends early, without the 30,001st line.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    let lines = text
        .lines()
        .filter(|l| l.starts_with("{\"id\":\"key_"))
        .count();
    assert!(
        lines < 30_001,
        "the whole stream was delivered to a client that did not read"
    );
}

#[tokio::test]
async fn org_claims_that_could_blur_two_organizations_are_refused() {
    let s = TestServer::start_with_env(&[], &[("OPGATE_SESSION_SECRET", &"x!".repeat(20))]);
    for org in ["a:b", "a/b", "a b"] {
        // Minting refuses it ...
        let out = opgate()
            .args([
                "admin",
                "mint-session",
                "--org",
                org,
                "--sub",
                "x",
                "--scopes",
                "*",
            ])
            .arg("--data-dir")
            .arg(s.data_dir())
            .env("OPGATE_SESSION_SECRET", "x!".repeat(20))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{org}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not an organization id"),
            "{org}"
        );
    }
    // ... and a token signed elsewhere with such a claim is refused.
    let now = crate::support::now_unix();
    let claims = json!({ "sub": "c", "org": "a:b", "scope": "*", "exp": now + 60, "iat": now });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret("x!".repeat(20).as_bytes()),
    )
    .unwrap();
    s.post(&op_path("auth.whoami"), Some(&token), &json!({}))
        .await
        .error_with(
            401,
            "unauthenticated",
            &["`org` claim must be 1–128 letters, digits"],
        );
}

#[tokio::test]
async fn one_data_dir_serves_once_and_offline_revokes_reach_the_server() {
    // The data-directory lock is SQLite's: a fleet on PostgreSQL shares its database by design.
    let s = TestServer::start_with_own_storage(&[], &[]);
    let admin = s.admin_key().to_owned();
    let made = s.create(&admin, json!({ "name": "doomed" })).await;
    let key = made["key"].as_str().unwrap().to_owned();
    let id = id_of(&made["key_details"]);
    assert_eq!(
        s.post(&op_path("auth.whoami"), Some(&key), &json!({}))
            .await
            .status,
        200
    );

    let second = opgate()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another opgate server is using the data directory"),
        "{stderr}"
    );

    let revoke = opgate()
        .args(["admin", "revoke-key", &id])
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    // The running server's cache learns of it through the change log, within a second (and some slack).
    eventually(
        "the offline revoke reaches the server",
        Duration::from_secs(2),
        || async {
            s.post(&op_path("auth.whoami"), Some(&key), &json!({}))
                .await
                .status
                == 401
        },
    )
    .await;
    s.post(&op_path("auth.whoami"), Some(&key), &json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_is_private_and_metrics_can_move_off_the_api_port() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = data.to_str().unwrap().to_owned();
    let s = TestServer::start_in(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let admin = s.admin_key().to_owned();
    s.create(&admin, json!({ "name": "x" })).await;
    for file in ["opgate.db", "opgate.db-wal", "opgate.db-shm", "secret"] {
        let mode = std::fs::metadata(s.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // Metrics live on their own port, not on the API port.
    let api = crate::support::send(s.request(reqwest::Method::GET, "/metrics", None)).await;
    api.error(404, "not_found");
    let metrics_url = s
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("metrics on ").map(str::to_owned))
        .expect("the metrics address is printed");
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("opgate_requests_total"), "{text}");

    let off = TestServer::start_with(&["--metrics", "off"]);
    crate::support::send(off.request(reqwest::Method::GET, "/metrics", None))
        .await
        .error(404, "not_found");
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body); `None` when the connection ends first.
/// Returns whether the server announced `Connection: close`.
async fn read_keep_alive_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, bool)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.get(9..12)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            let close = head.lines().any(|l| l.trim() == "connection: close");
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Some((status, close));
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `count` POSTs to `path` on keep-alive connections as many clients do (the head, then the body a
/// moment later), reconnecting only when the server said `Connection: close`; returns how many requests got
/// no answer because the server hung up unannounced.
async fn dropped_on_keep_alive(addr: String, path: String, token: String, count: usize) -> usize {
    let body = format!("{{\"name\": \"{}\"}}", "x".repeat(200));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let connect = || async {
        let conn = TcpStream::connect(&addr).await.unwrap();
        conn.set_nodelay(true).unwrap();
        conn
    };
    let mut conn = connect().await;
    let mut buf = Vec::new();
    let mut dropped = 0;
    for _ in 0..count {
        let sent = async {
            conn.write_all(head.as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            conn.write_all(body.as_bytes()).await
        }
        .await;
        let answer = match sent {
            Ok(()) => read_keep_alive_response(&mut conn, &mut buf).await,
            Err(_) => None,
        };
        match answer {
            Some((status, close)) => {
                assert!(status == 401 || status == 404, "status {status}");
                if close {
                    conn = connect().await;
                    buf.clear();
                }
            }
            None => {
                dropped += 1;
                conn = connect().await;
                buf.clear();
            }
        }
    }
    dropped
}

#[tokio::test]
async fn early_answers_never_drop_the_next_keep_alive_request() {
    let s = TestServer::start();
    let garbage = "opg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000".to_owned();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (path, token) = if i % 2 == 0 {
            (op_path("api_keys.create"), garbage.clone())
        } else {
            (op_path("nothing.here"), s.admin_key().to_owned())
        };
        tasks.push(tokio::spawn(dropped_on_keep_alive(
            s.addr(),
            path,
            token,
            1250,
        )));
    }
    let mut dropped = 0;
    for t in tasks {
        dropped += t.await.unwrap();
    }
    assert_eq!(
        dropped, 0,
        "of 10,000 requests answered early (401, 404) on keep-alive connections"
    );
}

#[tokio::test]
async fn unknown_scopes_are_refused_with_a_hint_and_form_bodies_are_told_the_header() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    s.post(
        &op_path("api_keys.create"),
        Some(&admin),
        &json!({ "name": "x", "permissions": ["api_keys:read", "api_keys:raed"] }),
    )
    .await
    .error_with(
        400,
        "invalid_argument",
        &["permissions[1]: `api_keys:raed` is not a scope any operation of this gateway requires; did you mean `api_keys:read`?"],
    );
    s.post(
        &op_path("api_keys.create"),
        Some(&admin),
        &json!({ "name": "x", "permissions": ["bogus:scope"] }),
    )
    .await
    .error_with(
        400,
        "invalid_argument",
        &["permissions[0]: `bogus:scope` is not a scope"],
    );
    let made = s
        .create(
            &admin,
            json!({ "name": "x", "permissions": ["api_keys:*"] }),
        )
        .await;
    s.post(
        &op_path("api_keys.update"),
        Some(&admin),
        &json!({ "key_id": id_of(&made["key_details"]), "permissions": ["audit:write"] }),
    )
    .await
    .error_with(400, "invalid_argument", &["did you mean `audit:read`?"]);
    // `curl -d '{}'` without a content type sends a form type.
    s.post_raw(
        &op_path("auth.whoami"),
        Some(&admin),
        Some("application/x-www-form-urlencoded"),
        "{}",
    )
    .await
    .error_with(
        415,
        "unsupported_media_type",
        &["send the header `Content-Type: application/json` (curl: -H 'Content-Type: application/json')"],
    );
}

#[tokio::test]
async fn a_malformed_token_never_touches_storage() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    s.id_of_key(&admin).await; // verified once: cached
                               // A well-formed key with a valid checksum that this gateway has never seen (another one minted it).
    let unknown = TestGateway::start()
        .await
        .create_key("default", &["*"])
        .await;
    let mut forged = admin.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();

    // Storage goes away: the store is closed and its files removed.
    s.data().store.close().await;
    for file in ["opgate.db", "opgate.db-wal", "opgate.db-shm"] {
        let _ = std::fs::remove_file(s.data_dir().join(file));
    }
    // Tokens refused by their shape are still refused, each with its own message: no lookup happened.
    for (token, part) in [
        ("opg_short", "the API key is malformed"),
        (forged.as_str(), "checksum does not match"),
        (
            "garbage",
            "the token is neither an API key nor a session token",
        ),
        ("abc.def.ghi", "malformed"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            "signature is not valid",
        ),
    ] {
        for op in ["auth.whoami", "api_keys.create"] {
            s.post(&op_path(op), Some(token), &json!({}))
                .await
                .error_with(401, "unauthenticated", &[part]);
        }
    }
    // A well-formed key that must be looked up finds storage gone: 503, not a 401 claiming it is unknown.
    s.post(&op_path("auth.whoami"), Some(&unknown), &json!({}))
        .await
        .error_with(503, "unavailable", &["storage"]);
    // A cached key is verified without storage.
    assert_eq!(s.id_of_key(&admin).await.len(), 30);
}

/// An HTTP/2 client that opens its window to nothing: the server can send response heads but no body.
async fn shut_window_h2(
    s: &TestServer,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(s.addr()).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test]
async fn an_http2_client_that_keeps_its_window_shut_cannot_hold_the_connection() {
    // Review: with a zero window, a response that can never be sent kept the connection open for minutes.
    let s = TestServer::start_with(&[
        "--header-read-timeout-seconds",
        "1",
        "--write-timeout-seconds",
        "5",
        "--max-streams-per-principal",
        "1",
    ]);
    // A small answer the server hands over at once: the connection is then idle, and its graceful close
    // cannot be held open either.
    let (mut send, driver) = shut_window_h2(&s).await;
    let req = hyper::Request::get(format!("http://{}/healthz", s.addr()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    // The response is kept: dropping it would reset the stream and free the server at once.
    let health = send.send_request(req).await.unwrap();
    assert_eq!(health.status(), 200);
    // Dropped after the write timeout (2 s) here; a loaded machine may take longer, never minutes.
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the server drops the connection")
        .unwrap()
        .ok();

    // A stream bigger than what HTTP/2 buffers: it makes no progress, holds the principal's stream slot, and
    // the connection is dropped after the write timeout, giving the slot back.
    s.seed_keys("default", 5_000);
    let (mut send, driver) = shut_window_h2(&s).await;
    let req = hyper::Request::post(format!("http://{}/v1/op/api_keys.list", s.addr()))
        .header("authorization", format!("Bearer {}", s.admin_key()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let stream = send.send_request(req).await.unwrap();
    assert_eq!(stream.status(), 200);
    s.post(
        &op_path("api_keys.list"),
        Some(s.admin_key()),
        &json!({ "limit": 1 }),
    )
    .await
    .error_with(503, "unavailable", &["1 streams open"]);
    tokio::time::timeout(Duration::from_secs(12), driver)
        .await
        .expect("the stalled stream's connection is dropped")
        .unwrap()
        .ok();
    eventually(
        "the stream slot is given back",
        Duration::from_secs(5),
        || async {
            s.post(
                &op_path("api_keys.list"),
                Some(s.admin_key()),
                &json!({ "limit": 1 }),
            )
            .await
            .status
                == 200
        },
    )
    .await;
    drop((health, stream));
}

#[tokio::test]
async fn an_idle_http2_connection_cannot_hold_its_close() {
    // Preface and SETTINGS, then nothing: closed about one header timeout after accept, not after the pings.
    let s = TestServer::start_with(&["--header-read-timeout-seconds", "1"]);
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let after = closed_within(&mut conn, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(after < Duration::from_secs(4), "closed after {after:?}");
}

#[tokio::test]
async fn early_refusals_give_their_request_slot_back_before_draining() {
    // Requests refused before their body is read (no token) wait for a body that never comes; they must not
    // hold the gateway's request slots meanwhile (review: 4 such streams gave the admin 503s).
    let s = TestServer::start_with(&["--max-concurrent-requests", "4"]);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = TcpStream::connect(s.addr()).await.unwrap();
        conn.write_all(
            b"POST /v1/op/auth.whoami HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
        held.push(conn);
    }
    // Each is being answered 401 while its body is awaited for the drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let reply = s
            .post(&op_path("auth.whoami"), Some(s.admin_key()), &json!({}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    drop(held);
}

#[tokio::test]
async fn one_organization_cannot_take_every_request_slot_with_many_keys() {
    let s = TestServer::start_with(&[
        "--max-concurrent-requests-per-org",
        "2",
        "--body-read-timeout-seconds",
        "5",
    ]);
    let acme: Vec<String> = (0..3)
        .map(|_| s.create_key("acme", &["api_keys:read"]))
        .collect();
    let body = br#"{"limit": 1}"#;
    // Two keys of acme each hold one slot with a slow upload: the organization's two.
    let _a = start_upload(&s, &acme[0], "api_keys.list", body.len(), &body[..2]).await;
    let _b = start_upload(&s, &acme[1], "api_keys.list", body.len(), &body[..2]).await;
    // A third key of acme is refused; another organization is served.
    s.post(&op_path("api_keys.list"), Some(&acme[2]), &json!({}))
        .await
        .error_with(
            503,
            "unavailable",
            &["this organization already has 2 requests in flight"],
        );
    assert_eq!(
        s.post(&op_path("auth.whoami"), Some(s.admin_key()), &json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn invisible_characters_are_refused_by_field() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    for (field, value, found) in [
        ("name", "admin\u{200b}", "U+200B"),
        ("name", "\u{feff}", "U+FEFF"),
        ("description", "a\u{202e}b", "U+202E"),
        ("description", "soft\u{ad}hyphen", "U+00AD"),
    ] {
        let mut body = json!({ "name": "ok" });
        body[field] = json!(value);
        s.post(&op_path("api_keys.create"), Some(&admin), &body)
            .await
            .error_with(
                400,
                "invalid_argument",
                &[&format!(
                    "{field}: must not contain invisible or formatting characters (found {found})"
                )],
            );
    }
}

#[test]
fn the_data_dir_lock_is_the_database_itself() {
    // A second server is refused even when nothing but the database file is there to lock.
    let s = TestServer::start_with_own_storage(&[], &[]);
    let _ = std::fs::remove_file(s.data_dir().join("opgate.lock"));
    let second = opgate()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains("another opgate server is using the data directory"));
}
