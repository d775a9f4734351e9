//! What a [`Server`](crate::Server) starts and the order it stops in.
//!
//! Every long-lived task the server starts belongs to a tracker owned by its
//! starter: connections to the accept loop's (`serve`), the hub's shards and
//! sweeper to the `Hub`, and the tasks joining a cluster node to the hub
//! (`clustering`) to [`Lifecycle`], which stops them by cancelling their token.
//! [`shut_down`] is the shutdown order, written once; each step it finishes is
//! recorded, so operators' logs and tests can see the order.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::SharedState;

/// A step of [`shut_down`], in its order. The cluster steps are no-ops on a
/// single node but are recorded all the same: the order does not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownStep {
    /// The listener is closed and `/readyz` answers 503.
    StopAccepting,
    /// A cluster node sealed its origin and flushed its relay links (bounded).
    LeaveCluster,
    /// Every stream was told to end (queued frames, an SSE `retry`, the end).
    DrainStreams,
    /// The hub closed what was left and stopped its tasks.
    StopHub,
    /// Connections finished, or `shutdown_grace` ran out and they were dropped.
    CloseConnections,
    /// The cluster node and the tasks joining it to the hub stopped.
    StopCluster,
}

/// The server's own background tasks, their stop signal, and the record of
/// the shutdown steps done so far.
#[derive(Debug)]
pub struct Lifecycle {
    tasks: TaskTracker,
    stop: CancellationToken,
    steps: watch::Sender<Vec<ShutdownStep>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            steps: watch::channel(Vec::new()).0,
        }
    }
}

impl Lifecycle {
    /// Runs `task` (given the token that tells it to stop) as one of ours.
    pub fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.stop.child_token()));
    }

    /// The shutdown steps done so far, updated as each one finishes.
    pub fn steps(&self) -> watch::Receiver<Vec<ShutdownStep>> {
        self.steps.subscribe()
    }

    fn done(&self, step: ShutdownStep, started: Instant) {
        tracing::info!(?step, took = ?started.elapsed(), "shutdown step done");
        self.steps.send_modify(|steps| steps.push(step));
    }

    /// Stops our tasks and waits for them.
    async fn stop_tasks(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// How long leaving the cluster (flushing relay links) may take.
const LEAVE_LIMIT: Duration = Duration::from_secs(3);
/// The SSE `retry` sent to drained streams (jittered up to twice this).
const DRAIN_RETRY: Duration = Duration::from_secs(1);

/// The shutdown order, once accepting was asked to stop: stop accepting and
/// turn not-ready (load balancers send new clients elsewhere); leave the
/// cluster (no more publishes here, relay backlog flushed, peers stop waiting
/// for us); end streams spread over `drain_window` with a `retry` so clients
/// reconnect elsewhere without a storm (they keep receiving until then); stop
/// the hub; give connections `shutdown_grace` to finish; stop the cluster node.
pub async fn shut_down(
    state: &SharedState,
    lifecycle: &Lifecycle,
    listener: TcpListener,
    connections: &TaskTracker,
) {
    use ShutdownStep::*;
    let step = Instant::now();
    stop_accepting(state, listener);
    lifecycle.done(StopAccepting, step);
    let step = Instant::now();
    leave_cluster(state).await;
    lifecycle.done(LeaveCluster, step);
    let step = Instant::now();
    drain_streams(state).await;
    lifecycle.done(DrainStreams, step);
    let step = Instant::now();
    state.hub.shutdown().await;
    lifecycle.done(StopHub, step);
    let step = Instant::now();
    close_connections(state, connections).await;
    lifecycle.done(CloseConnections, step);
    let step = Instant::now();
    stop_cluster(state, lifecycle).await;
    lifecycle.done(StopCluster, step);
}

fn stop_accepting(state: &SharedState, listener: TcpListener) {
    drop(listener);
    state.draining.cancel();
}

async fn leave_cluster(state: &SharedState) {
    if let Some(cluster) = &state.cluster {
        let grace = state.settings.load().shutdown_grace;
        // Our subscriptions end as we leave, in order, on every peer (rather
        // than after the peers' grace for departed nodes).
        state.presence.farewell(LEAVE_LIMIT.min(grace)).await;
        let flushed = cluster.leave(LEAVE_LIMIT.min(grace)).await;
        tracing::info!(flushed, "left the cluster");
    }
}

async fn drain_streams(state: &SharedState) {
    let window = state.settings.load().drain_window;
    tracing::info!(?window, "draining: ending streams");
    let ended = state.hub.drain(window, DRAIN_RETRY).await;
    tracing::info!(streams = ended, "draining: every stream told to end");
}

async fn close_connections(state: &SharedState, connections: &TaskTracker) {
    connections.close();
    let grace = state.settings.load().shutdown_grace;
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "grace period over; remaining connections are dropped"
        );
    }
}

/// Our tasks first (they stop feeding the hub and gossip), then the node.
async fn stop_cluster(state: &SharedState, lifecycle: &Lifecycle) {
    lifecycle.stop_tasks().await;
    if let Some(cluster) = &state.cluster {
        cluster.shutdown().await;
    }
}
