//! The HTTP server of opgate. It owns the request pipeline — request id, route, authenticate, authorize,
//! read body, decode, dispatch, encode — and reads what each stage needs from the operation's declaration in
//! the operation registry (`opgate_core::Registry`); it knows no operation by name.

mod client_addr;
mod conn;
mod http_io;
mod idempotency;
pub mod mcp;
pub mod metrics;
mod pipeline;
pub mod rate_limit;
mod refusals;
mod slots;
mod tls;

pub use http_io::Resp;
pub use pipeline::RequestBody;
pub use tls::Tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use opgate_core::{Authenticator, Journal, Registry};
use tokio::net::TcpListener;

/// How the server treats every request: limits, timeouts and which proxies it trusts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<Tls>,
    /// Peers whose `X-Forwarded-For` is believed; the client address is then the right-most address in it
    /// that is not itself a trusted proxy. Empty: the client address is always the socket peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests per minute for principals without a limit of their own; `None`: unlimited.
    pub default_rate_limit: Option<u32>,
    /// Requests per minute for each organization, all its keys and sessions together; `None`: unlimited.
    pub org_rate_limit: Option<u32>,
    /// In a fleet, what an instance does with rate limits while the shared cells cannot be reached.
    pub shared_limits_down: rate_limit::WhenShareDown,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time a client has from connecting (TLS handshake and protocol detection included) to its first request
    /// head, and the time after which a connection with nothing under way (HTTP/1 keep-alive or HTTP/2) is
    /// closed.
    pub header_read_timeout: Duration,
    /// Time a whole request body may take to arrive once its head is in; past it the client gets 400 and the
    /// connection closes (a trickled body cannot hold a request slot).
    pub body_read_timeout: Duration,
    /// Time a response write may make no progress (the client reads nothing) before the connection is dropped.
    pub write_timeout: Duration,
    /// Time a request may take from its headers to its response head; past it the client gets 503.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Requests handled at once at most; more get 503 `unavailable` at once rather than queueing.
    pub max_concurrent_requests: usize,
    /// Requests one principal may have in flight at once; more get 503, so no one key takes every slot.
    pub max_concurrent_requests_per_principal: usize,
    /// Requests one organization (all its keys and sessions together) may have in flight at once; more get
    /// 503, so no tenant takes every slot however many keys it mints.
    pub max_concurrent_requests_per_org: usize,
    /// Streamed responses one principal may have open at once; more get 503.
    pub max_streams_per_principal: usize,
    /// Open connections at most; past it new connections are closed at once (file descriptors stay bounded).
    pub max_connections: usize,
    /// Open connections from one client address at most (trusted proxies are exempt); past it new
    /// connections from that address are closed at once, so a flood from one address cannot starve others.
    pub max_connections_per_ip: usize,
    /// How often refused calls are written to the audit log, one record per principal, operation and status.
    pub refusal_audit_interval: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long the server keeps accepting after a shutdown signal while `GET /readyz` answers 503, so that load
    /// balancers stop sending before the listener closes.
    pub shutdown_delay: Duration,
    /// Browser origins (`https://app.example.com`) allowed to call `POST /mcp` besides loopback ones
    /// (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`); a request with any other `Origin` gets
    /// 403, as MCP requires against DNS rebinding. Requests without `Origin` (non-browser clients) are not
    /// concerned.
    pub mcp_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            trusted_proxies: Vec::new(),
            default_rate_limit: None,
            org_rate_limit: None,
            shared_limits_down: rate_limit::WhenShareDown::Open { fleet_size: 1 },
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 1024,
            max_concurrent_requests_per_principal: 64,
            max_concurrent_requests_per_org: 256,
            max_streams_per_principal: 8,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            refusal_audit_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            mcp_allowed_origins: Vec::new(),
        }
    }
}

/// Everything the pipeline needs: the operations, how to authenticate, where to audit and keep idempotent
/// responses, and the config.
pub struct Gateway {
    served: arc_swap::ArcSwap<Served>,
    authenticator: Arc<dyn Authenticator>,
    journal: Option<Arc<dyn Journal>>,
    workspaces: Option<Arc<dyn opgate_core::Workspaces>>,
    inflight: idempotency::InFlight,
    rate_limiter: rate_limit::RateLimiter,
    admission: Arc<tokio::sync::Semaphore>,
    request_slots: Arc<slots::Slots<String>>,
    org_slots: Arc<slots::Slots<String>>,
    stream_slots: Arc<slots::Slots<String>>,
    address_slots: Arc<slots::Slots<IpAddr>>,
    refusals: Arc<refusals::Refusals>,
    draining: std::sync::atomic::AtomicBool,
    storage_up: Arc<std::sync::atomic::AtomicBool>,
    metrics: Option<metrics::Metrics>,
    clock: Arc<dyn opgate_core::Clock>,
    /// The MCP tools of the last operation set listed, rebuilt when the set is replaced.
    mcp_tools: mcp::ToolCache,
    config: ServerConfig,
}

