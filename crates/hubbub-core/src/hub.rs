//! The hub handle: publish, subscribe, reconfigure, shut down.
//!
//! Ordering invariant: one lock (`log`) covers stamping an update, appending it to
//! history and handing it to the dispatchers, and also covers registering a
//! subscriber (snapshotting its replay and inserting it in its shard's index).
//! So every update is either in a new subscriber's replay or in its live queue,
//! never both and never neither, and every subscriber sees one order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hubbub_proto::{HEARTBEAT, Selector, Update};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{Dispatcher, Shard};
use crate::history::{History, Resume};
use crate::limits::Limits;
use crate::matcher::MatchCache;
use crate::metrics::HubMetrics;
use crate::published::Published;
use crate::subscriber::{CloseReason, Registry, Subscriber, Subscription};
use crate::sweeper::{sweep_interval, sweep_streams};

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub limits: Limits,
    /// Dispatcher shards (tasks); defaults to the number of CPUs.
    pub shards: usize,
    /// Updates each dispatcher may have pending before publishes are refused.
    pub dispatch_backlog: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            limits: Limits::default(),
            shards: cpus,
            dispatch_backlog: 4096,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PublishError {
    /// The dispatchers are behind; the caller should retry shortly (503).
    #[error("the hub is overloaded; retry shortly")]
    Overloaded,
    #[error("the hub is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("too many subscribers (the limit is {0})")]
    TooManySubscribers(usize),
    #[error("the hub is shutting down")]
    ShuttingDown,
}

/// What a subscriber asks for; authorization was settled by the caller.
#[derive(Debug, Default)]
pub struct SubscribeRequest {
    pub selectors: Vec<Selector>,
    /// The `mercure.subscribe` claim; `None` means public updates only.
    pub claims: Option<Vec<Selector>>,
    pub resume: Resume,
    /// When the stream must end, and why (lifetime or token expiry).
    pub deadline: Option<(Instant, CloseReason)>,
}

#[derive(Debug)]
struct Log {
    history: History,
    next_seq: u64,
}

