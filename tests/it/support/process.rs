//! The black-box harness: starts the real `opgate` binary on `127.0.0.1:0` with its own temporary data
//! directory and speaks HTTP to it. Every test gets its own server, so tests run in parallel safely.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_opgate");
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `opgate serve` over a temporary data directory; killed on drop.
pub(crate) struct TestServer {
    /// Kept alive (and deleted on drop) when the server made its own data directory.
    _temp: Option<TempDir>,
    path: std::path::PathBuf,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    child: Child,
    base: String,
    admin_key: String,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl TestServer {
    /// Starts a server on an empty data directory and captures the admin key it prints.
    pub(crate) fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `opgate serve` flags (kept across restarts).
    pub(crate) fn start_with(extra_args: &[&str]) -> TestServer {
        Self::start_with_env(extra_args, &[])
    }

    /// Starts a server with extra `opgate serve` flags and environment variables (e.g.
    /// `OPGATE_SESSION_SECRET`), both kept across restarts and passed to [`TestServer::mint_session`].
    pub(crate) fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        on_test_database(&path);
        Self::launch(Some(dir), path, extra_args, env)
    }

    /// Like [`TestServer::start_with_env`], but never on the suite's test database: on SQLite in the data directory,
    /// or on the database the flags name. For the tests of what is SQLite's own (the data-directory lock, the
    /// database file) and those that bring a database of their own.
    pub(crate) fn start_with_own_storage(extra_args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        Self::launch(Some(dir), path, extra_args, env)
    }

    /// Starts a server on the data directory `path` (which the caller cleans up).
    pub(crate) fn start_in(path: &str, extra_args: &[&str]) -> TestServer {
        Self::launch(None, path.into(), extra_args, &[])
    }

