//! Configuration precedence (file < environment < flag), `opgate config check`, and HTTPS with rustls.

use std::process::Command;
use std::time::Duration;

use crate::support::{op_path, opgate, read_until_closed, TestServer};
use tokio::io::AsyncWriteExt;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A body of exactly `n` bytes that decodes as `{}`-like input for `api_keys.list`.
fn body_of(n: usize) -> String {
    let pad = n - r#"{"limit":1}"#.len();
    format!(r#"{{"limit":1{}}}"#, " ".repeat(pad))
}

async fn status_for(s: &TestServer, n: usize) -> u16 {
    s.post_raw(
        &op_path("api_keys.list"),
        Some(s.admin_key()),
        Some("application/json"),
        body_of(n),
    )
    .await
    .status
}

#[tokio::test]
async fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "opgate.toml",
        "max_body_bytes = 100\nrequest-timeout-seconds = 5\n",
    );
    let from_file = TestServer::start_with(&["--config", &file]);
    assert_eq!(status_for(&from_file, 100).await, 200);
    assert_eq!(
        status_for(&from_file, 101).await,
        413,
        "the file's limit applies"
    );

    let env_wins =
        TestServer::start_with_env(&["--config", &file], &[("OPGATE_MAX_BODY_BYTES", "300")]);
    assert_eq!(
        status_for(&env_wins, 250).await,
        200,
        "the environment beats the file"
    );

    let flag_wins = TestServer::start_with_env(
        &["--config", &file, "--max-body-bytes", "50"],
        &[("OPGATE_MAX_BODY_BYTES", "300")],
    );
    assert_eq!(
        status_for(&flag_wins, 60).await,
        413,
        "the flag beats the environment"
    );
    assert_eq!(status_for(&flag_wins, 50).await, 200);
}

#[test]
fn config_check_prints_the_effective_settings_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "opgate.toml",
        "listen = \"127.0.0.1:9999\"\nsecret = \"a-server-secret-that-is-long-enough-32\"\ntrusted_proxies = [\"10.0.0.0/8\"]\ndatabase_url = \"postgres://gate:hunter2-password@db.internal/opgate\"\n",
    );
    let out = opgate()
        .args([
            "config",
            "check",
            "--config",
            &file,
            "--max-body-bytes",
            "2048",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "listen = 127.0.0.1:9999  # config file",
        "secret = ******** (masked)  # config file",
        "trusted_proxies = 10.0.0.0/8  # config file",
        "database_url = postgres://gate:********@db.internal/opgate  # config file",
        "max_body_bytes = 2048  # flag",
        "request_timeout_seconds = 30  # default",
        "# ok: the settings are valid",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("a-server-secret"), "the secret is masked");
    assert!(!text.contains("hunter2"), "the database password is masked");

    for (content, expected) in [
        ("bogus = 1\n", "unknown setting `bogus`"),
        ("max_body_bytes = \"lots\"\n", "max-body-bytes"),
        ("listen = \n", "config file"),
    ] {
        let bad = write(dir.path(), "bad.toml", content);
        let out = opgate()
            .args(["config", "check", "--config", &bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{content}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{content}: {err}");
    }
}

/// A private CA and a certificate for `localhost` signed by it, as an operator would have, made with
/// openssl in `dir`: (certificate, key, CA certificate).
pub(crate) fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    let ext = write(dir, "ext.cnf", "subjectAltName=DNS:localhost\n");
    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=opgate test CA",
            "-keyout",
        ]
        .map(String::from)
        .into_iter()
        .chain([d("ca.key"), "-out".into(), d("ca.pem")])
        .collect(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ]
        .map(String::from)
        .into_iter()
        .chain([d("key.pem"), "-out".into(), d("leaf.csr")])
        .collect(),
        ["x509", "-req", "-days", "1", "-CAcreateserial", "-in"]
            .map(String::from)
            .into_iter()
            .chain([
                d("leaf.csr"),
                "-CA".into(),
                d("ca.pem"),
                "-CAkey".into(),
                d("ca.key"),
            ])
            .chain(["-out".into(), d("cert.pem"), "-extfile".into(), ext.clone()])
            .collect(),
    ];
    for args in &steps {
        let made = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl makes test certificates");
        assert!(
            made.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    (cert, key, ca)
}

#[tokio::test]
async fn https_with_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = private_ca(dir.path());
    let s = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(s.url("").starts_with("https://"), "{}", s.url(""));
    let port = s.addr().rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/v1/op/auth.whoami");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args(["-s", flag, "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {}", s.admin_key())])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                "{}",
                "-w",
                "\n%{http_version} %{http_code}",
                &url,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, tail) = text.rsplit_once('\n').unwrap();
        assert_eq!(tail, format!("{version} 200"), "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap()["kind"],
            "api_key"
        );
    }
    // The CLI reaches it too, trusting the certificate with --ca-cert.
    let cli = opgate()
        .args([
            "auth",
            "whoami",
            "--json",
            "--url",
            &format!("https://localhost:{port}"),
            "--ca-cert",
        ])
        .arg(&ca)
        .args(["--token", s.admin_key()])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let who: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(who["kind"], "api_key");
    // Without trusting it, the CLI refuses the certificate (a connection error, exit 5).
    let untrusted = opgate()
        .args([
            "auth",
            "whoami",
            "--url",
            &format!("https://localhost:{port}"),
            "--token",
            s.admin_key(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    // Plain HTTP to the TLS port gets no HTTP answer: the handshake fails and the connection is closed at
    // once (not merely left hanging).
    let mut plain = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    plain
        .write_all(b"POST /v1/op/auth.whoami HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let got = read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(!got.contains("HTTP/1.1"), "{got}");
    // A bad key file refuses to start.
    let bad = opgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("TLS private key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
