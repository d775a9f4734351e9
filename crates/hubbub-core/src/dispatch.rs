//! Dispatcher shards. Each shard owns a slice of the subscribers and one task that
//! turns stamped updates into queue pushes, so a publish returns as soon as the
//! update is stored and handed over: it never waits for the fan-out.

use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::index::ShardIndex;
use crate::limits::Limits;
use crate::matcher::MatchCache;
use crate::metrics::HubMetrics;
use crate::published::Published;
use crate::subscriber::{CloseReason, Offer, Subscriber};

/// How many pending updates a dispatcher takes per wake-up; amortizes the index lock.
const BATCH: usize = 64;
const MATCH_CACHE_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub index: RwLock<ShardIndex>,
}

impl Shard {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ShardIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ShardIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct Dispatcher {
    pub shard: Arc<Shard>,
    pub rx: mpsc::Receiver<Arc<Published>>,
    pub limits: Arc<ArcSwap<Limits>>,
    pub metrics: Arc<dyn HubMetrics>,
    pub cancel: CancellationToken,
}

impl Dispatcher {
    pub async fn run(mut self) {
        let mut cache = MatchCache::new(MATCH_CACHE_CAPACITY);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
            }
            let capacity = self.limits.load().queue_capacity;
            let index = self.shard.read();
            for update in batch.drain(..) {
                let queued = fan_out(&index, &update, capacity, &mut cache, &*self.metrics);
                self.metrics.delivered(queued);
            }
        }
    }
}

/// Queues `update` to every visible subscriber of the shard; returns how many.
fn fan_out(
    index: &ShardIndex,
    update: &Published,
    capacity: usize,
    cache: &mut MatchCache,
    metrics: &dyn HubMetrics,
) -> u64 {
    let mut queued = 0;
    let mut offer = |sub: &Subscriber, cache: &mut MatchCache| {
        if sub.first_sight(update.seq) && cache.authorized(sub, &update.update) {
            match sub.offer(&update.frame, capacity) {
                Offer::Queued => queued += 1,
                Offer::Overflow => metrics.closed(CloseReason::SlowConsumer),
                Offer::AlreadyClosed => {}
            }
        }
    };
    for sub in index.exact_hits(&update.update.topics) {
        offer(sub, cache);
    }
    for sub in index.wide() {
        if cache.any(&sub.selectors, &update.update.topics) {
            offer(sub, cache);
        }
    }
    queued
}
