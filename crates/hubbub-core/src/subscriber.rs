//! One subscriber: its selectors, its bounded queue of shared frames, and the
//! consumer-side [`Subscription`] that drains it.
//!
//! Slow-consumer policy: a subscriber whose live queue is full is closed with
//! [`CloseReason::SlowConsumer`]; its stream ends and the client reconnects with
//! `Last-Event-ID`, so nothing is lost while the history still holds the gap.
//! Publishers and other subscribers never wait for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use hubbub_proto::Selector;
use tokio::sync::Notify;

/// Why a subscription ended. Each reason is counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The live queue overflowed: the client reads slower than updates arrive.
    SlowConsumer,
    /// The maximum connection lifetime passed (clients reconnect and resume).
    Lifetime,
    /// The subscriber's token expired.
    TokenExpired,
    /// The hub is shutting down.
    Shutdown,
    /// The client went away (the consumer was dropped).
    Gone,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        Self::SlowConsumer,
        Self::Lifetime,
        Self::TokenExpired,
        Self::Shutdown,
        Self::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::Lifetime => "lifetime",
            Self::TokenExpired => "token_expired",
            Self::Shutdown => "shutdown",
            Self::Gone => "gone",
        }
    }
}

/// What [`Subscription::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Bytes to write as they are (an event frame or a heartbeat comment).
    Frame(Bytes),
    /// The stream is over; write nothing more.
    Closed(CloseReason),
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    closed: Option<CloseReason>,
    /// Set by [`Subscriber::finish`]: nothing more is queued, and the stream
    /// ends for this reason once the frames already queued are written.
    ending: Option<CloseReason>,
}

impl Queue {
    fn is_open(&self) -> bool {
        self.closed.is_none() && self.ending.is_none()
    }
}

/// The part of a subscriber that the dispatcher and the sweeper touch.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub id: u64,
    pub shard: usize,
    pub selectors: Box<[Selector]>,
    /// `None`: public updates only. `Some`: the `mercure.subscribe` claim.
    pub claims: Option<Box<[Selector]>>,
    /// Updates before this seq came (or would have come) from history replay.
    pub start_seq: u64,
    /// Last seq queued, so an update matching several selectors is queued once.
    pub last_seq: AtomicU64,
    /// Hub clock (ms) of the last frame handed to the consumer; drives heartbeats.
    pub last_output_ms: AtomicU64,
    pub deadline: Option<(Instant, CloseReason)>,
    queue: Mutex<Queue>,
    notify: Notify,
}

/// Result of offering a frame to a subscriber's queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// The queue was full: the subscriber has just been closed as slow.
    Overflow,
    AlreadyClosed,
}