    /// Starts a server on a data directory that already holds keys (so no admin key is printed; `admin_key`
    /// is then empty), with extra flags and environment.
    pub(crate) fn start_existing(
        path: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base, admin_key) = spawn(path, &extra_args, &extra_env, &log);
        assert_eq!(
            admin_key, None,
            "a data directory with keys mints no admin key"
        );
        TestServer {
            _temp: None,
            path: path.to_owned(),
            extra_args,
            extra_env,
            child,
            base,
            admin_key: String::new(),
            log,
            client: reqwest::Client::new(),
        }
    }

    fn launch(
        temp: Option<TempDir>,
        path: std::path::PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base, admin_key) = spawn(&path, &extra_args, &extra_env, &log);
        let admin_key = admin_key.expect("the first start prints `admin key: opg_...`");
        TestServer {
            _temp: temp,
            path,
            extra_args,
            extra_env,
            child,
            base,
            admin_key,
            log,
            client: reqwest::Client::new(),
        }
    }

    /// Stops the server with SIGTERM (asserting a clean exit 0) and starts it again on the same data directory.
    /// The admin key must not be printed a second time.
    pub(crate) fn restart(&mut self) {
        self.terminate();
        self.wait_exit();
        self.respawn();
    }

    /// Starts the server again after [`TestServer::terminate`] and [`TestServer::wait_exit`].
    pub(crate) fn restart_stopped(&mut self) {
        self.respawn();
    }

    /// Starts the server again on the same data directory, flags and environment, with fresh connections.
    fn respawn(&mut self) {
        let (child, base, admin_key) =
            spawn(&self.path, &self.extra_args, &self.extra_env, &self.log);
        assert_eq!(admin_key, None, "the admin key is printed only once");
        self.child = child;
        self.base = base;
        self.client = reqwest::Client::new();
    }

    /// Sends SIGHUP (reload the configuration file).
    pub(crate) fn hangup(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM without waiting for the exit.
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    /// Waits for the process to exit after [`TestServer::terminate`], asserting exit code 0; kills it and fails
    /// past the stop timeout.
    pub(crate) fn wait_exit(&mut self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for opgate") {
                assert!(
                    status.success(),
                    "opgate exited with {status}\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "opgate did not exit within {STOP_TIMEOUT:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no shutdown, no flush) and starts it again on the same data directory.
    pub(crate) fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.respawn();
    }

    /// `host:port` the server listens on.
    pub(crate) fn addr(&self) -> String {
        self.base
            .split_once("://")
            .map_or(&*self.base, |(_, addr)| addr)
            .to_owned()
    }

    /// Everything the server wrote on stderr so far (for failure messages).
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.path
    }

    pub(crate) fn admin_key(&self) -> &str {
        &self.admin_key
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request builder for `method path` with `Authorization: Bearer token` when a token is given.
    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// POSTs `body` as JSON.
    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        send(self.request(Method::POST, path, token).json(body)).await
    }

    /// POSTs raw bytes with the given content type (none when `None`).
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut rb = self.request(Method::POST, path, token).body(body);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        send(rb).await
    }

    /// Calls operation `op` at `/v1/op/<op>` with `token`, expecting 200.
    pub(crate) async fn call_ok(&self, op: &str, token: &str, body: Value) -> Reply {
        let reply = self.post(&op_path(op), Some(token), &body).await;
        assert_eq!(reply.status, 200, "{op} {body}: {}", reply.text());
        reply
    }

    /// `api_keys.create` with `token`; returns the whole output.
    pub(crate) async fn create(&self, token: &str, body: Value) -> Value {
        self.call_ok("api_keys.create", token, body).await.json()
    }

    /// `api_keys.list` with `token`; returns the NDJSON lines.
    pub(crate) async fn list(&self, token: &str, body: Value) -> Vec<Value> {
        self.call_ok("api_keys.list", token, body).await.lines()
    }

    /// The ids `api_keys.list` returns for `token`, in order.
    pub(crate) async fn list_ids(&self, token: &str, body: Value) -> Vec<String> {
        self.list(token, body).await.iter().map(id_of).collect()
    }

    /// `api_keys.revoke` with `token`; returns the metadata.
    pub(crate) async fn revoke(&self, token: &str, key_id: &str) -> Value {
        self.call_ok("api_keys.revoke", token, json!({ "key_id": key_id }))
            .await
            .json()
    }

    /// Requests being handled now (`opgate_requests_in_flight` from `GET /metrics`, which is not one of them
    /// and holds no slot): to wait for slow requests under test without competing with them.
    pub(crate) async fn in_flight(&self) -> u64 {
        let text = send(self.request(Method::GET, "/metrics", None))
            .await
            .text();
        text.lines()
            .find_map(|l| l.strip_prefix("opgate_requests_in_flight "))
            .map_or(0, |n| {
                n.trim().parse::<f64>().expect("a gauge value") as u64
            })
    }

    /// Mints a key offline with `opgate admin create-key` and returns its secret.
    pub(crate) fn create_key(&self, org: &str, perms: &[&str]) -> String {
        create_key_in(self.data_dir(), org, perms)
    }

    /// Like [`TestServer::create_key`], with extra `create-key` flags (e.g. `--expires-at`, `--allowed-ips`).
    pub(crate) fn create_key_with(&self, org: &str, perms: &[&str], extra_args: &[&str]) -> String {
        create_key_in_with(self.data_dir(), org, perms, extra_args)
    }

    /// `api_keys.get` with `token`; returns the metadata.
    pub(crate) async fn get(&self, token: &str, key_id: &str) -> Value {
        self.call_ok("api_keys.get", token, json!({ "key_id": key_id }))
            .await
            .json()
    }

    /// Mints a session token with `opgate admin mint-session` on this server's data directory and with its
    /// environment (so `OPGATE_SESSION_SECRET` agrees); `args` are the flags (`--org`, `--sub`, ...).
    pub(crate) fn mint_session(&self, args: &[&str]) -> String {
        let env: Vec<(&str, &str)> = self
            .extra_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        mint_session_in(self.data_dir(), &env, args)
    }

    /// Inserts `count` keys into `org` with `opgate admin seed-keys`.
    pub(crate) fn seed_keys(&self, org: &str, count: usize) {
        let out = Command::new(BIN)
            .args([
                "admin",
                "seed-keys",
                "--org",
                org,
                "--count",
                &count.to_string(),
            ])
            .args(data_dir_args(self.data_dir()))
            .env_clear_opgate()
            .output()
            .expect("run opgate admin seed-keys");
        assert!(
            out.status.success(),
            "seed-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test gateway on PostgreSQL notes its database in its data directory, so that the offline
/// `opgate admin` commands the tests run on that directory reach the same database.
pub(crate) const DATABASE_URL_NOTE: &str = ".test-database-url";

/// When the suite runs on PostgreSQL (`OPGATE_TEST_DATABASE_URL`), gives the fresh data directory `data_dir` a
/// database of its own and notes it there, so the server and the offline `opgate admin` commands use it.
pub(crate) fn on_test_database(data_dir: &Path) {
    let url = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(opgate::store_postgres::fresh_test_database())
    })
    .join()
    .expect("create the test database");
    if let Some(url) = url {
        std::fs::write(data_dir.join(DATABASE_URL_NOTE), url).expect("note the test database");
    }
}

