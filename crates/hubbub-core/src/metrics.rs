//! The narrow hook through which the core reports what it does. The server
//! implements it with Prometheus; the core itself stays free of any exporter.

use crate::subscriber::CloseReason;

/// Called from hot paths, so implementations must be cheap and non-blocking
/// (an atomic add). Calls are batched where possible (one per update, not per frame).
pub trait HubMetrics: Send + Sync + 'static {
    /// An update was accepted and stored.
    fn published(&self) {}
    /// `frames` copies of one update were queued to subscribers.
    fn delivered(&self, _frames: u64) {}
    /// A subscription ended for `reason`.
    fn closed(&self, _reason: CloseReason) {}
    /// One subscriber's queue depth, sampled by each sweep.
    fn queue_depth(&self, _depth: usize) {}
    /// History size after a change.
    fn history(&self, _entries: usize, _bytes: usize) {}
}

/// For tests and embedders that do not export metrics.
#[derive(Debug, Default)]
pub struct NoMetrics;

impl HubMetrics for NoMetrics {}
