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

use crate::http_io::{self, Resp};
use crate::Gateway;

/// What a connection is doing, for its idle timer: requests under way (until their response body is sent)
/// and when the last one started or ended.
pub(crate) struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` of the last start or end of a request.
    last_ms: AtomicU64,
}

/// Marks one request under way; dropped when its response has been sent (or abandoned).
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Activity {
            epoch,
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// When the connection becomes idle-expired if nothing happens meanwhile; `None` while a request runs.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch + last + idle)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
    // The idle clock starts at accept: a client that sends nothing, or only part of a preface or of a request
    // head, is dropped one idle period after it connected, whatever the protocol detection is waiting for.
    let activity = Activity::new(accepted);
    let service = {
        let (gateway, activity) = (Arc::clone(&gateway), Arc::clone(&activity));
        service_fn(move |req| {
            let busy = activity.begin();
            let gateway = Arc::clone(&gateway);
            async move {
                let resp = crate::pipeline::handle(&gateway, peer, req).await;
                Ok::<_, std::convert::Infallible>(hold_until_sent(resp, busy))
            }
        })
    };
    let io = StallTimeout::new(io, gateway.config.write_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until((accepted + idle).into());
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut timer, if !closing => {
                match activity.idle_deadline(idle) {
                    // A request is under way: look again one idle period from now.
                    None => timer.as_mut().reset((Instant::now() + idle).into()),
                    Some(deadline) if deadline > Instant::now() => timer.as_mut().reset(deadline.into()),
                    Some(_) => {
                        tracing::debug!(%peer, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Keeps the connection counted busy until a streamed body is sent; a whole body is written at once, and a
/// client that does not read it meets the write timeout.
fn hold_until_sent(resp: Resp, busy: Busy) -> Resp {
    use hyper::body::Body as _;
    if resp.body().size_hint().exact().is_some() {
        return resp;
    }
    resp.map(|body| http_io::with_guard(body, busy))
}
