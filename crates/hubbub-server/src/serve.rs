//! The accept loop. We own it (rather than `axum::serve`) for what a server of
//! long-lived streams needs: a connection cap answered with 503, a write
//! deadline that cuts stuck peers, lean event-stream connections (see `conn`),
//! and a bounded graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Rejection;
use crate::state::SharedState;

/// The client's address, as a request extension (rate limits, logs).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Refusals (over the connection cap) in progress at most; past this a refused
/// connection is closed at once, so a flood cannot turn refusals themselves
/// into unbounded tasks. Each one lasts at most three `REFUSAL_WAIT`s.
const MAX_REFUSALS: usize = 256;
/// How long a refusal waits for the request, for its answer to be taken, and
/// then for the client to close.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// Bytes of the request read before answering, and drained after.
const REFUSAL_READ: usize = 8 * 1024;
const REFUSAL_DRAIN: usize = 64 * 1024;

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
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
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
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tracker.spawn(refuse(stream, permit));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let deadline = state.settings.load().limits.write_deadline;
        state.metrics.connections.inc();
        let guard = ConnGuard {
            _slot: slot,
            _gauge: GaugeGuard(state.metrics.connections.clone()),
        };
        let conn = crate::conn::serve(
            stream,
            Peer(peer),
            router.clone(),
            deadline,
            shutdown.clone(),
            tracker.clone(),
            guard,
        );
        tracker.spawn(conn);
    }
    drop(listener);
    drain(&state, &tracker).await;
    Ok(())
}

/// How long leaving the cluster (flushing relay links) may take.
const LEAVE_LIMIT: Duration = Duration::from_secs(3);
/// The SSE `retry` sent to drained streams (jittered up to twice this).
const DRAIN_RETRY: Duration = Duration::from_secs(1);

/// The shutdown order, once accepting has stopped: turn not-ready; leave the
/// cluster (no more publishes here, relay backlog flushed, peers stop waiting
/// for us); end streams spread over `drain_window` with a `retry` so clients
/// reconnect elsewhere without a storm (they keep receiving until then);
/// stop the hub; give connections `shutdown_grace` to finish; stop the
/// cluster node.
async fn drain(state: &SharedState, tracker: &TaskTracker) {
    state.draining.store(true, Ordering::Relaxed);
    let settings = state.settings.load_full();
    if let Some(cluster) = &state.cluster {
        let started = std::time::Instant::now();
        let flushed = cluster
            .leave(LEAVE_LIMIT.min(settings.shutdown_grace))
            .await;
        tracing::info!(flushed, took = ?started.elapsed(), "left the cluster");
    }
    let window = settings.drain_window;
    tracing::info!(?window, "draining: ending streams");
    let ended = state.hub.drain(window, DRAIN_RETRY).await;
    tracing::info!(streams = ended, "draining: every stream told to end");
    state.hub.shutdown().await;
    tracker.close();
    let grace = settings.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "grace period over; remaining connections are dropped"
        );
    }
    if let Some(cluster) = &state.cluster {
        cluster.shutdown().await;
    }
}

/// Held for as long as a connection is open: its slot under the cap, and the gauge.
pub struct ConnGuard {
    _slot: Slot,
    _gauge: GaugeGuard,
}

/// Decrements the open-connections gauge when the connection is gone.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
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

/// Answers a connection over the cap with 503 + `Retry-After`. Closing a
/// socket whose request was never read makes the kernel send a reset, which
/// can destroy the answer before the client reads it; so this reads the
/// request head first, answers, closes its sending side, and reads on until
/// the client closes too (a lingering close). Every step is bounded in time
/// and bytes; `_permit` counts the refusal against `MAX_REFUSALS`.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let _ = timeout(REFUSAL_WAIT, read_some_head(&mut stream)).await;
    let answer = over_capacity(SystemTime::now());
    if !matches!(
        timeout(REFUSAL_WAIT, stream.write_all(answer.as_bytes())).await,
        Ok(Ok(()))
    ) {
        return;
    }
    if stream.shutdown().await.is_ok() {
        let _ = timeout(REFUSAL_WAIT, drain_input(&mut stream, REFUSAL_DRAIN)).await;
    }
}

/// Reads until the request head is complete, the client stops sending, or
/// `REFUSAL_READ` bytes came.
async fn read_some_head(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    while buf.len() < REFUSAL_READ {
        let from = buf.len();
        if stream.read_buf(&mut buf).await? == 0 || crate::conn::head_ends(&buf, from) {
            break;
        }
    }
    Ok(())
}

/// Reads and discards until EOF or `limit` bytes.
async fn drain_input(stream: &mut TcpStream, limit: usize) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let mut left = limit;
    while left > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n);
    }
    Ok(())
}

/// The refusal, with the same framing headers as every other response.
fn over_capacity(now: SystemTime) -> String {
    const BODY: &str = "too many open connections\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\ndate: {}\r\n\r\n{BODY}",
        BODY.len(),
        crate::conn::http_date(now)
    )
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
