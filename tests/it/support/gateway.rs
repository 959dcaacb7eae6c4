//! The in-process harness: the real gateway (registry, pipeline, SQLite store in a temporary data directory)
//! called through [`Gateway::handle`], with no socket and no child process, and a [`ManualClock`] that tests
//! move instead of sleeping. A "restart" closes the store and opens the data directory again, as a new
//! process would.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use opgate::auth::{NewSession, SessionSettings};
use opgate::core::{Clock, ManualClock, Timestamp};
use opgate::keys::KeySpec;
use opgate::server::{Gateway, Resp, ServerConfig};
use opgate::DataDir;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot, watch};

use super::{op_path, Reply};

/// The error type of request bodies built here (they never fail): a concrete type, since a boxed error
/// trips the compiler's `Send` check of the spawned pipeline.
type BodyError = std::io::Error;

/// What a test may set before the gateway starts.
#[derive(Clone)]
pub(crate) struct Setup {
    /// The server's settings (limits, trusted proxies, default rate limit, ...).
    pub config: ServerConfig,
    /// Session settings: secret, issuer, audience.
    pub sessions: SessionSettings,
    /// Where the clock starts.
    pub start: Timestamp,
    /// Which webhook URLs the operations take: loopback allowed by default (the tests' receivers listen on
    /// 127.0.0.1), as `--allow-private-webhooks` does.
    pub webhook_policy: opgate::webhooks::guard::Policy,
    /// Whether `GET /docs` and `GET /openapi.json` are served (on, as `opgate serve` does by default).
    pub docs: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: ServerConfig::default(),
            sessions: SessionSettings::default(),
            // A fixed, recent moment: tests never depend on the machine's clock.
            start: Timestamp(1_800_000_000),
            webhook_policy: opgate::webhooks::guard::Policy {
                allow_private: true,
                allow_insecure: false,
            },
            docs: true,
        }
    }
}

/// A gateway in this process over its own temporary data directory.
pub(crate) struct TestGateway {
    _dir: TempDir,
    /// The test's own PostgreSQL database when the suite runs on PostgreSQL (`OPGATE_TEST_DATABASE_URL`).
    database_url: Option<String>,
    setup: Setup,
    clock: Arc<ManualClock>,
    data: DataDir,
    gateway: Arc<Gateway>,
    admin_key: String,
}

impl TestGateway {
    /// A gateway with the default settings on an empty data directory; the bootstrap admin key is minted.
    pub(crate) async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose settings `configure` adjusts first.
    pub(crate) async fn start_with(configure: impl FnOnce(&mut Setup)) -> TestGateway {
        let mut setup = Setup::default();
        configure(&mut setup);
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::at(setup.start);
        let database_url = opgate::store_postgres::fresh_test_database().await;
        if let Some(url) = &database_url {
            std::fs::write(dir.path().join(super::process::DATABASE_URL_NOTE), url).unwrap();
        }
        let (data, gateway) = open(dir.path(), database_url.as_deref(), &setup, &clock).await;
        let admin_key = data
            .keys
            .bootstrap_admin()
            .await
            .expect("bootstrap")
            .expect("an empty data directory mints the admin key");
        TestGateway {
            _dir: dir,
            database_url,
            setup,
            clock,
            data,
            gateway,
            admin_key,
        }
    }

    /// Another instance of the same fleet: its own data directory holding copies of this one's secrets, the
    /// same PostgreSQL database and clock (`None` on SQLite, which is not for fleets). Both instances follow
    /// the key change log, as served instances do.
    pub(crate) async fn another_instance(&self) -> Option<TestGateway> {
        let url = self.database_url.clone()?;
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["secret", "session_secret"] {
            std::fs::copy(self._dir.path().join(file), dir.path().join(file))
                .expect("copy a secret");
        }
        let (data, gateway) = open(dir.path(), Some(&url), &self.setup, &self.clock).await;
        assert_eq!(
            data.keys.bootstrap_admin().await.unwrap(),
            None,
            "the fleet's admin key is minted once"
        );
        Some(TestGateway {
            _dir: dir,
            database_url: Some(url),
            setup: self.setup.clone(),
            clock: Arc::clone(&self.clock),
            data,
            gateway,
            admin_key: self.admin_key.clone(),
        })
    }

    /// Follows the key change log as a served instance does (every 500 ms, and at once on announcements).
    pub(crate) fn follow_changes(&self) -> tokio::task::JoinHandle<()> {
        self.data.keys.follow_changes(Duration::from_millis(500))
    }

