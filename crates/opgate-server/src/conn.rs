//! One connection from accept to close: the per-address cap, a deadline that runs from accept (protocol
//! detection and TLS included) to the first request, an idle timeout for HTTP/1 and HTTP/2 alike, a
//! write-stall timeout (a client that reads nothing is dropped), and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::http_io;
use crate::Gateway;

/// What a connection is doing, for its timers: requests being handled, responses being sent, when the last
/// one started or ended, and when a response body last handed over a frame.
pub(crate) struct Activity {
    epoch: Instant,
    handling: AtomicU32,
    sending: AtomicU32,
    /// Milliseconds since `epoch` of the last start or end of a request or a response.
    last_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last frame a response body handed to the connection.
    progress_ms: AtomicU64,
}

/// Marks one request being handled; becomes [`Sending`] with its response.
pub(crate) struct Handling(Arc<Activity>);

/// Marks one response being sent, until its body ends or is dropped.
pub(crate) struct Sending(Arc<Activity>);

/// What the connection's timer should do next.
enum Verdict {
    /// Look again at this instant.
    Wait(Instant),
    /// Nothing is under way and nothing happened for the idle time: close gracefully.
    Idle,
    /// A response has handed over nothing for the write timeout (the client reads nothing, or its HTTP/2
    /// window stays shut): drop the connection.
    Stalled,
}

impl Activity {
    fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Activity {
            epoch,
            handling: AtomicU32::new(0),
            sending: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn begin(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        Handling(Arc::clone(self))
    }

    fn verdict(&self, idle: Duration, write_timeout: Duration) -> Verdict {
        let now = self.now_ms();
        if self.sending.load(Ordering::Relaxed) > 0 {
            let stalled_at =
                self.progress_ms.load(Ordering::Relaxed) + write_timeout.as_millis() as u64;
            return if now >= stalled_at {
                Verdict::Stalled
            } else {
                Verdict::Wait(self.at(stalled_at))
            };
        }
        if self.handling.load(Ordering::Relaxed) > 0 {
            // A handler is running (bounded by the request timeout): look again later.
            return Verdict::Wait(self.at(now) + idle);
        }
        let idle_at = self.last_ms.load(Ordering::Relaxed) + idle.as_millis() as u64;
        if now >= idle_at {
            Verdict::Idle
        } else {
            Verdict::Wait(self.at(idle_at))
        }
    }
}

impl Handling {
    /// The handler answered: the response is being sent from now on.
    fn sending(self) -> Sending {
        let activity = Arc::clone(&self.0);
        let now = activity.now_ms();
        activity.sending.fetch_add(1, Ordering::Relaxed);
        activity.progress_ms.store(now, Ordering::Relaxed);
        drop(self);
        Sending(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sending {
    /// A frame was handed to the connection.
    pub(crate) fn progressed(&self) {
        self.0.progress_ms.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose writes may not stall: a write (or flush) that cannot make progress for `timeout` fails with
/// `TimedOut`, which ends the connection. A client that stops reading a stream is dropped this way instead
/// of holding its buffers forever.
pub(crate) struct StallTimeout<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        StallTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Maps a write's outcome: progress disarms the timer; `Pending` arms it (once) and fails once it fires.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// Serves one accepted connection (after TLS, if any) until it closes, idles out, stalls, or the gateway
/// shuts down (then gracefully: in-flight requests finish, HTTP/2 gets a GOAWAY).
pub(crate) async fn serve<S>(
    gateway: Arc<Gateway>,
    builder: auto::Builder<TokioExecutor>,
    io: S,
    peer: SocketAddr,
    accepted: Instant,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = gateway.config.header_read_timeout;
    let write_timeout = gateway.config.write_timeout;
    // The idle clock starts at accept: a client that sends nothing, or only part of a preface or of a request
    // head, is dropped one idle period after it connected, whatever the protocol detection is waiting for.
    let activity = Activity::new(accepted);
    let service = {
        let (gateway, activity) = (Arc::clone(&gateway), Arc::clone(&activity));
        service_fn(move |req| {
            let handling = activity.begin();
            let gateway = Arc::clone(&gateway);
            async move {
                let resp = crate::pipeline::handle(&gateway, peer, req).await;
                Ok::<_, std::convert::Infallible>(
                    resp.map(|body| http_io::sending(body, handling.sending())),
                )
            }
        })
    };
    let io = StallTimeout::new(io, write_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until((accepted + idle).into());
    tokio::pin!(timer);
    // Once closing for idleness, the connection gets at most this long to finish (an HTTP/2 client that never
    // acknowledges the GOAWAY, or keeps a shut window, cannot hold it).
    let mut closing_until: Option<Instant> = None;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut timer => {
                if closing_until.is_some_and(|until| Instant::now() >= until) {
                    tracing::debug!(%peer, "dropping a connection that did not close");
                    return;
                }
                match activity.verdict(idle, write_timeout) {
                    Verdict::Stalled => {
                        tracing::debug!(%peer, "dropping a connection whose response made no progress");
                        return;
                    }
                    Verdict::Idle if closing_until.is_none() => {
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        let until = Instant::now() + idle.min(Duration::from_secs(5));
                        closing_until = Some(until);
                        timer.as_mut().reset(until.into());
                    }
                    Verdict::Idle => timer.as_mut().reset(closing_until.unwrap_or_else(Instant::now).into()),
                    Verdict::Wait(at) => {
                        let at = closing_until.map_or(at, |until| at.min(until));
                        timer.as_mut().reset(at.into());
                    }
                }
            }
        }
    }
}