impl Subscriber {
    pub fn new(
        id: u64,
        shard: usize,
        selectors: Box<[Selector]>,
        claims: Option<Box<[Selector]>>,
        start_seq: u64,
        deadline: Option<(Instant, CloseReason)>,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            shard,
            selectors,
            claims,
            start_seq,
            last_seq: AtomicU64::new(0),
            last_output_ms: AtomicU64::new(now_ms),
            deadline,
            queue: Mutex::default(),
            notify: Notify::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a shared frame without blocking; `capacity` bounds the live queue.
    pub fn offer(&self, frame: &Bytes, capacity: usize) -> Offer {
        let mut q = self.queue();
        if !q.is_open() {
            return Offer::AlreadyClosed;
        }
        if q.frames.len() >= capacity {
            q.closed = Some(CloseReason::SlowConsumer);
            q.frames.clear();
            drop(q);
            self.notify.notify_one();
            return Offer::Overflow;
        }
        q.frames.push_back(frame.clone());
        drop(q);
        self.notify.notify_one();
        Offer::Queued
    }

    /// Queues a heartbeat only when nothing is waiting (a queued frame will reveal
    /// a dead connection just as well).
    pub fn offer_heartbeat(&self, frame: &Bytes) {
        let mut q = self.queue();
        if q.is_open() && q.frames.is_empty() {
            q.frames.push_back(frame.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Ends the stream. Pending frames are dropped: the client resumes from the
    /// last id it received, so they are not owed. Returns false if already closed.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut q = self.queue();
        if !q.is_open() {
            return false;
        }
        q.closed = Some(reason);
        q.frames.clear();
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Ends the stream gracefully: `last` (e.g. an SSE `retry` field) is
    /// queued after the frames already waiting, nothing else is accepted, and
    /// the consumer sees the end once it has taken them all. A later
    /// [`close`](Self::close) does not drop them. Returns false if already over.
    pub fn finish(&self, last: Bytes, reason: CloseReason) -> bool {
        let mut q = self.queue();
        if !q.is_open() {
            return false;
        }
        q.frames.push_back(last);
        q.ending = Some(reason);
        drop(q);
        self.notify.notify_one();
        true
    }

    pub fn depth(&self) -> usize {
        self.queue().frames.len()
    }

    /// Frames waiting, or `None` once the stream is closed or ending.
    pub fn open_depth(&self) -> Option<usize> {
        let q = self.queue();
        q.is_open().then_some(q.frames.len())
    }

    /// Moves queued frames into `out` under one lock; how many, or why closed.
    fn pop_into(&self, out: &mut [Bytes]) -> Result<usize, CloseReason> {
        let mut q = self.queue();
        if let Some(reason) = q.closed {
            return Err(reason);
        }
        let n = out.len().min(q.frames.len());
        if q.frames.is_empty()
            && let Some(reason) = q.ending
        {
            return Err(reason);
        }
        for (slot, frame) in out.iter_mut().zip(q.frames.drain(..n)) {
            *slot = frame;
        }
        Ok(n)
    }

    /// True when the update at `seq` may go to this subscriber at all: it was not
    /// already part of the replay, and it was not queued already for another topic.
    pub fn first_sight(&self, seq: u64) -> bool {
        seq >= self.start_seq && self.last_seq.swap(seq, Ordering::Relaxed) != seq
    }
}

/// Whoever registered a subscriber and must forget it when its stream is dropped
/// (the hub). A trait so this module needs nothing from the hub's internals.
pub(crate) trait Registry: Send + Sync + std::fmt::Debug {
    fn unregister(&self, sub: &Subscriber);
}

/// The consumer side of a subscriber: first the history replay, then live frames.
/// Dropping it unregisters the subscriber.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) sub: Arc<Subscriber>,
    pub(crate) replay: VecDeque<Bytes>,
    pub(crate) response_id: Option<String>,
    pub(crate) hub: Weak<dyn Registry>,
    /// The hub's coarse clock (ms), advanced by the sweeper; cheaper than a syscall.
    pub(crate) clock: Arc<AtomicU64>,
    /// Whatever the caller tied to this stream's life (see [`Subscription::attach`]).
    pub(crate) attached: Attached,
}

/// Values dropped with a [`Subscription`], after it has unregistered.
#[derive(Default)]
pub(crate) struct Attached(Vec<Box<dyn Send + Sync>>);

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attached({})", self.0.len())
    }
}

impl Subscription {
    /// The `Last-Event-ID` to send in the response headers, if the request resumed.
    pub fn response_last_event_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// Ties `value` to this stream: it is dropped when the stream ends, however
    /// it ends (client gone, slow consumer, lifetime, shutdown), right after
    /// the subscriber has left the hub. The core knows nothing of what it is
    /// (the server hangs the end of a tracked subscription on it).
    pub fn attach(&mut self, value: impl Send + Sync + 'static) {
        self.attached.0.push(Box::new(value));
    }

    /// Number of history entries queued for replay (before live ones).
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }

    /// A frame that is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Next> {
        let mut one = [Bytes::new()];
        match self.try_next_into(&mut one) {
            Ok(0) => None,
            Ok(_) => Some(Next::Frame(std::mem::take(&mut one[0]))),
            Err(reason) => Some(Next::Closed(reason)),
        }
    }

    /// Fills `out` with the frames that are ready now (replay first, then live
    /// ones, taken under one lock), so a writer can send them in one vectored
    /// write. Returns how many; `Err` once the stream is over and nothing is left.
    pub fn try_next_into(&mut self, out: &mut [Bytes]) -> Result<usize, CloseReason> {
        let mut n = 0;
        while n < out.len() {
            let Some(frame) = self.replay.pop_front() else {
                break;
            };
            out[n] = frame;
            n += 1;
        }
        match self.sub.pop_into(&mut out[n..]) {
            Ok(live) => n += live,
            Err(reason) if n == 0 => return Err(reason),
            // Report the replayed frames now and the end on the next call.
            Err(_) => {}
        }
        if n > 0 {
            self.sub
                .last_output_ms
                .store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Waits for the next frame or for the end of the stream. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.sub.notify.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unregister(&self.sub);
        }
    }
}