    /// What a stop and a start of the server would do: key usage and tallied refusals are written, the store
    /// is closed, and the data directory is opened again (the admin key is not minted twice).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let (data, gateway) = open(
            self._dir.path(),
            self.database_url.as_deref(),
            &self.setup,
            &self.clock,
        )
        .await;
        assert_eq!(
            data.keys.bootstrap_admin().await.unwrap(),
            None,
            "the admin key is minted once"
        );
        self.data = data;
        self.gateway = gateway;
    }

    /// Closes the store and opens the data directory again without what a shutdown writes first (key usage,
    /// tallied refusals), as after a crash: only what was committed is there.
    pub(crate) async fn restart_without_flush(&mut self) {
        self.data.store.close().await;
        let (data, gateway) = open(
            self._dir.path(),
            self.database_url.as_deref(),
            &self.setup,
            &self.clock,
        )
        .await;
        assert_eq!(
            data.keys.bootstrap_admin().await.unwrap(),
            None,
            "the admin key is minted once"
        );
        self.data = data;
        self.gateway = gateway;
    }

    /// Writes what a shutdown writes and closes the store.
    async fn stop(&self) {
        self.gateway.flush_refusals().await;
        self.data.keys.flush_usage().await;
        self.data.store.close().await;
    }

    /// A webhook dispatcher over this gateway's data directory, resolving names with `resolver`: the test
    /// spawns it (or drives it with `run_once`) and moves the clock for retries.
    pub(crate) fn dispatcher(
        &self,
        config: opgate::webhooks::DispatchConfig,
        resolver: Arc<dyn opgate::webhooks::guard::NameResolver>,
    ) -> Arc<opgate::webhooks::Dispatcher> {
        opgate::webhooks::Dispatcher::new(
            self.data.store.clone(),
            self.data.sealer.clone(),
            Arc::clone(&self.clock) as Arc<dyn Clock>,
            resolver,
            config,
        )
    }

    /// The clock every time decision of this gateway reads (moved with [`TestGateway::advance`]).
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Writes recorded key usage now (the server does it every second).
    pub(crate) async fn flush_usage(&self) {
        self.data.keys.flush_usage().await;
    }

    /// Writes the tallied refusals now (the server does it every minute).
    pub(crate) async fn flush_refusals(&self) {
        self.gateway.flush_refusals().await;
    }

    pub(crate) fn data(&self) -> &DataDir {
        &self.data
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The test's PostgreSQL database, when the suite runs on PostgreSQL.
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    pub(crate) fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// A request to `path` as `method`, with `Authorization: Bearer token` when a token is given, from
    /// 127.0.0.1.
    pub(crate) fn request(&self, method: Method, path: &str, token: Option<&str>) -> Req {
        let mut req = Req {
            gateway: Arc::clone(&self.gateway),
            request: http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "gateway.test"),
            body: Body::Full(Bytes::new()),
            from: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// POSTs `body` as JSON.
    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.request(Method::POST, path, token)
            .json(body)
            .send()
            .await
    }

    /// POSTs raw bytes with the given content type (none when `None`).
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = self.request(Method::POST, path, token).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await
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
        self.list(token, body)
            .await
            .iter()
            .map(super::id_of)
            .collect()
    }

    /// `api_keys.get` with `token`; returns the metadata.
    pub(crate) async fn get(&self, token: &str, key_id: &str) -> Value {
        self.call_ok("api_keys.get", token, json!({ "key_id": key_id }))
            .await
            .json()
    }

    /// `api_keys.revoke` with `token`; returns the metadata.
    pub(crate) async fn revoke(&self, token: &str, key_id: &str) -> Value {
        self.call_ok("api_keys.revoke", token, json!({ "key_id": key_id }))
            .await
            .json()
    }

    /// The id of the key whose secret is `token` (`auth.whoami`).
    pub(crate) async fn id_of_key(&self, token: &str) -> String {
        super::id_of(&self.call_ok("auth.whoami", token, json!({})).await.json())
    }

    /// Mints a key in `org` with `perms` directly in the store, as `opgate admin create-key` does.
    pub(crate) async fn create_key(&self, org: &str, perms: &[&str]) -> String {
        self.create_key_with(org, perms, |_| {}).await
    }

    /// Like [`TestGateway::create_key`], with the spec adjusted by `adjust` (expiry, allow-list, limit).
    pub(crate) async fn create_key_with(
        &self,
        org: &str,
        perms: &[&str],
        adjust: impl FnOnce(&mut KeySpec),
    ) -> String {
        let mut spec = KeySpec {
            permissions: perms.iter().map(|p| p.to_string()).collect(),
            ..KeySpec::admin(org, "test-key", "cli")
        };
        adjust(&mut spec);
        self.data.keys.mint(spec).await.expect("mint a key").0
    }

    /// Inserts `count` keys into `org`, as `opgate admin seed-keys` does.
    pub(crate) async fn seed_keys(&self, org: &str, count: usize) {
        let mut done = 0;
        while done < count {
            let n = (count - done).min(10_000);
            let specs = (done..done + n)
                .map(|i| KeySpec {
                    permissions: vec!["api_keys:read".into()],
                    ..KeySpec::admin(org, &format!("seed-{i}"), "cli")
                })
                .collect();
            self.data.keys.mint_many(specs).await.expect("seed keys");
            done += n;
        }
    }

    /// Signs a session token for `sub` in `org` with `scopes`, valid for `ttl` seconds from now by the
    /// gateway's clock, as `opgate admin mint-session` does.
    pub(crate) fn mint_session(&self, org: &str, sub: &str, scopes: &[&str], ttl: u64) -> String {
        self.mint(org, sub, scopes, ttl, opgate::core::Mode::Live)
    }

    /// Like [`TestGateway::mint_session`] for an hour, in `mode` (the `mode` claim).
    pub(crate) fn mint_session_mode(
        &self,
        org: &str,
        sub: &str,
        scopes: &[&str],
        mode: opgate::core::Mode,
    ) -> String {
        self.mint(org, sub, scopes, 3600, mode)
    }

    fn mint(
        &self,
        org: &str,
        sub: &str,
        scopes: &[&str],
        ttl: u64,
        mode: opgate::core::Mode,
    ) -> String {
        self.data
            .sessions
            .mint_at(
                &NewSession {
                    sub: sub.into(),
                    org: org.into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    ttl_seconds: ttl,
                    mode,
                },
                self.clock.now().unix(),
            )
            .expect("mint a session token")
    }

    /// Serves this gateway on `127.0.0.1:0` (for clients that need a socket); returns its base URL and the
    /// serving task (abort it to stop).
    pub(crate) async fn serve(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway = Arc::clone(&self.gateway);
        let task = tokio::spawn(gateway.serve(listener, std::future::pending()));
        (url, task)
    }

    /// Serves this gateway on `127.0.0.1:0` over HTTP/1.1 like [`TestGateway::serve`], except that every
    /// response body frame after the first is held back until [`Gate::open`]: a client can then be shown to
    /// hand out what arrived before the rest of the body exists.
    pub(crate) async fn serve_gated(&self) -> (String, tokio::task::JoinHandle<()>, Gate) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway = Arc::clone(&self.gateway);
        let (open, opened) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let (gateway, opened) = (Arc::clone(&gateway), opened.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (gateway, opened) = (Arc::clone(&gateway), opened.clone());
                    async move {
                        let resp = gateway.handle(peer, req).await;
                        Ok::<_, std::convert::Infallible>(resp.map(|body| gated(body, opened)))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (url, task, Gate(open))
    }
}

