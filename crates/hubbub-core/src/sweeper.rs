//! The periodic sweep: advances the coarse clock, trims history by age, ends
//! streams whose lifetime or token has run out, queues heartbeats on idle
//! streams (a write to a dead peer fails, which frees it) and samples queue depth.
//! One timer for the whole hub instead of one per subscriber.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dispatch::Shard;
use crate::metrics::HubMetrics;

/// Sweep often enough for heartbeats to be on time within half an interval.
pub(crate) fn sweep_interval(heartbeat: Option<Duration>) -> Duration {
    let max = Duration::from_secs(1);
    heartbeat.map_or(max, |h| (h / 2).clamp(Duration::from_millis(20), max))
}

/// Ends streams past their deadline, queues heartbeats on idle ones and samples
/// queue depth. Takes only what it reads, so it knows nothing of the hub itself.
pub(crate) fn sweep_streams(
    shards: &[Arc<Shard>],
    metrics: &dyn HubMetrics,
    heartbeat: &Bytes,
    heartbeat_ms: Option<u64>,
    now: Instant,
    now_ms: u64,
) {
    for shard in shards {
        let index = shard.read();
        for sub in index.all.values() {
            if let Some((deadline, reason)) = sub.deadline
                && now >= deadline
            {
                if sub.close(reason) {
                    metrics.closed(reason);
                }
                continue;
            }
            if let Some(hb) = heartbeat_ms
                && now_ms.saturating_sub(sub.last_output_ms.load(Ordering::Relaxed)) >= hb
            {
                sub.offer_heartbeat(heartbeat);
            }
            metrics.queue_depth(sub.depth());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_follows_heartbeat() {
        assert_eq!(sweep_interval(None), Duration::from_secs(1));
        assert_eq!(
            sweep_interval(Some(Duration::from_secs(40))),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Some(Duration::from_millis(200))),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_interval(Some(Duration::from_millis(1))),
            Duration::from_millis(20)
        );
    }
}