/// What the gateway serves, replaced as one (see [`Gateway::replace_operations`]): the operations, the scopes
/// they require (what a grant may name), and the docs describing them. A call keeps the set it started with.
pub struct Served {
    /// The operations.
    pub registry: Arc<Registry>,
    /// The scopes the operations require.
    pub scopes: Arc<opgate_core::scope::Catalog>,
    /// The reference page and spec, unless the docs are off.
    pub docs: Option<Docs>,
}

impl Served {
    fn new(registry: Arc<Registry>, docs: Option<Docs>) -> Served {
        Served {
            scopes: Arc::new(registry.scopes()),
            registry,
            docs,
        }
    }
}

/// What `GET /docs` and `GET /openapi.json` serve: the interactive reference page, the Content-Security-Policy
/// it is served with, and the spec of the operations this gateway serves; and for language models,
/// `GET /llms.txt` and the Markdown reference at `GET /docs/<page>.md`. Rendered once, when it starts.
#[derive(Debug, Clone)]
pub struct Docs {
    pub(crate) page: bytes::Bytes,
    pub(crate) csp: http::HeaderValue,
    pub(crate) spec: bytes::Bytes,
    pub(crate) llms: Option<bytes::Bytes>,
    pub(crate) markdown: Arc<std::collections::BTreeMap<String, bytes::Bytes>>,
}

impl Docs {
    /// The page (HTML), its policy and the spec (JSON); `None` if the policy is not a valid header value.
    pub fn new(page: String, csp: &str, spec: String) -> Option<Docs> {
        Some(Docs {
            page: page.into(),
            csp: http::HeaderValue::from_str(csp).ok()?,
            spec: spec.into(),
            llms: None,
            markdown: Arc::default(),
        })
    }

    /// Also serves `llms` at `GET /llms.txt` and each of `pages` (file name such as `api_keys.md` to its
    /// Markdown) at `GET /docs/<name>`: the reference in the form language models read best.
    pub fn with_markdown(
        mut self,
        llms: String,
        pages: std::collections::BTreeMap<String, String>,
    ) -> Docs {
        self.llms = Some(llms.into());
        self.markdown = Arc::new(
            pages
                .into_iter()
                .filter(|(name, _)| name.ends_with(".md") && !name.contains('/'))
                .map(|(name, text)| (name, text.into()))
                .collect(),
        );
        self
    }
}

impl Gateway {
    /// A gateway serving `registry`, authenticating with `authenticator`; without an audit sink or an
    /// idempotency store until given one.
    pub fn new(
        registry: Arc<Registry>,
        authenticator: Arc<dyn Authenticator>,
        config: ServerConfig,
    ) -> Self {
        Gateway {
            served: arc_swap::ArcSwap::from_pointee(Served::new(registry, None)),
            authenticator,
            journal: None,
            workspaces: None,
            inflight: idempotency::InFlight::default(),
            rate_limiter: rate_limit::RateLimiter::with_org_limit(
                config.default_rate_limit,
                config.org_rate_limit,
            ),
            clock: opgate_core::SystemClock::shared(),
            admission: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
            request_slots: slots::Slots::new(config.max_concurrent_requests_per_principal),
            org_slots: slots::Slots::new(config.max_concurrent_requests_per_org),
            stream_slots: slots::Slots::new(config.max_streams_per_principal),
            address_slots: slots::Slots::new(config.max_connections_per_ip),
            refusals: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            storage_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            metrics: None,
            mcp_tools: mcp::ToolCache::default(),
            config,
        }
    }

