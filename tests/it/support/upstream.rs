//! A real upstream service for the upstream-operation tests: hyper on 127.0.0.1:0 (HTTP/1.1 and h2c on one
//! port, or HTTPS), checking the identity signature the gateway sends and answering by path — echo, long
//! streams, slow, garbage, broken streams, contract errors — and counting the calls it got.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

/// The identity secret the tests configure for every upstream.
pub(crate) const SECRET: &str = "test-upstream-secret-0123456789abcdef";

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A running upstream service.
pub(crate) struct Upstream {
    /// `http://127.0.0.1:PORT` (or `https://localhost:PORT`).
    pub base: String,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// An upstream speaking HTTP/1.1 and h2c.
    pub(crate) async fn start() -> Upstream {
        Self::serve(None).await
    }

    /// An upstream speaking HTTPS with the certificate and key in these PEM files.
    pub(crate) async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Upstream {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let counted = Arc::clone(&counted);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let counted = Arc::clone(&counted);
                        async move { Ok::<_, Infallible>(answer(req, &counted).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(socket).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(socket);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        Upstream { base, calls, task }
    }

    /// The URL of one of its paths.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How many calls `path` got.
    pub(crate) fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .unwrap()
}

fn ndjson(
    lines: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
) -> hyper::Response<Body> {
    hyper::Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(
            lines.map(|r| r.map(Frame::data)),
        )))
        .unwrap()
}

/// What the signature check found, echoed back to the test.
fn check_identity(headers: &hyper::HeaderMap, body: &[u8]) -> Value {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (identity, timestamp, signature) = (
        header("opgate-identity"),
        header("opgate-timestamp"),
        header("opgate-signature"),
    );
    let request_id = header("x-request-id");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{request_id}.{identity}.").as_bytes());
    mac.update(body);
    let expected = format!(
        "v1={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&identity)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    json!({
        "signature_ok": !signature.is_empty() && signature == expected,
        "identity": decoded,
        "request_id": request_id,
        "authorization": headers.get("authorization").is_some(),
        "timestamp": timestamp.parse::<i64>().unwrap_or(0),
    })
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    calls: &Mutex<HashMap<String, usize>>,
) -> hyper::Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    *calls.lock().unwrap().entry(path.clone()).or_default() += 1;
    let version = format!("{:?}", req.version());
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match path.as_str() {
        "/echo" => {
            let mut seen = check_identity(&parts.headers, &body);
            seen["id"] = json!("rep_1");
            seen["input"] = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen["http_version"] = json!(version);
            full(200, "application/json", seen.to_string())
        }
        "/v2" => full(200, "application/json", r#"{"version": 2}"#),
        "/stream" => {
            let n: usize = query
                .strip_prefix("n=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(3);
            let pad = "x".repeat(100);
            let lines = futures_util::stream::iter(0..n)
                .map(move |i| Ok(Bytes::from(format!("{{\"i\": {i}, \"pad\": \"{pad}\"}}\n"))));
            ndjson(lines)
        }
        "/break" => {
            // Three lines, a pause (so they are sent), then the connection breaks.
            let lines = futures_util::stream::iter(0..4).then(|i| async move {
                if i < 3 {
                    Ok(Bytes::from(format!("{{\"i\": {i}}}\n")))
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(std::io::Error::other("the upstream breaks off"))
                }
            });
            ndjson(lines)
        }
        "/badline" => ndjson(futures_util::stream::iter([
            Ok(Bytes::from_static(b"{\"i\": 0}\n")),
            Ok(Bytes::from_static(b"not json\n")),
        ])),
        "/errline" => ndjson(futures_util::stream::iter([
            Ok(Bytes::from_static(b"{\"i\": 0}\n{\"i\": 1}\n")),
            Ok(Bytes::from_static(
                b"{\"error\": {\"code\": \"internal\", \"message\": \"Traceback: password=hunter2\"}}\n",
            )),
        ])),
        "/trickle" => {
            // A byte at a time, never a whole line.
            let bytes = futures_util::stream::iter(0..100).then(|_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Bytes::from_static(b" "))
            });
            ndjson(bytes)
        }
        "/unauthenticated" => full(
            401,
            "application/json",
            r#"{"error": {"code": "unauthenticated", "message": "the service does not know you"}}"#,
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            full(200, "application/json", "{}")
        }
        "/garbage" => full(200, "text/plain", "oops, a stack trace"),
        "/conflict" => full(
            409,
            "application/json",
            r#"{"error": {"code": "conflict", "message": "a report is already running"}}"#,
        ),
        "/error500" => full(
            500,
            "application/json",
            r#"{"error": {"code": "internal", "message": "db password is hunter2"}}"#,
        ),
        _ => full(404, "text/plain", "no such path"),
    }
}