/// `--data-dir <dir>`, and `--database-url` when the directory's gateway keeps its data in PostgreSQL.
pub(crate) fn data_dir_args(data_dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args = vec!["--data-dir".into(), data_dir.as_os_str().to_owned()];
    if let Ok(url) = std::fs::read_to_string(data_dir.join(DATABASE_URL_NOTE)) {
        args.push("--database-url".into());
        args.push(url.into());
    }
    args
}

/// Mints a key with `opgate admin create-key` in any data directory and returns its secret.
pub(crate) fn create_key_in(data_dir: &Path, org: &str, perms: &[&str]) -> String {
    create_key_in_with(data_dir, org, perms, &[])
}

/// Like [`create_key_in`], with extra `create-key` flags.
pub(crate) fn create_key_in_with(
    data_dir: &Path,
    org: &str,
    perms: &[&str],
    extra_args: &[&str],
) -> String {
    let out = Command::new(BIN)
        .args(["admin", "create-key", "--org", org, "--name", "test-key"])
        .args(["--permissions", &perms.join(",")])
        .args(extra_args)
        .args(data_dir_args(data_dir))
        .env_clear_opgate()
        .output()
        .expect("run opgate admin create-key");
    assert!(
        out.status.success(),
        "create-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let key = stdout.trim_end_matches('\n');
    assert!(
        key.starts_with("opg_") && key.len() == 42 && !key.contains('\n'),
        "create-key prints only the secret, got {stdout:?}"
    );
    key.to_owned()
}

/// Runs `opgate admin mint-session` with `args` on `data_dir` and `env`, asserting it prints only a token.
pub(crate) fn mint_session_in(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["admin", "mint-session"])
        .args(args)
        .args(data_dir_args(data_dir))
        .env_clear_opgate()
        .envs(env.iter().copied())
        .output()
        .expect("run opgate admin mint-session");
    assert!(
        out.status.success(),
        "mint-session: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let token = stdout.trim_end_matches('\n');
    assert!(
        token.split('.').count() == 3 && !token.contains('\n'),
        "mint-session prints only the token, got {stdout:?}"
    );
    token.to_owned()
}

/// The `opgate` binary as a command, independent of the developer's `OPGATE_*` environment.
pub(crate) fn opgate() -> Command {
    let mut command = Command::new(BIN);
    command.env_clear_opgate();
    command
}

/// A local URL nothing answers: its port is bound (so no other process can take it) but never listened on, so
/// a connection is refused at once. The port stays reserved while this lives.
pub(crate) struct ClosedPort {
    pub url: String,
    _socket: tokio::net::TcpSocket,
}

pub(crate) fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a port");
    let url = format!("http://{}", socket.local_addr().unwrap());
    ClosedPort {
        url,
        _socket: socket,
    }
}

