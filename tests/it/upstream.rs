//! Upstream operations: declared in the configuration file, served by a real upstream service
//! (support/upstream.rs) behind the real binary. Forwarding and the signed identity, schema errors, the answer
//! (JSON as is, a long NDJSON stream with flat memory, contract errors passed on), an upstream that is down,
//! slow, answers garbage or breaks off, idempotent replay without a second upstream call, audit, scopes,
//! h2c and HTTPS, the spec and the reference, `config check`, and SIGHUP reloads under load.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::upstream::{Upstream, SECRET};
use crate::support::{closed_port, op_path, opgate, TestServer};

/// One `[[upstream]]` table.
fn table(id: &str, scope: &str, side_effect: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[upstream]]
id = "{id}"
summary = "{id}, served upstream."
scope = "{scope}"
side_effect = "{side_effect}"
url = "{url}"
input_schema = "report.input.json"
secret_file = "upstream.secret"
{extra}
"#
    )
}

/// `reports.generate`, a write needing `reports:write`, served at `url`.
fn generate(url: &str) -> String {
    table("reports.generate", "reports:write", "write", url, "")
}

/// A configuration directory: the schema, the secret and `opgate.toml` with `tables`.
struct Config {
    dir: tempfile::TempDir,
}

impl Config {
    fn new(tables: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("report.input.json"),
            json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "pages": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "contact": {"type": "string", "format": "email"}
                },
                "required": ["title"],
                "additionalProperties": false
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("upstream.secret"), format!("{SECRET}\n")).unwrap();
        let config = Config { dir };
        config.write(tables);
        config
    }

    fn write(&self, tables: &str) {
        // Written whole, then renamed: a reload never reads half a file.
        let tmp = self.dir.path().join("opgate.toml.tmp");
        std::fs::write(&tmp, tables).unwrap();
        std::fs::rename(tmp, self.path()).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("opgate.toml")
    }

    fn start(&self) -> TestServer {
        TestServer::start_with(&["--config", self.path().to_str().unwrap()])
    }
}