    /// Tells time by `clock` (audit timestamps, idempotency retention, rate limits, handlers' `ctx.now()`).
    pub fn with_clock(mut self, clock: Arc<dyn opgate_core::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves Prometheus metrics on `GET /metrics` from this recorder.
    pub fn with_metrics(mut self, metrics: metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the reference page at `GET /docs` and the spec at `GET /openapi.json`, without a token.
    pub fn with_docs(self, docs: Docs) -> Self {
        let registry = Arc::clone(&self.served.load().registry);
        self.served
            .store(Arc::new(Served::new(registry, Some(docs))));
        self
    }

    /// What the gateway serves now: its operations, their scopes and its docs.
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Replaces the operations (and the docs describing them) at once: calls already under way finish on the
    /// set they started with, later ones find the new one. For a configuration reload.
    pub fn replace_operations(&self, registry: Registry, docs: Option<Docs>) {
        self.served
            .store(Arc::new(Served::new(Arc::new(registry), docs)));
    }

    /// Whether the gateway is shutting down (`GET /readyz` answers 503 then).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps each state-changing call's records in `journal`: the audit record of every `write`, `export` and
    /// `destructive` call, and the responses to `Idempotency-Key` requests, committed with the call's change.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Shares every rate limit with the other instances of a fleet through `cells` (see
    /// [`rate_limit::RateLimiter::shared`]); `when_down` says what happens while they cannot be reached.
    pub fn with_rate_cells(
        mut self,
        cells: Arc<dyn opgate_core::RateCells>,
        when_down: rate_limit::WhenShareDown,
    ) -> Self {
        let limiter = std::mem::replace(&mut self.rate_limiter, rate_limit::RateLimiter::new(None));
        self.rate_limiter = limiter.shared(cells, when_down);
        self
    }

    /// The flag `GET /readyz` reads besides shutdown: whoever watches the database sets it (`false`: 503
    /// `unavailable`, so that a load balancer sends traffic to instances that can serve it).
    pub fn storage_up(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.storage_up)
    }

    /// Whether the storage was last seen answering.
    pub(crate) fn is_storage_up(&self) -> bool {
        self.storage_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks the workspace an organization-wide principal names with `X-Workspace-ID` against `workspaces`
    /// (404 when its organization has none such); without it any well-formed id is taken.
    pub fn with_workspaces(mut self, workspaces: Arc<dyn opgate_core::Workspaces>) -> Self {
        self.workspaces = Some(workspaces);
        self
    }

    /// Handles one request as if it came from `peer`, without a socket: the whole pipeline, for any body type
    /// (tests and in-process callers).
    pub async fn handle<B: RequestBody>(
        self: &Arc<Self>,
        peer: SocketAddr,
        req: hyper::Request<B>,
    ) -> Resp {
        pipeline::handle(self, peer, req).await
    }

    /// Writes the refused calls tallied so far to the audit log (also done every
    /// [`ServerConfig::refusal_audit_interval`] while serving, and when serving ends).
    pub async fn flush_refusals(&self) {
        if let Some(journal) = &self.journal {
            self.refusals.flush(&**journal).await;
        }
    }

    /// Accepts connections on `listener` (HTTP/1.1 and h2c on the same port, or HTTPS) until `shutdown`
    /// resolves, then stops accepting and lets in-flight requests finish for up to
    /// [`ServerConfig::shutdown_grace`].
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.config.max_header_bytes as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let refusal_flusher = self.journal.as_ref().map(|journal| {
            self.refusals
                .spawn_flusher(Arc::clone(journal), self.config.refusal_audit_interval)
        });
        let connections = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));
        let (stop_connections, connections_stop) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        let shutdown_deadline = tokio::time::sleep(Duration::from_secs(10 * 365 * 86_400));
        tokio::pin!(shutdown_deadline);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; closing the new connection");
                        continue;
                    };
                    let address_slot = if client_addr::is_trusted(peer.ip(), &self.config.trusted_proxies) {
                        None
                    } else {
                        match self.address_slots.claim(client_addr::network(peer.ip())) {
                            Some(slot) => Some(slot),
                            None => {
                                ::metrics::counter!("opgate_connections_refused_total", "reason" => "per_ip").increment(1);
                                tracing::debug!(%peer, "per-address connection limit reached; closing the new connection");
                                continue;
                            }
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let accepted_at = Instant::now();
                    let (gateway, builder, stop) = (Arc::clone(&self), builder.clone(), connections_stop.clone());
                    tokio::spawn(async move {
                        let _slots = (slot, address_slot);
                        match gateway.config.tls.clone() {
                            None => conn::serve(gateway, builder, stream, peer, accepted_at, stop).await,
                            Some(tls) => {
                                // The handshake runs in the connection's task, within the time the client has for
                                // its first request, so a slow handshake never holds up the accept loop.
                                let deadline = accepted_at + gateway.config.header_read_timeout;
                                let stream = match tokio::time::timeout_at(deadline.into(), tls.0.accept(stream)).await {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                                };
                                conn::serve(gateway, builder, stream, peer, accepted_at, stop).await
                            }
                        }
                    });
                }
                _ = &mut shutdown, if !self.is_draining() => {
                    self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(delay_s = self.config.shutdown_delay.as_secs_f64(), "shutdown signal: /readyz now answers 503");
                    shutdown_deadline.as_mut().reset(tokio::time::Instant::now() + self.config.shutdown_delay);
                }
                _ = &mut shutdown_deadline, if self.is_draining() => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: no longer accepting, waiting for in-flight requests");
        let _ = stop_connections.send(true);
        let all = u32::try_from(self.config.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.config.shutdown_grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; dropping the remaining connections");
        }
        if let Some(flusher) = refusal_flusher {
            flusher.abort();
        }
        self.flush_refusals().await;
    }
}

/// Serves only `GET /metrics` (Prometheus text format) on `listener` until `shutdown` resolves: for
/// `--metrics-listen`, so that metrics stay off the API port.
pub async fn serve_metrics(
    metrics: metrics::Metrics,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    use http_body_util::BodyExt;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let metrics = metrics.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics"
                        && req.method() == http::Method::GET
                    {
                        hyper::Response::builder()
                            .header(
                                http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )
                            .body(
                                http_body_util::Full::new(bytes::Bytes::from(metrics.render()))
                                    .boxed_unsync(),
                            )
                    } else {
                        hyper::Response::builder().status(404).body(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"not found\n"))
                                .boxed_unsync(),
                        )
                    };
                    Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
                }
            });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
