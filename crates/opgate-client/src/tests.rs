//! The client against a bare TCP server that answers whatever bytes a test scripts, to check what a real
//! gateway cannot easily be made to do: a stream that fails after its first lines, a connection that breaks
//! off, a body that is not the contract.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;
use crate::types::{GetKeyInput, KeyDetails, ListKeysInput, RevokeKeyInput};

/// Serves one connection: reads the request (head and `Content-Length` body), sends it back on the channel,
/// writes `response` in the given pieces, then closes.
async fn serve_once(pieces: Vec<Vec<u8>>) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
        for piece in pieces {
            socket.write_all(&piece).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = socket.shutdown().await;
    });
    (base, rx)
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const NDJSON_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nx-request-id: req_stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";

fn key_line(i: usize) -> String {
    format!(
        r#"{{"id":"key_{i}","name":"k{i}","description":null,"key_prefix":"opg_abcdefgh","permissions":["api_keys:read"],"rate_limit":null,"allowed_ips":[],"org_id":"default","workspace_id":"ws_01jf3m8v6k2x9q4w7e5r1t0y8z","environment_id":null,"mode":"live","livemode":true,"key_type":"workspace","is_active":true,"service_account_id":null,"created_by":"cli","created_at":"2026-01-01T00:00:00Z","expires_at":null,"last_used_at":null,"last_used_ip":null,"last_used_user_agent":null,"revoked_at":null,"replaced_by_key_id":null,"grace_expires_at":null,"status":"active"}}"#
    ) + "\n"
}

