//! The accept loop. We own it (rather than `axum::serve`) for what a server of
//! long-lived streams needs: a connection cap answered with 503, a write
//! deadline that cuts stuck peers, lean event-stream connections (see `conn`),
//! and a bounded graceful shutdown.
//!
//! **Two runtimes.** The control path (accepting, reading and answering
//! requests: publishes, health, metrics, subscription set-up) runs on a
//! thread and runtime of its own; only established event streams (`conn::pump`)
//! run on the caller's runtime, the fan-out runtime. Under fan-out load the
//! fan-out runtime has thousands of stream tasks ready per update; a publish
//! queued behind them waited tens of milliseconds for its answer. On its own
//! thread it waits only for the kernel to schedule that thread, which it does
//! promptly for a thread that sleeps most of the time.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{ConnGuard, Peer, Slot};
use crate::lifecycle::{self, Lifecycle};
use crate::metrics::Rejection;
use crate::state::SharedState;

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

/// Serves until `shutdown` fires, then runs the shutdown order
/// ([`lifecycle::shut_down`]): the connections' tasks are tracked here.
///
/// The accept loop and the shutdown order run on the control thread (see the
/// module docs); event streams on the runtime this is called on. Returns once
/// the control thread has finished (its runtime is dropped with it).
pub async fn run(
    listener: TcpListener,
    state: SharedState,
    lifecycle: Arc<Lifecycle>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let streams = Handle::current();
    // A listener belongs to the runtime that registered it; hand it over.
    let listener = listener.into_std()?;
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("hubbub-control".into())
        .spawn(move || {
            let served = control_runtime().and_then(|runtime| {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let connections = TaskTracker::new();
                    accept(&listener, &state, &shutdown, &connections, &streams).await?;
                    lifecycle::shut_down(&state, &lifecycle, listener, &connections).await;
                    Ok(())
                })
            });
            let _ = done_tx.send(served);
        })?;
    done.await
        .unwrap_or_else(|_| Err(io::Error::other("the control thread panicked")))
}

/// One thread: the control path is light per request (a publish is tens of
/// microseconds) and what it needs is to be scheduled at once, not parallelism.
fn control_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Accepts until `shutdown` fires; each connection (or refusal) is a task of
/// `tracker`, on this (the control) runtime until it becomes an event stream,
/// which moves to `streams`.
async fn accept(
    listener: &TcpListener,
    state: &SharedState,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    streams: &Handle,
) -> io::Result<()> {
    let router = crate::app::router(state.clone());
    let open = Arc::new(AtomicUsize::new(0));
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
        let limits = {
            let settings = state.settings.load();
            crate::conn::ConnLimits {
                write_deadline: settings.limits.write_deadline,
                max_subscribe_body: settings.limits.max_subscribe_body_bytes,
                body_timeout: settings.limits.request_timeout,
            }
        };
        let guard = ConnGuard::new(slot, state.metrics.connections.clone());
        let conn = crate::conn::serve(
            stream,
            Peer(peer),
            router.clone(),
            limits,
            shutdown.clone(),
            crate::conn::StreamTasks {
                tracker: tracker.clone(),
                runtime: streams.clone(),
            },
            guard,
        );
        tracker.spawn(conn);
    }
    Ok(())
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
