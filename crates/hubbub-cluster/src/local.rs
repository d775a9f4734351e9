//! This node's own origin: the clock that stamps, the next sequence number and
//! the bounded log that every outbound relay link streams from (each link keeps
//! its own cursor, so a slow or reconnecting peer costs no queue of its own).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hubbub_proto::Update;
use tokio::sync::watch;

use crate::stamp::{Hlc, Origin, OriginClock, Stamp, Stamped};

#[derive(Debug)]
struct Inner {
    /// Stamps, and promises (with a lease when quiet).
    clock: OriginClock,
    next_seq: u64,
    log: VecDeque<Arc<Stamped>>,
    capacity: usize,
    /// Set when the node leaves: nothing more is stamped, so our watermark is
    /// "everything": peers stop waiting for us as soon as they read it.
    sealed: bool,
}

impl Inner {
    /// Our promise: nothing we stamp from now on is at or below it (with a
    /// lease when quiet: [`OriginClock::watermark`]).
    fn watermark(&mut self) -> u64 {
        if self.sealed {
            return u64::MAX;
        }
        self.clock.watermark(Hlc::wall())
    }
}

/// Shared by the submit path (stamping), the engine (clock observations) and
/// the link senders (reading by seq).
#[derive(Debug, Clone)]
pub struct LocalOrigin {
    pub origin: Origin,
    inner: Arc<Mutex<Inner>>,
    last_seq_tx: Arc<watch::Sender<u64>>,
    /// Highest stamp seen on a peer's update: peers that hold it wait for our
    /// watermark to pass it, so our links send one soon after it changes.
    observed_tx: Arc<watch::Sender<u64>>,
    /// The highest seq of ours that some peer has confirmed it holds
    /// (`Msg::Ack`): what replicated publish acknowledgements wait for.
    replicated_tx: Arc<watch::Sender<u64>>,
}

/// What a link sender reads in one go: updates from its cursor on, and a
/// watermark that is valid because it was taken under the same lock.
#[derive(Debug)]
pub struct Batch {
    pub updates: Vec<Arc<Stamped>>,
    /// Set when the cursor fell behind the retained log: the first seq still held.
    pub gap_to: Option<u64>,
    pub watermark: u64,
}

impl LocalOrigin {
    pub fn new(origin: Origin, capacity: usize) -> Self {
        let inner = Inner {
            clock: OriginClock::default(),
            next_seq: 1,
            log: VecDeque::new(),
            capacity: capacity.max(1),
            sealed: false,
        };
        Self {
            origin,
            inner: Arc::new(Mutex::new(inner)),
            last_seq_tx: Arc::new(watch::channel(0).0),
            observed_tx: Arc::new(watch::channel(0).0),
            replicated_tx: Arc::new(watch::channel(0).0),
        }
    }

