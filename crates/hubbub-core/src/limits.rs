//! The limits an operator can change while the hub runs (hot reload): read by the
//! dispatchers, the sweeper and `subscribe` through one `ArcSwap`.

use std::time::Duration;

use crate::history::HistoryLimits;

/// Limits that can change while the hub runs (hot reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Live frames a subscriber may have waiting before it is closed as slow.
    pub queue_capacity: usize,
    /// Concurrent subscribers; 0 means no limit.
    pub max_subscribers: usize,
    pub history: HistoryLimits,
    /// Comment line after this long without output; `None` turns heartbeats off.
    pub heartbeat: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue_capacity: 1000,
            max_subscribers: 0,
            history: HistoryLimits::default(),
            heartbeat: Some(Duration::from_secs(40)),
        }
    }
}