pub(crate) struct Inner {
    log: Mutex<Log>,
    pub(crate) shards: Box<[Arc<Shard>]>,
    pub(crate) limits: Arc<ArcSwap<Limits>>,
    pub(crate) metrics: Arc<dyn HubMetrics>,
    /// The dispatcher shards' channels. A publish reserves and sends while it
    /// holds `log` (that is what keeps one order); [`Hub::publish_capacity`]
    /// awaits room in them without it.
    senders: Box<[mpsc::Sender<Arc<Published>>]>,
    subscribers: AtomicUsize,
    next_sub_id: AtomicU64,
    epoch: Instant,
    clock: Arc<AtomicU64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

/// Fewer distinct subscribers than this in the backlog sample measure
/// nothing: the backlog of a handful of subscribers is theirs (slow consumers,
/// which their queue bound handles), not the writers' as a whole.
const SAMPLE_MIN: usize = 8;

/// A cheap-to-clone handle on the fan-out engine.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// Starts the dispatcher shards and the sweeper on the current tokio runtime.
    pub fn start(config: HubConfig, metrics: Arc<dyn HubMetrics>) -> Self {
        let shards: Box<[Arc<Shard>]> = (0..config.shards.max(1)).map(|_| Arc::default()).collect();
        let limits = Arc::new(ArcSwap::from_pointee(config.limits.clone()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut senders = Vec::with_capacity(shards.len());
        for shard in shards.iter() {
            let (tx, rx) = mpsc::channel(config.dispatch_backlog.max(1));
            senders.push(tx);
            let dispatcher = Dispatcher {
                shard: shard.clone(),
                rx,
                limits: limits.clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            };
            tracker.spawn(dispatcher.run());
        }
        let inner = Arc::new(Inner {
            senders: senders.into_boxed_slice(),
            log: Mutex::new(Log {
                history: History::new(config.limits.history),
                next_seq: 1,
            }),
            shards,
            limits,
            metrics,
            subscribers: AtomicUsize::new(0),
            next_sub_id: AtomicU64::new(1),
            epoch: Instant::now(),
            clock: Arc::new(AtomicU64::new(0)),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        tracker.spawn(run_sweeper(Arc::downgrade(&inner), cancel));
        Self { inner }
    }

    /// Stamps, stores and hands over an update for fan-out. The update must have
    /// been validated. Returns once the dispatchers hold it, not after delivery.
    pub fn publish(&self, update: Update) -> Result<Arc<Published>, PublishError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        let now = Instant::now();
        // Encode outside the lock; the seq is patched in under it.
        let mut published = Published::new(0, update, now);
        let mut guard = inner.lock_log();
        let Log { history, next_seq } = &mut *guard;
        let permits: Vec<_> = inner
            .senders
            .iter()
            .map(|tx| tx.try_reserve())
            .collect::<Result<_, _>>()
            .map_err(|_| PublishError::Overloaded)?;
        published.seq = *next_seq;
        *next_seq += 1;
        let published = Arc::new(published);
        history.push(published.clone(), now);
        for permit in permits {
            permit.send(published.clone());
        }
        let (entries, bytes) = (history.len(), history.bytes());
        drop(guard);
        inner.metrics.published();
        inner.metrics.history(entries, bytes);
        Ok(published)
    }

    /// How far the stream writers are behind the publishers: the median
    /// number of frames waiting in the queues of a sample of the subscribers
    /// the latest updates went to (all shards together), plus the updates a
    /// dispatcher has yet to fan out. Slow consumers
    /// do not move it unless they are the majority (their own queue bound
    /// handles them); it grows when the writers as a whole cannot keep up,
    /// e.g. when the CPU is saturated.
    pub fn fanout_backlog(&self) -> usize {
        // Updates a dispatcher has not fanned out yet are frames every one of
        // its subscribers is still to get: a dispatcher that falls behind
        // would otherwise hide the backlog until it catches up and fills
        // every queue at once.
        let undispatched = self
            .inner
            .senders
            .iter()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .max()
            .unwrap_or(0);
        let mut depths = Vec::new();
        for shard in self.inner.shards.iter() {
            shard.sample_depths(&mut depths);
        }
        if depths.len() < SAMPLE_MIN {
            return 0;
        }
        let middle = depths.len() / 2;
        *depths.select_nth_unstable(middle).1 + undispatched
    }

    /// Waits (up to `limit`) until the fan-out backlog is at most an eighth of
    /// `queue_capacity`: `Ok` with the backlog it last measured, or `Err`
    /// with it if it is still larger then. What a publisher awaits before
    /// publishing: updates accepted faster than the writers can send them
    /// would overflow every queue at once and disconnect everyone as slow, so
    /// under sustained overload publishers are slowed (and, past `limit`,
    /// refused) instead.
    pub async fn fanout_room(&self, limit: Duration) -> Result<usize, usize> {
        const POLL: Duration = Duration::from_millis(2);
        let threshold = (self.inner.limits.load().queue_capacity / 8).max(1);
        let until = Instant::now() + limit;
        loop {
            let backlog = self.fanout_backlog();
            if backlog <= threshold {
                return Ok(backlog);
            }
            if Instant::now() >= until {
                return Err(backlog);
            }
            tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Waits until every dispatcher shard has room for one more update, or the
    /// hub shuts down: what a caller that must not drop an update (the cluster
    /// log) awaits after [`PublishError::Overloaded`] instead of polling. The
    /// room is not reserved, so the next publish may find the hub full again
    /// (another publisher came first); then wait again.
    pub async fn publish_capacity(&self) {
        let inner = &self.inner;
        let room = async {
            for tx in inner.senders.iter() {
                // Err: the dispatcher is gone, so the hub is shutting down.
                let _ = tx.reserve().await;
            }
        };
        tokio::select! {
            _ = inner.cancel.cancelled() => {}
            _ = room => {}
        }
    }

    /// Registers a subscriber and snapshots its replay atomically with respect to
    /// publishes (see the module docs).
    pub fn subscribe(&self, request: SubscribeRequest) -> Result<Subscription, SubscribeError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(SubscribeError::ShuttingDown);
        }
        let max = inner.limits.load().max_subscribers;
        let count = inner.subscribers.fetch_add(1, Ordering::Relaxed);
        if max > 0 && count >= max {
            inner.subscribers.fetch_sub(1, Ordering::Relaxed);
            return Err(SubscribeError::TooManySubscribers(max));
        }
        let id = inner.next_sub_id.fetch_add(1, Ordering::Relaxed);
        let shard = (id % inner.shards.len() as u64) as usize;
        let mut cache = MatchCache::new(256);

        let log = inner.lock_log();
        let point = log.history.resume_point(&request.resume, log.next_seq);
        let sub = Arc::new(Subscriber::new(
            id,
            shard,
            request.selectors.into(),
            request.claims.map(Into::into),
            log.next_seq,
            request.deadline,
            inner.clock.load(Ordering::Relaxed),
        ));
        // Under the lock only the snapshot (reference counts) and the
        // registration; matching the history against the selectors happens
        // after it, so a heavy replay never holds up publishers.
        let snapshot: Vec<Arc<Published>> = log.history.since(point.from_seq).cloned().collect();
        inner.shards[shard].write().insert(&sub);
        drop(log);
        let replay: VecDeque<Bytes> = snapshot
            .iter()
            .filter(|p| cache.visible(&sub, &p.update))
            .map(|p| p.frame.clone())
            .collect();

        Ok(Subscription {
            sub,
            replay,
            response_id: point.response_id,
            hub: Arc::downgrade(inner) as Weak<dyn Registry>,
            clock: inner.clock.clone(),
            attached: Default::default(),
        })
    }

    /// Applies new limits to running subscribers and history without dropping anyone.
    pub fn set_limits(&self, limits: Limits) {
        let history = limits.history;
        self.inner.limits.store(Arc::new(limits));
        self.inner
            .lock_log()
            .history
            .set_limits(history, Instant::now());
    }

    pub fn limits(&self) -> Limits {
        (**self.inner.limits.load()).clone()
    }

    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// (entries, bytes) currently retained.
    pub fn history_size(&self) -> (usize, usize) {
        let log = self.inner.lock_log();
        (log.history.len(), log.history.bytes())
    }

    /// The id of the newest update in the history (`None`: none retained), a
    /// cursor for "everything after now" that `Last-Event-ID` resolves.
    pub fn last_event_id(&self) -> Option<Arc<str>> {
        self.inner.lock_log().history.last_id()
    }

    /// The seq the next update will get (so `last_seq() == next - 1`).
    pub fn next_seq(&self) -> u64 {
        self.inner.lock_log().next_seq
    }

    /// Ends every open stream gracefully, spread over at most `window` so that
    /// its clients do not all reconnect (elsewhere) at the same instant: each
    /// stream gets what is already queued, then an SSE `retry` field between
    /// `retry` and twice that (jittered per subscriber), then its end. The
    /// pace is [`DRAIN_RATE`] streams per second, or faster when `window` is
    /// too short for that, so a hub with few subscribers drains at once.
    /// Returns when the last stream has been told; publishing still works
    /// meanwhile (streams not yet ended keep receiving). Returns how many.
    pub async fn drain(&self, window: Duration, retry: Duration) -> usize {
        let subs: Vec<Arc<Subscriber>> = self
            .inner
            .shards
            .iter()
            .flat_map(|shard| shard.read().all.values().cloned().collect::<Vec<_>>())
            .collect();
        let spread = Duration::from_secs_f64(subs.len() as f64 / DRAIN_RATE).min(window);
        let start = tokio::time::Instant::now();
        let mut ended = 0;
        for (i, sub) in subs.iter().enumerate() {
            let at = start + spread.mul_f64(i as f64 / subs.len() as f64);
            if at > tokio::time::Instant::now() + DRAIN_STEP {
                tokio::time::sleep_until(at).await;
            }
            if sub.finish(retry_frame(sub.id, retry), CloseReason::Shutdown) {
                self.inner.metrics.closed(CloseReason::Shutdown);
                ended += 1;
            }
        }
        ended
    }

    /// Ends every stream cleanly (clients reconnect elsewhere), refuses new work and
    /// stops the background tasks. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        for shard in inner.shards.iter() {
            for sub in shard.read().all.values() {
                if sub.close(CloseReason::Shutdown) {
                    inner.metrics.closed(CloseReason::Shutdown);
                }
            }
        }
        inner.tracker.close();
        inner.tracker.wait().await;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

/// Streams [`Hub::drain`] ends per second: enough to empty a full node in
/// seconds, few enough that the nodes taking the reconnects are not stormed.
pub const DRAIN_RATE: f64 = 2_000.0;
/// Streams due within this much of now are ended without sleeping first.
const DRAIN_STEP: Duration = Duration::from_millis(5);

/// `retry: N` (ms) in `[retry, 2 * retry)`, jittered by subscriber id so the
/// clients of one drained node come back at different times.
fn retry_frame(id: u64, retry: Duration) -> Bytes {
    let base = retry.as_millis() as u64;
    let jitter = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % base.max(1);
    Bytes::from(format!("retry: {}\n\n", base + jitter))
}

impl Inner {
    fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Advances the coarse clock; returns it in ms since the hub started.
    pub(crate) fn tick(&self, now: Instant) -> u64 {
        let ms = now.duration_since(self.epoch).as_millis() as u64;
        self.clock.store(ms, Ordering::Relaxed);
        ms
    }

    pub(crate) fn trim_history(&self, now: Instant) {
        let mut log = self.lock_log();
        let before = log.history.len();
        log.history.trim(now);
        if log.history.len() != before {
            let (entries, bytes) = (log.history.len(), log.history.bytes());
            drop(log);
            self.metrics.history(entries, bytes);
        }
    }

    /// One sweep (see `sweeper`): the clock, history by age, then every stream.
    fn sweep(&self, heartbeat: &Bytes, now: Instant) {
        let now_ms = self.tick(now);
        self.trim_history(now);
        let heartbeat_ms = self.limits.load().heartbeat.map(|h| h.as_millis() as u64);
        sweep_streams(
            &self.shards,
            &*self.metrics,
            heartbeat,
            heartbeat_ms,
            now,
            now_ms,
        );
    }
}

impl Registry for Inner {
    fn unregister(&self, sub: &Subscriber) {
        self.shards[sub.shard].write().remove(sub);
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
        if sub.close(CloseReason::Gone) {
            self.metrics.closed(CloseReason::Gone);
        }
    }
}

/// The sweeper task: one timer for the whole hub; ends with the hub or on cancel.
async fn run_sweeper(hub: Weak<Inner>, cancel: CancellationToken) {
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
        inner.sweep(&heartbeat, Instant::now());
    }
}