/// A key of the default workspace holding `scopes`.
async fn key(s: &TestServer, scopes: &[&str]) -> (String, String) {
    let made = s
        .create(
            s.admin_key(),
            json!({"name": "caller", "permissions": scopes}),
        )
        .await;
    (
        made["key"].as_str().unwrap().to_owned(),
        made["key_details"]["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_call_is_forwarded_with_the_signed_identity_and_answered_as_is() {
    let up = Upstream::start().await;
    let config = Config::new(&generate(&up.url("/echo")));
    let s = config.start();
    let (token, key_id) = key(&s, &["reports:write"]).await;
    let r = s
        .post(
            "/v1/reports/generate",
            Some(&token),
            &json!({"title": "Q3", "pages": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["signature_ok"], true, "{seen}");
    assert_eq!(
        seen["authorization"], false,
        "the client's credential stays at the gateway"
    );
    assert_eq!(seen["request_id"], r.request_id());
    assert_eq!(seen["input"], json!({"title": "Q3", "pages": 2}));
    let identity = &seen["identity"];
    assert_eq!(identity["org_id"], "default");
    assert_eq!(identity["mode"], "live");
    assert!(identity["workspace_id"]
        .as_str()
        .unwrap()
        .starts_with("ws_"));
    assert_eq!(
        identity["principal"],
        json!({"id": key_id, "kind": "api_key", "key_type": "workspace", "service_account_id": null})
    );
    assert_eq!(identity["scopes"], json!(["reports:write"]));
    let age = crate::support::now_unix() - seen["timestamp"].as_i64().unwrap();
    assert!((0..60).contains(&age), "timestamp {age} s old");
    // The body is the upstream's, byte for byte.
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(up.calls("/echo"), 1);

    // Audited like any write, with the answer's id as its target.
    let audit = s
        .call_ok(
            "audit.list",
            s.admin_key(),
            json!({"operation": "reports.generate"}),
        )
        .await
        .lines();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["status"], 200);
    assert_eq!(audit[0]["target_id"], "rep_1");
    assert_eq!(audit[0]["principal_id"], key_id);
}

#[tokio::test]
async fn the_body_is_checked_against_the_schema_before_the_upstream_sees_it() {
    let up = Upstream::start().await;
    let config = Config::new(&generate(&up.url("/echo")));
    let s = config.start();
    let (token, _) = key(&s, &["reports:write"]).await;
    let cases: [(&[u8], &str); 7] = [
        (br#"{"pages": 2}"#, r#""title" is a required property"#),
        (
            br#"{"title": "Q3", "pages": "two"}"#,
            r#"pages: "two" is not of type "integer""#,
        ),
        (
            br#"{"title": "Q3", "pages": 0}"#,
            "pages: 0 is less than the minimum of 1",
        ),
        (
            br#"{"title": "Q3", "tags": ["a", 7]}"#,
            r#"tags[1]: 7 is not of type "string""#,
        ),
        (
            br#"{"title": "Q3", "color": "red"}"#,
            "Additional properties are not allowed ('color' was unexpected)",
        ),
        (
            br#"{"title": "#,
            "the request body is not valid JSON: EOF while parsing a value",
        ),
        (
            br#"{"title": "Q3", "contact": "not an email"}"#,
            r#"contact: "not an email" is not a "email""#,
        ),
    ];
    for (body, message) in cases {
        let r = s
            .post_raw(
                &op_path("reports.generate"),
                Some(&token),
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        assert_eq!(
            r.error(400, "invalid_argument"),
            message,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let r = s
        .post_raw(
            &op_path("reports.generate"),
            Some(&token),
            Some("application/json"),
            b"[1]".to_vec(),
        )
        .await;
    assert_eq!(
        r.error(400, "invalid_argument"),
        "the request body must be a JSON object"
    );
    // Without the scope: refused before anything is forwarded.
    let (reader, _) = key(&s, &["api_keys:read"]).await;
    let r = s
        .post(
            &op_path("reports.generate"),
            Some(&reader),
            &json!({"title": "x"}),
        )
        .await;
    r.error_with(403, "permission_denied", &["reports:write"]);
    assert_eq!(up.calls("/echo"), 0);
}

#[tokio::test]
async fn an_idempotent_retry_is_answered_without_a_second_upstream_call() {
    let up = Upstream::start().await;
    let config = Config::new(&generate(&up.url("/echo")));
    let s = config.start();
    let (token, _) = key(&s, &["reports:write"]).await;
    let send = || {
        crate::support::send(
            s.request(
                reqwest::Method::POST,
                &op_path("reports.generate"),
                Some(&token),
            )
            .header("idempotency-key", "report-q3")
            .json(&json!({"title": "Q3"})),
        )
    };
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = send().await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(up.calls("/echo"), 1);
}

#[tokio::test]
async fn a_long_stream_goes_through_line_by_line_with_flat_memory() {
    let up = Upstream::start().await;
    let config = Config::new(&table(
        "reports.lines",
        "reports:read",
        "read",
        &up.url("/stream?n=100000"),
        "streaming = true",
    ));
    let s = config.start();
    let (token, _) = key(&s, &["reports:read"]).await;
    let peak = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // Warm up (connections, allocator), then measure the peak over the long stream.
    let warm = s
        .post(
            &op_path("reports.lines"),
            Some(&token),
            &json!({"title": "t"}),
        )
        .await;
    assert_eq!(warm.status, 200);
    let before = peak(s.pid());
    let response = s
        .request(
            reqwest::Method::POST,
            &op_path("reports.lines"),
            Some(&token),
        )
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.bytes_stream();
    let (mut lines, mut bytes, mut last) = (0usize, 0usize, Vec::new());
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        last.extend_from_slice(&chunk);
        if last.len() > 4096 {
            last.drain(..last.len() - 4096);
        }
    }
    assert_eq!(lines, 100_000);
    let tail = String::from_utf8_lossy(&last);
    let final_line: Value =
        serde_json::from_str(tail.trim_end().rsplit('\n').next().unwrap()).unwrap();
    assert_eq!(final_line["i"], 99_999);
    let grown_kib = peak(s.pid()).saturating_sub(before);
    assert!(
        grown_kib < 16 * 1024,
        "{bytes} bytes streamed, peak RSS grew by {grown_kib} KiB"
    );
}

#[tokio::test]
async fn what_an_upstream_does_wrong_becomes_bad_gateway_or_gateway_timeout() {
    let up = Upstream::start().await;
    let down = closed_port();
    let tables = [
        table("up.down", "up:call", "read", &down.url, "timeout_ms = 2000"),
        table(
            "up.slow",
            "up:call",
            "read",
            &up.url("/slow"),
            "timeout_ms = 300",
        ),
        table("up.garbage", "up:call", "read", &up.url("/garbage"), ""),
        table("up.conflict", "up:call", "write", &up.url("/conflict"), ""),
        table("up.error500", "up:call", "read", &up.url("/error500"), ""),
        table(
            "up.missing",
            "up:call",
            "read",
            &up.url("/nothing-here"),
            "",
        ),
        table(
            "up.broken",
            "up:call",
            "read",
            &up.url("/break"),
            "streaming = true",
        ),
        table(
            "up.badline",
            "up:call",
            "read",
            &up.url("/badline"),
            "streaming = true",
        ),
        table(
            "up.notastream",
            "up:call",
            "read",
            &up.url("/echo"),
            "streaming = true",
        ),
        table(
            "up.errline",
            "up:call",
            "read",
            &up.url("/errline"),
            "streaming = true",
        ),
        table(
            "up.trickle",
            "up:call",
            "read",
            &up.url("/trickle"),
            "streaming = true\ntimeout_ms = 300",
        ),
        table(
            "up.unauthenticated",
            "up:call",
            "read",
            &up.url("/unauthenticated"),
            "",
        ),
    ]
    .concat();
    let config = Config::new(&tables);
    let s = config.start();
    let (token, _) = key(&s, &["up:call"]).await;
    let call = |op: &'static str| {
        let (s, token) = (&s, &token);
        async move {
            s.post(&op_path(op), Some(token), &json!({"title": "t"}))
                .await
        }
    };
    let cases = [
        (
            "up.down",
            502,
            "bad_gateway",
            "the upstream service could not be reached",
        ),
        (
            "up.slow",
            504,
            "gateway_timeout",
            "the upstream service did not answer within 300 ms",
        ),
        (
            "up.garbage",
            502,
            "bad_gateway",
            "the upstream service's answer is not JSON",
        ),
        // A contract-shaped refusal passes through; internals and mismatched statuses do not.
        (
            "up.conflict",
            409,
            "conflict",
            "a report is already running",
        ),
        (
            "up.error500",
            502,
            "bad_gateway",
            "the upstream service answered 500",
        ),
        (
            "up.missing",
            502,
            "bad_gateway",
            "the upstream service answered 404",
        ),
        // Codes that speak of the gateway's own checks are not passed on: a client would drop a good token.
        (
            "up.unauthenticated",
            502,
            "bad_gateway",
            "the upstream service answered 401",
        ),
        (
            "up.notastream",
            502,
            "bad_gateway",
            "the upstream service answered `application/json`, not an NDJSON stream",
        ),
    ];
    for (op, status, code, message) in cases {
        let started = std::time::Instant::now();
        let r = call(op).await;
        assert_eq!(r.error(status, code), message, "{op}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{op} took {:?}",
            started.elapsed()
        );
        assert!(!r.text().contains("hunter2") && !r.text().contains("stack trace"));
    }
    // A stream that breaks off or sends garbage: the lines so far, then the contract's error line.
    for (op, good, code, message) in [
        (
            "up.broken",
            3,
            "bad_gateway",
            "the upstream service's stream broke off",
        ),
        (
            "up.badline",
            1,
            "bad_gateway",
            "the upstream service's stream holds a line that is not JSON",
        ),
        // The service's own error line is worded by the gateway: no internals.
        (
            "up.errline",
            2,
            "bad_gateway",
            "the upstream service's stream ended with an error",
        ),
        (
            "up.trickle",
            0,
            "gateway_timeout",
            "the upstream service's stream went 300 ms without a whole line",
        ),
    ] {
        let r = call(op).await;
        assert_eq!(r.status, 200, "{op}");
        let lines = r.lines();
        assert_eq!(lines.len(), good + 1, "{op}: {lines:?}");
        assert_eq!(
            lines[good],
            json!({"error": {"code": code, "message": message, "request_id": r.request_id()}}),
            "{op}"
        );
    }
}

#[tokio::test]
async fn h2c_and_https_upstreams() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file, _ca) = crate::config_tls::private_ca(dir.path());
    let tls = Upstream::start_tls(&cert, &key_file).await;
    let tables = [
        table(
            "up.h2c",
            "up:call",
            "read",
            &up.url("/echo"),
            "http2 = true",
        ),
        table(
            "up.tls",
            "up:call",
            "read",
            &tls.url("/echo"),
            &format!("ca_file = {:?}", dir.path().join("ca.pem")),
        ),
        table("up.untrusted", "up:call", "read", &tls.url("/echo"), ""),
    ]
    .concat();
    let config = Config::new(&tables);
    let s = config.start();
    let (token, _) = key(&s, &["up:call"]).await;
    let r = s
        .post(&op_path("up.h2c"), Some(&token), &json!({"title": "t"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["http_version"], "HTTP/2.0");
    let r = s
        .post(&op_path("up.tls"), Some(&token), &json!({"title": "t"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["signature_ok"], true);
    let r = s
        .post(
            &op_path("up.untrusted"),
            Some(&token),
            &json!({"title": "t"}),
        )
        .await;
    assert_eq!(
        r.error(502, "bad_gateway"),
        "the upstream service could not be reached"
    );
}

#[tokio::test]
async fn upstream_operations_are_in_the_spec_the_reference_and_config_check() {
    let up = Upstream::start().await;
    let config = Config::new(&table(
        "reports.generate",
        "reports:write",
        "write",
        &up.url("/echo"),
        r#"output_schema = { type = "object", properties = { id = { type = "string" } } }
example = { title = "Q3 revenue", pages = 3 }"#,
    ));
    let s = config.start();
    let served = crate::support::send(s.request(reqwest::Method::GET, "/openapi.json", None))
        .await
        .json();
    let op = &served["paths"]["/v1/op/reports.generate"]["post"];
    assert_eq!(op["x-scope"], "reports:write");
    assert_eq!(op["x-side-effect"], "write");
    assert_eq!(op["summary"], "reports.generate, served upstream.");
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["example"],
        json!({"title": "Q3 revenue", "pages": 3})
    );
    assert_eq!(
        served["components"]["schemas"]["ReportsGenerateInput"]["required"],
        json!(["title"])
    );
    assert!(served["components"]["schemas"]["ReportsGenerateOutput"].is_object());
    // `opgate spec --config` writes the same operations.
    let out = opgate()
        .args(["spec", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        spec["paths"]["/v1/reports/generate"]["post"]["x-scope"],
        "reports:write"
    );

    // An agent sees it as an MCP tool that reaches outside the gateway.
    let listed = crate::support::send(
        s.request(reqwest::Method::POST, "/mcp", Some(s.admin_key()))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    )
    .await
    .json();
    let tool = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reports.generate")
        .expect("the upstream operation is a tool")
        .clone();
    assert_eq!(tool["annotations"]["openWorldHint"], true, "{tool}");
    assert_eq!(tool["inputSchema"]["required"], json!(["title"]));
    let builtin = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "api_keys.list")
        .unwrap()
        .clone();
    assert_eq!(builtin["annotations"]["openWorldHint"], false);

    let check = opgate()
        .args(["config", "check", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "upstream reports.generate = POST {}  # scope reports:write, write\n",
            up.url("/echo")
        )),
        "{stdout}"
    );
}

#[test]
fn an_invalid_configuration_is_refused_with_every_problem() {
    let bad = [table(
        "api_keys.create",
        "api_keys:write",
        "write",
        "http://127.0.0.1:9/",
        "",
    )]
    .concat();
    let config = Config::new(&bad);
    for args in [
        vec!["config", "check"],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = opgate()
            .args(&args)
            .arg("--config")
            .arg(config.path())
            .args(["--data-dir"])
            .arg(config.dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "upstream `api_keys.create`: operation `api_keys.create` is registered twice"
            ),
            "{args:?}: {stderr}"
        );
    }
    config.write(
        &[
            table("reports.generate", "reports:*", "sometimes", "ftp://x/", ""),
            table(
                "reports.generate",
                "reports:write",
                "write",
                "http://127.0.0.1:9/",
                "timeout_ms = 0",
            ),
            table(
                "reports.other",
                "reports:write",
                "write",
                "http://127.0.0.1:9/",
                r#"output_schema = { "$schema" = "http://json-schema.org/draft-07/schema#", type = "object" }"#,
            ),
            table(
                "reports.third",
                "reports:write",
                "write",
                "http://127.0.0.1:9/",
                r#"output_schema = { "$schema" = "http://127.0.0.1:9/my-meta", type = "object" }"#,
            ),
        ]
        .concat(),
    );
    let out = opgate()
        .args(["config", "check", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "upstream `reports.generate`: `scope` `reports:*` is not a scope (<resource>:<action>, no wildcard)",
        "upstream `reports.generate`: `side_effect` `sometimes` is not one of read, write, export, destructive",
        "upstream `reports.generate`: `url` `ftp://x/` must be an http:// or https:// URL with a host",
        "upstream `reports.generate`: declared twice",
        "upstream `reports.generate`: `timeout_ms` must be between 1 and 300000",
        "upstream `reports.other`: `output_schema`: `$schema` must be absent or https://json-schema.org/draft/2020-12/schema",
        "upstream `reports.third`: `output_schema`: `$schema` must be absent or https://json-schema.org/draft/2020-12/schema",
    ] {
        assert!(stderr.contains(problem), "{problem}\n{stderr}");
    }
}

/// Calls `op` in a loop until told to stop; returns (calls, failures).
async fn hammer(
    base: String,
    token: String,
    op: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Vec<String>) {
    let client = reqwest::Client::new();
    let (mut calls, mut failures) = (0, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let r = client
            .post(format!("{base}{}", op_path(op)))
            .bearer_auth(&token)
            .json(&json!({"title": "t"}))
            .send()
            .await;
        calls += 1;
        match r {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => failures.push(e.to_string()),
        }
    }
    (calls, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_upstream_operations_under_load_without_a_failed_call() {
    let up = Upstream::start().await;
    let config = Config::new(&generate(&up.url("/echo")));
    let s = config.start();
    let (token, _) = key(&s, &["reports:*"]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(hammer(
                s.url(""),
                token.clone(),
                "reports.generate",
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new set: reports.generate moves to /v2, reports.status appears.
    config.write(
        &[
            table(
                "reports.generate",
                "reports:write",
                "write",
                &up.url("/v2"),
                "",
            ),
            table(
                "reports.status",
                "reports:read",
                "read",
                &up.url("/echo"),
                "",
            ),
        ]
        .concat(),
    );
    s.hangup();
    crate::support::eventually("the new set serves", Duration::from_secs(5), || async {
        s.post(
            &op_path("reports.status"),
            Some(&token),
            &json!({"title": "t"}),
        )
        .await
        .status
            == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s
        .post(
            &op_path("reports.generate"),
            Some(&token),
            &json!({"title": "t"}),
        )
        .await;
    assert_eq!(r.json(), json!({"version": 2}));

    // An invalid file is refused; the running set stays. (A schema naming an unknown meta-schema once took
    // the server down.)
    config.write(&table(
        "reports.generate",
        "reports:write",
        "write",
        &up.url("/echo"),
        r#"output_schema = { "$schema" = "http://127.0.0.1:9/my-meta", type = "object" }"#,
    ));
    s.hangup();
    crate::support::eventually("the refusal is logged", Duration::from_secs(5), || async {
        s.log()
            .contains("SIGHUP: configuration refused; the running operations stay")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (calls, failures) = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed calls during the reloads: {failures:?}"
        );
        total += calls;
    }
    assert!(total > 20, "the load ran ({total} calls)");
    let r = s
        .post(
            &op_path("reports.status"),
            Some(&token),
            &json!({"title": "t"}),
        )
        .await;
    assert_eq!(r.status, 200, "the old set stays after a refused reload");
    assert!(up.calls("/v2") > 0);
}
