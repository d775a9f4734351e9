//! Dispatcher shards. Each shard owns a slice of the subscribers and one task that
//! turns stamped updates into queue pushes, so a publish returns as soon as the
//! update is stored and handed over: it never waits for the fan-out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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

/// Subscribers kept per shard to measure the backlog: the latest ones its
/// fan-outs queued to.
const BACKLOG_SAMPLE: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub index: RwLock<ShardIndex>,
    /// The latest subscribers this shard's fan-outs queued to (some of each
    /// update's): their queues' depth says how far the stream writers are
    /// behind the dispatcher ([`crate::Hub::fanout_backlog`]).
    sample: Mutex<VecDeque<Arc<Subscriber>>>,
}

impl Shard {
    /// Appends the number of frames waiting in each sampled subscriber's
    /// queue (each subscriber once; 0 for a closed one).
    pub fn sample_depths(&self, depths: &mut Vec<usize>) {
        let sample = self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen: Vec<u64> = Vec::with_capacity(sample.len());
        for sub in sample.iter() {
            if !seen.contains(&sub.id) {
                seen.push(sub.id);
                depths.push(sub.open_depth().unwrap_or(0));
            }
        }
    }

    /// Adds the latest picks (of a batch of updates), forgetting the oldest
    /// beyond `BACKLOG_SAMPLE`.
    fn add_sample(&self, picks: &mut Vec<Arc<Subscriber>>) {
        let mut sample = self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = picks.len().saturating_sub(BACKLOG_SAMPLE);
        sample.extend(picks.drain(..).skip(skip));
        let excess = sample.len().saturating_sub(BACKLOG_SAMPLE);
        sample.drain(..excess);
    }

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
        let mut picks = Vec::new();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
            }
            let capacity = self.limits.load().queue_capacity;
            let index = self.shard.read();
            for update in batch.drain(..) {
                let queued = fan_out(
                    &index,
                    &update,
                    capacity,
                    &mut cache,
                    &mut picks,
                    &*self.metrics,
                );
                self.metrics.delivered(queued);
            }
            drop(index);
            if !picks.is_empty() {
                self.shard.add_sample(&mut picks);
            }
        }
    }
}

/// Queues `update` to every visible subscriber of the shard; returns how many,
/// and adds some of them to `picks` (see [`Shard::backlog`]).
fn fan_out(
    index: &ShardIndex,
    update: &Published,
    capacity: usize,
    cache: &mut MatchCache,
    picks: &mut Vec<Arc<Subscriber>>,
    metrics: &dyn HubMetrics,
) -> u64 {
    let mut queued = 0;
    // Picks spread over the whole fan-out: writers are woken in fan-out order,
    // so its first subscribers are written first and their queues alone would
    // hide a backlog.
    let stride = (index.fanout_size(&update.update.topics) / BACKLOG_SAMPLE).max(1) as u64;
    let mut offer = |sub: &Arc<Subscriber>, cache: &mut MatchCache| {
        if sub.first_sight(update.seq) && cache.authorized(sub, &update.update) {
            match sub.offer(&update.frame, capacity) {
                Offer::Queued => {
                    queued += 1;
                    if queued % stride == 0 {
                        picks.push(sub.clone());
                    }
                }
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