fn json_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: req_h\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_stream_that_fails_midway_yields_its_items_then_the_error() {
    // Two lines, the second split across chunks, then the error line in a chunk of its own.
    let (a, b) = (key_line(1), key_line(2));
    let (b1, b2) = b.split_at(40);
    let error = r#"{"error":{"code":"unavailable","message":"storage is unavailable; retry later","request_id":"req_stream"}}"#.to_owned() + "\n";
    let pieces = vec![
        NDJSON_HEAD.to_vec(),
        chunk(format!("{a}{b1}").as_bytes()),
        chunk(b2.as_bytes()),
        chunk(error.as_bytes()),
        b"0\r\n\r\n".to_vec(),
    ];
    let (base, request) = serve_once(pieces).await;
    let client = Client::new(&base).unwrap().with_token("opg_test");
    let mut stream = client
        .api_keys()
        .list(ListKeysInput {
            limit: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stream.request_id(), Some("req_stream"));
    let first: KeyDetails = stream.next().await.unwrap().unwrap();
    assert_eq!(first.id, "key_1");
    assert_eq!(stream.next().await.unwrap().unwrap().id, "key_2");
    let err = stream.next().await.unwrap().unwrap_err();
    match &err {
        Error::Api {
            code,
            status,
            streamed,
            request_id,
            ..
        } => {
            assert_eq!(*code, Code::Unavailable);
            assert_eq!(*status, 503);
            assert!(*streamed);
            assert_eq!(request_id.as_deref(), Some("req_stream"));
        }
        other => panic!("expected the stream's error, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the error ends the stream");

    let request = request.await.unwrap();
    assert!(request.starts_with("POST /v1/op/api_keys.list HTTP/1.1\r\n"));
    let lower = request.to_ascii_lowercase();
    assert!(lower.contains("authorization: bearer opg_test\r\n"));
    assert!(lower.contains("content-type: application/json\r\n"));
    assert!(request.ends_with(r#"{"limit":5,"include_revoked":false}"#));
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_an_error() {
    let pieces = vec![
        NDJSON_HEAD.to_vec(),
        chunk(key_line(1).as_bytes()),
        // Half a chunk, then the connection closes.
        b"400\r\n{\"id\":\"key_2\",".to_vec(),
    ];
    let (base, _) = serve_once(pieces).await;
    let client = Client::new(&base).unwrap();
    let mut stream = client
        .api_keys()
        .list(ListKeysInput::default())
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().id, "key_1");
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Connection { .. }),
        "expected a connection error, got {err:?}"
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn error_responses_carry_code_status_message_and_request_id() {
    let body = r#"{"error":{"code":"not_found","message":"key_id: no API key `key_x` in this organization","request_id":"req_body"}}"#;
    let (base, request) = serve_once(vec![json_response("404 Not Found", body)]).await;
    let client = Client::new(&base).unwrap().with_token("opg_t");
    let err = client
        .api_keys()
        .idempotency_key("retry-1")
        .revoke(RevokeKeyInput {
            key_id: "key_x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.request_id(), Some("req_body"));
    assert_eq!(
        err.to_string(),
        "not_found (404): key_id: no API key `key_x` in this organization"
    );
    let request = request.await.unwrap().to_ascii_lowercase();
    assert!(request.contains("idempotency-key: retry-1\r\n"));
}

#[tokio::test]
async fn a_body_that_is_not_the_output_type_is_a_protocol_error() {
    let (base, _) = serve_once(vec![json_response("200 OK", r#"{"unexpected":true}"#)]).await;
    let client = Client::new(&base).unwrap();
    let err = client
        .api_keys()
        .get(GetKeyInput {
            key_id: "key_1".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Protocol { status: 200, request_id: Some(r), .. } if r == "req_h"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_generic_call_reaches_any_operation() {
    let (base, request) = serve_once(vec![json_response(
        "200 OK",
        r#"{"id":"note_1","text":"hi"}"#,
    )])
    .await;
    let client = Client::new(&format!("{base}/")).unwrap();
    match client
        .call("notes.create", serde_json::json!({"text": "hi"}))
        .await
        .unwrap()
    {
        Reply::Json(v) => assert_eq!(v["id"], "note_1"),
        other => panic!("{other:?}"),
    }
    let request = request.await.unwrap();
    assert!(request.starts_with("POST /v1/op/notes.create HTTP/1.1\r\n"));
    assert!(request.ends_with(r#"{"text":"hi"}"#));

    let err = client
        .call("notes.create", serde_json::json!([1]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    let err = client
        .call("../etc", serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_connection_error() {
    // A port that was just free: nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let err = client.auth().whoami().await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot reach http://"), "{err}");
}

#[test]
fn base_urls_are_checked() {
    assert!(Client::new("http://127.0.0.1:8080").is_ok());
    assert_eq!(
        Client::new("http://gw.example.com/prefix/")
            .unwrap()
            .base_url(),
        "http://gw.example.com/prefix"
    );
    for bad in ["127.0.0.1:8080", "ftp://x", "http://x/?a=1", "not a url"] {
        assert!(
            matches!(Client::new(bad), Err(Error::Config(_))),
            "{bad} is refused"
        );
    }
    let debug = format!(
        "{:?}",
        Client::new("http://x").unwrap().with_token("opg_secret")
    );
    assert!(!debug.contains("opg_secret"));
}

#[tokio::test]
async fn a_workspace_client_sends_x_workspace_id_on_every_call() {
    let body = r#"{"id":"ws_01jf3m8v6k2x9q4w7e5r1t0y8z","org_id":"default","name":"Payments","description":null,"is_default":false,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;
    let (base, request) = serve_once(vec![json_response("200 OK", body)]).await;
    let client = Client::new(&base)
        .unwrap()
        .with_token("opg_t")
        .with_workspace("ws_01jf3m8v6k2x9q4w7e5r1t0y8z");
    assert_eq!(client.workspace_id(), Some("ws_01jf3m8v6k2x9q4w7e5r1t0y8z"));
    assert!(format!("{client:?}").contains("ws_01jf3m8v6k2x9q4w7e5r1t0y8z"));
    let got = client
        .workspaces()
        .get(crate::types::WorkspaceIdInput {
            workspace_id: "ws_01jf3m8v6k2x9q4w7e5r1t0y8z".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.name, "Payments");
    assert!(!got.is_default);
    let request = request.await.unwrap();
    assert!(request.starts_with("POST /v1/op/workspaces.get HTTP/1.1\r\n"));
    assert!(request
        .to_ascii_lowercase()
        .contains("x-workspace-id: ws_01jf3m8v6k2x9q4w7e5r1t0y8z\r\n"));

    // Without it, no header.
    let (base, request) = serve_once(vec![json_response("200 OK", body)]).await;
    let client = Client::new(&base)
        .unwrap()
        .with_workspace("ws_01jf3m8v6k2x9q4w7e5r1t0y8z")
        .without_workspace();
    client
        .call("workspaces.get", serde_json::json!({}))
        .await
        .unwrap();
    assert!(!request
        .await
        .unwrap()
        .to_ascii_lowercase()
        .contains("x-workspace-id"));

    // A value no header can carry is the caller's mistake, found before anything is sent.
    let err = Client::new("http://127.0.0.1:9")
        .unwrap()
        .with_workspace("ws_\n")
        .auth()
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
