//! The accept loop. We own it (rather than `axum::serve`) for three things a
//! long-lived streaming server needs: a connection cap answered with 503, a
//! write deadline that cuts stuck peers, and a bounded graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::Rejection;
use crate::state::SharedState;

/// The client's address, as a request extension (rate limits, logs).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A request head must arrive within this; defends against idle or slow openers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\ntoo many open connections";

/// Serves until `shutdown` fires, then stops accepting, lets the hub end every
/// stream cleanly and waits up to the grace period for connections to finish.
pub async fn run(
    listener: TcpListener,
    state: SharedState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let router = crate::app::router(state.clone());
    let open = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let max = effective_max_connections(state.settings.load().limits.max_connections);
    tracing::info!(addr = %listener.local_addr()?, max_connections = max, "listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Read per accept, so a reload changes the cap at once.
        let max = effective_max_connections(state.settings.load().limits.max_connections);
        let Some(slot) = Slot::take(&open, max) else {
            state.metrics.reject(Rejection::TooManyConnections);
            tracker.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                req
            });
        let deadline = state.settings.load().limits.write_deadline;
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tracker.spawn(async move {
            state.metrics.connections.inc();
            serve_connection(
                stream,
                TowerToHyperService::new(service),
                deadline,
                shutdown,
            )
            .await;
            state.metrics.connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    let grace = state.settings.load().shutdown_grace;
    tracing::info!(?grace, "shutting down: ending streams");
    state.hub.shutdown().await;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over; remaining connections are dropped");
    }
    Ok(())
}

async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    deadline: Option<Duration>,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let io = TokioIo::new(WriteDeadline::new(stream, deadline));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish the in-flight response (streams end via hub shutdown), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// One open connection, counted until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        Some(Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVER_CAPACITY)).await;
}

/// 0 means "as many as the open-files limit allows", keeping some for the rest.
fn effective_max_connections(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    open_files_limit().map_or(10_000, |n| n.saturating_sub(64).max(16))
}

fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Fails a write that stays blocked longer than the deadline, so a peer that
/// stopped reading cannot pin a connection (and its queue) forever.
#[derive(Debug)]
struct WriteDeadline<T> {
    inner: T,
    deadline: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, deadline: Option<Duration>) -> Self {
        Self {
            inner,
            deadline,
            timer: None,
        }
    }

    /// Called when the inner write is pending: arm the timer, or fail if it fired.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let Some(limit) = self.deadline else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "write deadline exceeded",
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            done => {
                self.timer = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            done => {
                self.timer = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
