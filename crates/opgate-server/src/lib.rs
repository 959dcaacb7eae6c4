//! The HTTP server of opgate. It owns the request pipeline — request id, route, authenticate, authorize,
//! read body, decode, dispatch, encode — and reads what each stage needs from the operation's declaration in
//! the operation registry (`opgate_core::Registry`); it knows no operation by name.

mod client_addr;
mod http_io;
mod idempotency;
pub mod metrics;
mod pipeline;
pub mod rate_limit;
mod tls;

pub use tls::Tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use opgate_core::{AuditSink, Authenticator, IdempotencyStore, Registry};
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
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers; also how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Time a request may take from its headers to its response head; past it the client gets 503.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Requests handled at once at most; more get 503 `unavailable` at once rather than queueing.
    pub max_concurrent_requests: usize,
    /// Open connections at most; past it new connections are closed at once (file descriptors stay bounded).
    pub max_connections: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long the server keeps accepting after a shutdown signal while `GET /readyz` answers 503, so that load
    /// balancers stop sending before the listener closes.
    pub shutdown_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            trusted_proxies: Vec::new(),
            default_rate_limit: None,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// Everything the pipeline needs: the operations, how to authenticate, where to audit and keep idempotent
/// responses, and the config.
pub struct Gateway {
    registry: Arc<Registry>,
    authenticator: Arc<dyn Authenticator>,
    audit: Option<Arc<dyn AuditSink>>,
    idempotency: Option<Arc<dyn IdempotencyStore>>,
    inflight: idempotency::InFlight,
    rate_limiter: rate_limit::RateLimiter,
    admission: Arc<tokio::sync::Semaphore>,
    draining: std::sync::atomic::AtomicBool,
    metrics: Option<metrics::Metrics>,
    config: ServerConfig,
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
            registry,
            authenticator,
            audit: None,
            idempotency: None,
            inflight: idempotency::InFlight::default(),
            rate_limiter: rate_limit::RateLimiter::new(config.default_rate_limit),
            admission: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
            draining: std::sync::atomic::AtomicBool::new(false),
            metrics: None,
            config,
        }
    }

    /// Serves Prometheus metrics on `GET /metrics` from this recorder.
    pub fn with_metrics(mut self, metrics: metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether the gateway is shutting down (`GET /readyz` answers 503 then).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends a record of every `write`, `export` and `destructive` call to `sink`.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Keeps responses to `Idempotency-Key` requests in `store` for replay.
    pub fn with_idempotency(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = Some(store);
        self
    }

    /// Accepts connections on `listener` (HTTP/1.1 and h2c on the same port) until `shutdown` resolves, then
    /// stops accepting and lets in-flight requests finish for up to [`ServerConfig::shutdown_grace`].
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
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));
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
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = Arc::clone(&self);
                    let service = service_fn(move |req| {
                        let gateway = Arc::clone(&gateway);
                        async move { Ok::<_, std::convert::Infallible>(Arc::clone(&gateway).handle(peer, req).await) }
                    });
                    match &self.config.tls {
                        None => {
                            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                            tokio::spawn(async move {
                                let _slot = slot;
                                if let Err(e) = conn.await {
                                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                                }
                            });
                        }
                        Some(tls) => {
                            // The handshake runs in the connection's task, bounded by the header timeout, so a
                            // slow handshake never holds up the accept loop.
                            let (acceptor, builder, watcher) = (tls.0.clone(), builder.clone(), graceful.watcher());
                            let handshake_timeout = self.config.header_read_timeout;
                            tokio::spawn(async move {
                                let _slot = slot;
                                let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                                };
                                let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                                if let Err(e) = conn.await {
                                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                                }
                            });
                        }
                    }
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
        if tokio::time::timeout(self.config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; dropping the remaining connections");
        }
    }

    /// The pipeline for one request.
    async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> http_io::Resp {
        pipeline::handle(&self, peer, req).await
    }
}