/// Polls `check` until it holds, failing with `what` once `limit` has passed: for events in another process
/// that the test cannot be told of.
pub(crate) async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes every `OPGATE_*` variable of the test's environment from a command.
pub(crate) trait EnvClearOpgate {
    fn env_clear_opgate(&mut self) -> &mut Self;
}

impl EnvClearOpgate for Command {
    /// Keeps the test independent of the developer's `OPGATE_*` environment.
    fn env_clear_opgate(&mut self) -> &mut Self {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OPGATE_") {
                self.env_remove(name);
            }
        }
        self
    }
}

/// Spawns `opgate serve` and reads stderr until it listens; a thread keeps draining stderr afterwards.
fn spawn(
    data_dir: &Path,
    extra_args: &[String],
    extra_env: &[(String, String)],
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, String, Option<String>) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace-seconds",
            "5",
        ])
        .args(data_dir_args(data_dir))
        .args(extra_args)
        .env_clear_opgate()
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opgate serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line); // the receiver is gone once the server is up
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut admin_key = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap().join("\n");
                panic!("opgate did not start ({e}); stderr:\n{log}");
            }
        };
        if let Some(key) = line.strip_prefix("admin key: ") {
            assert!(admin_key.is_none(), "admin key printed twice");
            admin_key = Some(key.trim().to_owned());
        }
        if let Some(base) = line.trim().strip_prefix("opgate listening on ") {
            return (child, base.to_owned(), admin_key);
        }
    }
}

/// A response read in full. Every response must carry `X-Request-Id`; [`send`] checks it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub(crate) fn request_id(&self) -> &str {
        self.header("x-request-id").expect("X-Request-Id")
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The NDJSON lines of a streamed response.
    pub(crate) fn lines(&self) -> Vec<Value> {
        assert_eq!(self.header("content-type"), Some("application/x-ndjson"));
        let text = self.text();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "NDJSON ends with a newline"
        );
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line ({e}): {l}"))
            })
            .collect()
    }

    /// Asserts the contract's error response (status, code, body shape, request id, headers) and returns the
    /// message.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}, got: {}",
            self.text()
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        let obj = body.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "only `error` at the top: {body}");
        let error = body["error"].as_object().expect("`error` object");
        assert_eq!(error.len(), 3, "code, message, request_id: {body}");
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(
            error["request_id"],
            self.request_id(),
            "body and header request ids agree"
        );
        if status == 401 {
            assert_eq!(self.header("www-authenticate"), Some("Bearer"));
        }
        let message = error["message"].as_str().expect("message string");
        assert!(!message.is_empty());
        message.to_owned()
    }

    /// Like [`Reply::error`], and the message contains every one of `parts`.
    #[track_caller]
    pub(crate) fn error_with(&self, status: u16, code: &str, parts: &[&str]) -> String {
        let message = self.error(status, code);
        for part in parts {
            assert!(
                message.contains(part),
                "message {message:?} should contain {part:?}"
            );
        }
        message
    }
}

/// Sends the request and reads the whole response; asserts the `X-Request-Id` header is present.
pub(crate) async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let resp = rb.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("read body").to_vec();
    let reply = Reply {
        status,
        headers,
        body,
    };
    let rid = reply.header("x-request-id").unwrap_or("");
    assert!(
        !rid.is_empty(),
        "every response carries X-Request-Id: {status} {}",
        reply.text()
    );
    reply
}

/// `/v1/op/<op>`.
pub(crate) fn op_path(op: &str) -> String {
    format!("/v1/op/{op}")
}

/// `/v1/<resource>/<action>` for `<resource>.<action>`.
pub(crate) fn alias_path(op: &str) -> String {
    let (resource, action) = op.split_once('.').expect("op id has a dot");
    format!("/v1/{resource}/{action}")
}

/// Both paths of an operation.
pub(crate) fn both_paths(op: &str) -> [String; 2] {
    [op_path(op), alias_path(op)]
}

