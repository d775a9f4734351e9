//! The periodic sweep: advances the coarse clock, trims history by age, ends
//! streams whose lifetime or token has run out, queues heartbeats on idle
//! streams (a write to a dead peer fails, which frees it) and samples queue depth.
//! One timer for the whole hub instead of one per subscriber.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hubbub_proto::HEARTBEAT;

use crate::hub::Inner;

/// Sweep often enough for heartbeats to be on time within half an interval.
pub(crate) fn sweep_interval(heartbeat: Option<Duration>) -> Duration {
    let max = Duration::from_secs(1);
    heartbeat.map_or(max, |h| (h / 2).clamp(Duration::from_millis(20), max))
}

pub(crate) async fn run(hub: Weak<Inner>, cancel: tokio_util::sync::CancellationToken) {
    let heartbeat = Bytes::from_static(HEARTBEAT);
    loop {
        let Some(interval) = hub
            .upgrade()
            .map(|h| sweep_interval(h.limits.load().heartbeat))
        else {
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = hub.upgrade() else { return };
        sweep(&inner, &heartbeat, Instant::now());
    }
}

fn sweep(inner: &Inner, heartbeat: &Bytes, now: Instant) {
    let now_ms = inner.tick(now);
    inner.trim_history(now);
    let heartbeat_ms = inner.limits.load().heartbeat.map(|h| h.as_millis() as u64);
    for shard in inner.shards.iter() {
        let index = shard.read();
        for sub in index.all.values() {
            if let Some((deadline, reason)) = sub.deadline
                && now >= deadline
            {
                if sub.close(reason) {
                    inner.metrics.closed(reason);
                }
                continue;
            }
            if let Some(hb) = heartbeat_ms
                && now_ms.saturating_sub(sub.last_output_ms.load(Ordering::Relaxed)) >= hb
            {
                sub.offer_heartbeat(heartbeat);
            }
            inner.metrics.queue_depth(sub.depth());
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