    /// Leases while quiet: once we have stamped nothing for a second, our
    /// watermarks promise `ahead` past the wall clock (see `OriginClock::watermark`).
    /// With `ahead` longer than the links' watermark pacing, a cluster where
    /// one node publishes releases its updates everywhere without waiting for
    /// the quiet nodes' next watermarks, at no extra relay traffic.
    pub fn lease_when_quiet(self, ahead: std::time::Duration) -> Self {
        self.lock().clock = OriginClock::leasing(ahead);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stamps an update with the next seq and a fresh clock value, logs it, and
    /// hands it over (to the engine) while still holding the lock: a watermark
    /// read afterwards then never covers a stamp the engine could still miss.
    /// `None` once [`seal`](Self::seal)ed.
    pub fn stamp(
        &self,
        update: Update,
        hand_over: impl FnOnce(Arc<Stamped>),
    ) -> Option<Arc<Stamped>> {
        let mut inner = self.lock();
        if inner.sealed {
            return None;
        }
        let hlc = inner.clock.stamp(Hlc::wall());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let stamped = Arc::new(Stamped {
            stamp: Stamp {
                hlc,
                origin: self.origin.clone(),
                seq,
            },
            update,
        });
        inner.log.push_back(stamped.clone());
        if inner.log.len() > inner.capacity {
            inner.log.pop_front();
        }
        hand_over(stamped.clone());
        drop(inner);
        self.last_seq_tx.send_replace(seq);
        Some(stamped)
    }

    /// Stamps nothing more from now on, and wakes every link so that it sends
    /// the rest of the log and then the final watermark (`u64::MAX`).
    pub fn seal(&self) {
        self.lock().sealed = true;
        self.last_seq_tx.send_modify(|_| {});
    }

    pub fn observe(&self, remote_hlc: u64) {
        self.lock().clock.observe(remote_hlc);
        self.observed_tx.send_if_modified(|seen| {
            let newer = remote_hlc > *seen;
            if newer {
                *seen = remote_hlc;
            }
            newer
        });
    }

    /// A peer confirmed it holds our updates up to `hwm`.
    pub fn acked(&self, hwm: u64) {
        self.replicated_tx.send_if_modified(|held| {
            let newer = hwm > *held;
            if newer {
                *held = hwm;
            }
            newer
        });
    }

    /// See `replicated_tx`.
    pub fn replicated(&self) -> watch::Receiver<u64> {
        self.replicated_tx.subscribe()
    }

    /// Changes when a peer's update carries a newer stamp than any before
    /// (see `observed_tx`).
    pub fn observed(&self) -> watch::Receiver<u64> {
        self.observed_tx.subscribe()
    }

    /// The stamp below which we will stamp nothing more (`u64::MAX` once sealed).
    pub fn watermark(&self) -> u64 {
        self.lock().watermark()
    }

    /// The clock now: at least the wall clock and every stamp seen (unlike
    /// [`watermark`](Self::watermark), also after sealing).
    pub fn now(&self) -> u64 {
        self.lock().clock.now(Hlc::wall())
    }

    /// The seq of the newest update stamped here (0 before the first).
    pub fn newest(&self) -> u64 {
        *self.last_seq_tx.borrow()
    }

    pub fn last_seq(&self) -> watch::Receiver<u64> {
        self.last_seq_tx.subscribe()
    }

    /// Up to `max` updates from `cursor`, and the watermark (only meaningful when
    /// the batch reaches the end of the log).
    pub fn read_from(&self, cursor: u64, max: usize) -> Batch {
        let mut inner = self.lock();
        let first = inner.log.front().map_or(inner.next_seq, |u| u.stamp.seq);
        let gap_to = (cursor < first).then_some(first);
        let start = cursor.max(first);
        let updates: Vec<_> = inner
            .log
            .iter()
            .skip((start - first) as usize)
            .take(max)
            .cloned()
            .collect();
        let caught_up = updates.last().map_or(start, |u| u.stamp.seq + 1) >= inner.next_seq;
        let watermark = if caught_up { inner.watermark() } else { 0 };
        Batch {
            updates,
            gap_to,
            watermark,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> Update {
        Update {
            id: id.into(),
            topics: vec!["t".into()],
            data: String::new(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    #[test]
    fn stamps_are_contiguous_and_reads_resume_anywhere() {
        let local = LocalOrigin::new(Origin::new("n", 1), 3);
        let stamps: Vec<_> = (0..5)
            .map(|i| local.stamp(update(&i.to_string()), drop).unwrap())
            .collect();
        assert!(
            stamps
                .windows(2)
                .all(|w| w[0].stamp.hlc < w[1].stamp.hlc && w[0].stamp.seq + 1 == w[1].stamp.seq)
        );
        let b = local.read_from(1, 10);
        assert_eq!(b.gap_to, Some(3));
        assert_eq!(
            b.updates.iter().map(|u| u.stamp.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(b.watermark >= stamps[4].stamp.hlc);
        let partial = local.read_from(4, 1);
        assert_eq!(
            (partial.updates.len(), partial.watermark),
            (1, 0),
            "not caught up: no watermark"
        );
        assert!(local.read_from(6, 10).updates.is_empty());
    }

    #[test]
    fn a_quiet_origin_promises_ahead_and_keeps_the_promise() {
        let ahead = std::time::Duration::from_millis(50);
        let local = LocalOrigin::new(Origin::new("n", 1), 8).lease_when_quiet(ahead);
        let wall = Hlc::wall();
        let promised = local.watermark();
        assert!(
            promised >= wall + (49 << 16),
            "quiet from the start: the watermark leads the wall clock"
        );
        // The next stamp lies past the promise, so the promise held...
        let first = local.stamp(update("a"), drop).unwrap();
        assert!(first.stamp.hlc > promised);
        // ...and a node that stamps is no longer quiet: it promises no more
        // than its clock (still ahead of the wall until the wall gets there).
        assert_eq!(
            local.watermark(),
            first.stamp.hlc,
            "no new lease while publishing"
        );

        let plain = LocalOrigin::new(Origin::new("p", 1), 8);
        assert!(
            plain.watermark() < Hlc::wall() + (10 << 16),
            "no lease unless asked"
        );
    }

    #[test]
    fn a_sealed_origin_stamps_nothing_and_promises_everything() {
        let local = LocalOrigin::new(Origin::new("n", 1), 8);
        local.stamp(update("a"), drop).unwrap();
        let mut woken = local.last_seq();
        woken.borrow_and_update();
        local.seal();
        assert!(
            woken.has_changed().unwrap(),
            "links are woken to send the end"
        );
        assert!(local.stamp(update("b"), drop).is_none());
        assert_eq!(local.newest(), 1);
        assert_eq!(local.watermark(), u64::MAX);
        assert!(local.now() < u64::MAX, "the clock itself goes on");
        let end = local.read_from(1, 10);
        assert_eq!((end.updates.len(), end.watermark), (1, u64::MAX));
    }
}