/// Lets the bodies of a [`TestGateway::serve_gated`] gateway go on past their first frame.
pub(crate) struct Gate(watch::Sender<bool>);

impl Gate {
    pub(crate) fn open(&self) {
        self.0.send_replace(true);
    }
}

/// `body`, whose frames after the first wait until `opened` turns true.
fn gated(
    body: UnsyncBoxBody<Bytes, std::convert::Infallible>,
    opened: watch::Receiver<bool>,
) -> UnsyncBoxBody<Bytes, std::convert::Infallible> {
    let frames = futures_util::stream::unfold(
        (body, opened, true),
        |(mut body, mut opened, first)| async move {
            if !first {
                let _ = opened.wait_for(|open| *open).await;
            }
            let frame = body.frame().await?;
            Some((frame, (body, opened, false)))
        },
    );
    StreamBody::new(frames).boxed_unsync()
}

/// Opens the data directory, on the test's PostgreSQL database when it has one.
async fn open(
    path: &Path,
    database_url: Option<&str>,
    setup: &Setup,
    clock: &Arc<ManualClock>,
) -> (DataDir, Arc<Gateway>) {
    let clock = Arc::clone(clock) as Arc<dyn Clock>;
    let data = match database_url {
        Some(url) => DataDir::open_postgres(path, url, None, &setup.sessions, clock).await,
        None => DataDir::open_with_clock(path, None, &setup.sessions, clock),
    }
    .expect("open the data directory");
    let registry = data.registry_with(setup.webhook_policy).expect("registry");
    let info = opgate::api_info();
    let gateway = data.gateway(
        registry,
        setup.config.clone(),
        None,
        setup.docs.then_some(&info),
    );
    (data, gateway)
}