pub(crate) fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// The metadata fields the contract names for every key (later slices may add more).
pub(crate) const METADATA_FIELDS: [&str; 13] = [
    "allowed_ips",
    "created_at",
    "created_by",
    "description",
    "expires_at",
    "id",
    "key_prefix",
    "last_used_at",
    "name",
    "org_id",
    "permissions",
    "rate_limit",
    "revoked_at",
];

/// Fields that would carry secret material; never part of metadata.
const SECRET_FIELDS: [&str; 5] = ["key", "key_hash", "hash", "secret", "token"];

/// Asserts `v` is key metadata: every contract field, well-formed, and never a secret or its hash.
#[track_caller]
pub(crate) fn assert_metadata(v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("metadata is an object: {v}"));
    for field in METADATA_FIELDS {
        assert!(obj.contains_key(field), "metadata lacks `{field}`: {v}");
    }
    for field in SECRET_FIELDS {
        assert!(!obj.contains_key(field), "metadata carries `{field}`: {v}");
    }
    assert!(id_of(v).starts_with("key_"), "{v}");
    let prefix = v["key_prefix"].as_str().expect("key_prefix");
    assert!(prefix.starts_with("opg_") && prefix.len() == 12, "{v}");
    rfc3339_unix(v["created_at"].as_str().expect("created_at is set"));
    for ts in ["expires_at", "last_used_at", "revoked_at"] {
        if !v[ts].is_null() {
            rfc3339_unix(v[ts].as_str().expect("timestamp string"));
        }
    }
}

/// The contract's metadata fields of `v` that only change when the key is changed (not when it is used).
pub(crate) fn stable(v: &Value) -> Value {
    METADATA_FIELDS
        .iter()
        .filter(|f| **f != "last_used_at")
        .map(|f| (f.to_string(), v[*f].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Seconds since the epoch for an RFC 3339 UTC timestamp such as `2026-11-25T18:06:29Z`.
#[track_caller]
pub(crate) fn rfc3339_unix(ts: &str) -> i64 {
    let b = ts.as_bytes();
    let ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    assert!(ok, "not an RFC 3339 UTC timestamp with seconds: {ts:?}");
    let n = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().expect("digits") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The RFC 3339 UTC form (`2026-11-25T18:06:29Z`) of seconds since the epoch; the inverse of
/// [`rfc3339_unix`].
pub(crate) fn unix_rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Now, in seconds since the epoch.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Opens a connection and sends a request head for `op` announcing a body of `len` bytes with
/// `Expect: 100-continue`, waits for `100 Continue` (sent when the gateway starts reading the body: the request
/// has passed every check before it and holds its slots), then sends `first` of the body. Returns the
/// connection with the `100 Continue` consumed.
pub(crate) async fn start_upload(
    s: &TestServer,
    token: &str,
    op: &str,
    len: usize,
    first: &[u8],
) -> TcpStream {
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n\r\n",
        op_path(op),
        s.addr()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let expected = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut got))
        .await
        .expect("the gateway starts reading the body")
        .expect("100 Continue");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
    conn.write_all(first).await.unwrap();
    conn
}

/// Reads until the server closes the connection (EOF or reset) and returns what was read; fails when `limit`
/// passes first, so that a server that merely says nothing is never taken for one that refused.
#[track_caller]
pub(crate) fn read_until_closed(
    conn: &mut TcpStream,
    limit: Duration,
) -> impl std::future::Future<Output = String> + '_ {
    let caller = std::panic::Location::caller();
    async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "{caller}: the server did not close the connection within {limit:?}; it sent: {}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) within `limit`, leaving the connection open;
/// fails when the connection ends first or the limit passes.
pub(crate) async fn read_response(conn: &mut TcpStream, limit: Duration) -> String {
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                if out.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&out).into_owned();
                }
            }
            let n = conn.read(&mut buf).await.unwrap_or(0);
            assert!(
                n > 0,
                "the connection ended before a whole response: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("no whole response within {limit:?}"))
}