/// A request to an in-process gateway, built like a `reqwest::RequestBuilder`.
pub(crate) struct Req {
    gateway: Arc<Gateway>,
    request: http::request::Builder,
    body: Body,
    from: SocketAddr,
}

/// A request body: whole (sent with its `Content-Length`), or streamed (no `Content-Length` unless the test
/// sets one, as a chunked upload).
enum Body {
    Full(Bytes),
    Stream(UnsyncBoxBody<Bytes, BodyError>),
}

/// Feeds a request body built with [`Req::body_stream`]; dropping it ends the body.
pub(crate) struct BodySender(mpsc::Sender<(Bytes, oneshot::Sender<()>)>);

impl BodySender {
    /// Sends `chunk` and returns once the gateway has taken it from the body.
    pub(crate) async fn send(&self, chunk: impl Into<Bytes>) {
        let (taken, was_taken) = oneshot::channel();
        self.0
            .send((chunk.into(), taken))
            .await
            .expect("the gateway still reads the body");
        was_taken.await.expect("the gateway took the chunk");
    }
}

impl Req {
    pub(crate) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = http::HeaderValue::from_bytes(value.as_ref()).expect("a valid header value");
        self.request = self.request.header(name, value);
        self
    }

    pub(crate) fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub(crate) fn json(self, body: &Value) -> Self {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.header("content-type", "application/json").body(bytes)
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::Full(body.into());
        self
    }

    /// A body of `chunks` without a `Content-Length` (a chunked upload).
    pub(crate) fn body_chunks(mut self, chunks: Vec<Bytes>) -> Self {
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BodyError>(Frame::data(c))),
        );
        self.body = Body::Stream(StreamBody::new(frames).boxed_unsync());
        self
    }

    /// A body the test feeds piece by piece through the returned sender (no `Content-Length` unless set with
    /// [`Req::header`]); it ends when the sender is dropped.
    pub(crate) fn body_stream(mut self) -> (Self, BodySender) {
        let (tx, rx) = mpsc::channel::<(Bytes, oneshot::Sender<()>)>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let (chunk, taken) = rx.recv().await?;
            let _ = taken.send(());
            Some((Ok::<_, BodyError>(Frame::data(chunk)), rx))
        });
        self.body = Body::Stream(StreamBody::new(frames).boxed_unsync());
        (self, BodySender(tx))
    }

    /// Sends the request as if from `ip` (the socket peer the gateway sees).
    pub(crate) fn from(mut self, ip: IpAddr) -> Self {
        self.from = SocketAddr::new(ip, 40_000);
        self
    }

    /// Runs the request through the gateway and returns the response as it comes, its body unread (to read
    /// a stream frame by frame).
    pub(crate) async fn respond(self) -> Resp {
        let (request, body) = match self.body {
            Body::Full(bytes) => (
                self.request.header("content-length", bytes.len()),
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            Body::Stream(body) => (self.request, body),
        };
        let request = request.body(body).expect("a valid request");
        self.gateway.handle(self.from, request).await
    }

    /// Runs the request through the gateway and reads the whole response.
    pub(crate) async fn send(self) -> Reply {
        let resp = self.respond().await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("the body").to_bytes().to_vec();
        let reply = Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        assert!(
            reply.header("x-request-id").is_some_and(|r| !r.is_empty()),
            "every response carries X-Request-Id: {} {}",
            reply.status,
            reply.text()
        );
        reply
    }
}

/// Log lines written while the returned guard lives (on this thread's tests), to check what is never logged.
pub(crate) fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
    let writer = Arc::clone(&buffer);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || CaptureWriter(Arc::clone(&writer)))
        .finish();
    // With a single registered dispatcher, tracing decides whether anybody listens at a callsite by asking
    // the default of whichever thread hits it first (another test's: nobody), and caches that. A second,
    // silent dispatcher kept alive for good makes it ask every registered one instead.
    static SILENT: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SILENT.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);
    // And callsites already hit ask again, now that this thread has a subscriber.
    tracing::callsite::rebuild_interest_cache();
    (buffer, guard)
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
