//! The ordering brain of a node, with no I/O: per-origin dedup and gap tracking,
//! the bounded per-origin logs that answer anti-entropy pulls, and the buffer
//! that releases updates in the cluster-wide total order once every peer's
//! watermark has passed them.
//!
//! Guarantee: updates released in order form the same sequence on every node.
//! An update that arrives after later ones were released (a partitioned or
//! dead peer's, repaired after the fact) is still released, once, and counted
//! as `late`. Updates that no peer retains any more are skipped and counted as
//! `lost`: never silently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::stamp::{OrderKey, Origin, Stamped};

#[derive(Debug, Clone, Copy)]
pub struct SequencerLimits {
    /// Updates retained per origin for anti-entropy.
    pub log_entries: usize,
    /// Out-of-order updates held per origin while a gap is repaired.
    pub pending_entries: usize,
}

impl Default for SequencerLimits {
    fn default() -> Self {
        Self {
            log_entries: 10_000,
            pending_entries: 10_000,
        }
    }
}

#[derive(Debug, Default)]
struct OriginState {
    /// Highest contiguous seq accepted.
    hwm: u64,
    pending: BTreeMap<u64, Arc<Stamped>>,
    log: VecDeque<Arc<Stamped>>,
    /// Peers that said they no longer hold `hwm + 1`, with their first retained seq.
    gone_at: HashMap<Arc<str>, u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SequencerStats {
    pub duplicates: u64,
    pub released: u64,
    pub late: u64,
    pub lost: u64,
}

/// What `accept` did with an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    Duplicate,
    /// Ahead of a gap; held until the gap is filled.
    Held,
    /// It (and maybe held successors) became contiguous: `n` updates now ready.
    Ready(usize),
}

#[derive(Debug, Default)]
pub struct Sequencer {
    origins: BTreeMap<Origin, OriginState>,
    /// Departed origins no longer in the vector, with their final seq.
    retired: BTreeMap<Origin, u64>,
    ready: BTreeMap<OrderKey, Arc<Stamped>>,
    frontier: Option<OrderKey>,
    /// While catching up at start-up nothing is released, so the first release
    /// already sees every retained update and sorts them all.
    holding: bool,
    limits: SequencerLimits,
    stats: SequencerStats,
}

impl Sequencer {
    pub fn new(limits: SequencerLimits, holding: bool) -> Self {
        Self {
            limits,
            holding,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> SequencerStats {
        self.stats
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Ends the start-up hold: from now on releases follow watermarks.
    pub fn stop_holding(&mut self) {
        self.holding = false;
    }

    pub fn hwm(&self, origin: &Origin) -> u64 {
        self.origins
            .get(origin)
            .map_or_else(|| self.retired.get(origin).copied().unwrap_or(0), |s| s.hwm)
    }

    /// Stamp of the newest retained update of `origin`.
    pub fn last_hlc(&self, origin: &Origin) -> Option<u64> {
        self.origins.get(origin)?.log.back().map(|u| u.stamp.hlc)
    }

    /// Drops `origin` from the vector and its log, keeping its final seq so
    /// that copies still travelling are recognised as duplicates.
    pub fn retire(&mut self, origin: &Origin) {
        if let Some(state) = self.origins.remove(origin) {
            self.retired.insert(origin.clone(), state.hwm);
        }
    }

    /// The version vector: highest contiguous seq per origin.
    pub fn vector(&self) -> BTreeMap<Origin, u64> {
        self.origins
            .iter()
            .map(|(o, s)| (o.clone(), s.hwm))
            .collect()
    }

    /// Updates accepted but not yet released.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    pub fn accept(&mut self, update: Arc<Stamped>) -> Accepted {
        let seq = update.stamp.seq;
        let limit = self.limits.pending_entries;
        if self
            .retired
            .get(&update.stamp.origin)
            .is_some_and(|h| seq <= *h)
        {
            self.stats.duplicates += 1;
            return Accepted::Duplicate;
        }
        let state = self.origins.entry(update.stamp.origin.clone()).or_default();
        if seq <= state.hwm || state.pending.contains_key(&seq) {
            self.stats.duplicates += 1;
            return Accepted::Duplicate;
        }
        if seq > state.hwm + 1 {
            // Past the limit the update is dropped: anti-entropy will pull it again.
            if state.pending.len() < limit {
                state.pending.insert(seq, update);
            }
            return Accepted::Held;
        }
        let origin = update.stamp.origin.clone();
        self.admit(update);
        Accepted::Ready(1 + self.drain_pending(&origin))
    }

    fn admit(&mut self, update: Arc<Stamped>) {
        let state = self.origins.entry(update.stamp.origin.clone()).or_default();
        state.hwm = update.stamp.seq;
        state.gone_at.clear();
        state.log.push_back(update.clone());
        while state.log.len() > self.limits.log_entries {
            state.log.pop_front();
        }
        self.ready.insert(update.stamp.key(), update);
    }

    fn drain_pending(&mut self, origin: &Origin) -> usize {
        let mut n = 0;
        loop {
            let Some(state) = self.origins.get_mut(origin) else {
                return n;
            };
            let next = state.hwm + 1;
            let Some(update) = state.pending.remove(&next) else {
                return n;
            };
            self.admit(update);
            n += 1;
        }
    }

    /// Releases, in order, every ready update at or below `bound` (the lowest
    /// watermark of the peers we wait for), plus any late ones at once.
    pub fn release(&mut self, bound: u64) -> Vec<Arc<Stamped>> {
        let mut out = Vec::new();
        if self.holding {
            return out;
        }
        while let Some(entry) = self.ready.first_entry() {
            let late = self.frontier.as_ref().is_some_and(|f| entry.key() < f);
            if !late && entry.key().hlc > bound {
                break;
            }
            let (key, update) = entry.remove_entry();
            if late {
                self.stats.late += 1;
            } else {
                self.frontier = Some(key);
            }
            self.stats.released += 1;
            out.push(update);
        }
        out
    }

    /// Retained updates of `origin` in `from..=to` (at most `max`), and the first
    /// seq still retained (so the asker can tell a gap).
    pub fn range(
        &self,
        origin: &Origin,
        from: u64,
        to: u64,
        max: usize,
    ) -> (Vec<Arc<Stamped>>, u64) {
        let Some(state) = self.origins.get(origin) else {
            return (Vec::new(), from);
        };
        let first = state.log.front().map_or(state.hwm + 1, |u| u.stamp.seq);
        let skip = from.saturating_sub(first) as usize;
        let items = state
            .log
            .iter()
            .skip(skip)
            .take_while(|u| u.stamp.seq <= to)
            .take(max)
            .cloned()
            .collect();
        (items, first)
    }

    /// A peer no longer holds `origin` from our `hwm + 1` (its log starts at
    /// `first`). When every candidate source said so, the gap is given up:
    /// counted as lost (or, while holding at start-up, taken as the baseline).
    /// Returns how many updates were skipped.
    pub fn report_gone(
        &mut self,
        origin: &Origin,
        peer: Arc<str>,
        first: u64,
        sources: &[Arc<str>],
    ) -> u64 {
        let state = self.origins.entry(origin.clone()).or_default();
        if first <= state.hwm + 1 {
            return 0;
        }
        state.gone_at.insert(peer, first);
        if !sources.iter().all(|s| state.gone_at.contains_key(s)) {
            return 0;
        }
        let resume = state.gone_at.values().copied().min().unwrap_or(first);
        let skipped = resume - state.hwm - 1;
        state.hwm = resume - 1;
        state.gone_at.clear();
        if !self.holding {
            self.stats.lost += skipped;
        }
        self.drain_pending(origin);
        skipped
    }

    /// Whether `peer` said it no longer retains `origin` from our `hwm + 1`
    /// (asking it again is pointless until another peer settles the gap).
    pub fn said_gone(&self, origin: &Origin, peer: &str) -> bool {
        self.origins
            .get(origin)
            .is_some_and(|s| s.gone_at.contains_key(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(node: &str, seq: u64, hlc: u64) -> Arc<Stamped> {
        crate::stamp::stamped(node, seq, hlc)
    }

    fn ids(v: &[Arc<Stamped>]) -> Vec<String> {
        v.iter().map(|u| u.update.id.clone()).collect()
    }

    #[test]
    fn releases_in_hlc_order_up_to_the_bound() {
        let mut s = Sequencer::new(SequencerLimits::default(), false);
        assert_eq!(s.accept(up("b", 1, 20)), Accepted::Ready(1));
        assert_eq!(s.accept(up("a", 1, 10)), Accepted::Ready(1));
        assert_eq!(s.accept(up("a", 2, 30)), Accepted::Ready(1));
        assert_eq!(ids(&s.release(25)), ["a-1", "b-1"]);
        assert_eq!(ids(&s.release(25)), Vec::<String>::new());
        assert_eq!(ids(&s.release(30)), ["a-2"]);
    }

    #[test]
    fn holds_out_of_order_and_drops_duplicates() {
        let mut s = Sequencer::new(SequencerLimits::default(), false);
        assert_eq!(s.accept(up("a", 2, 20)), Accepted::Held);
        assert_eq!(s.accept(up("a", 2, 20)), Accepted::Duplicate);
        assert_eq!(s.accept(up("a", 1, 10)), Accepted::Ready(2));
        assert_eq!(s.accept(up("a", 1, 10)), Accepted::Duplicate);
        assert_eq!(s.hwm(&Origin::new("a", 1)), 2);
        assert_eq!(ids(&s.release(u64::MAX)), ["a-1", "a-2"]);
        assert_eq!(s.stats().duplicates, 2);
    }

    #[test]
    fn late_updates_are_released_once_and_counted() {
        let mut s = Sequencer::new(SequencerLimits::default(), false);
        s.accept(up("a", 1, 50));
        assert_eq!(ids(&s.release(100)), ["a-1"]);
        s.accept(up("b", 1, 10));
        assert_eq!(ids(&s.release(0)), ["b-1"]);
        assert_eq!(s.stats().late, 1);
    }

    #[test]
    fn holding_sorts_everything_before_the_first_release() {
        let mut s = Sequencer::new(SequencerLimits::default(), true);
        s.accept(up("a", 1, 50));
        assert!(s.release(u64::MAX).is_empty());
        s.accept(up("b", 1, 10));
        s.stop_holding();
        assert_eq!(ids(&s.release(u64::MAX)), ["b-1", "a-1"]);
        assert_eq!(s.stats().late, 0);
    }

    #[test]
    fn ranges_and_gaps() {
        let limits = SequencerLimits {
            log_entries: 3,
            pending_entries: 10,
        };
        let mut s = Sequencer::new(limits, false);
        for seq in 1..=5 {
            s.accept(up("a", seq, seq * 10));
        }
        let a = Origin::new("a", 1);
        let (items, first) = s.range(&a, 1, 5, 100);
        assert_eq!(
            (ids(&items), first),
            (vec!["a-3".into(), "a-4".into(), "a-5".into()], 3)
        );
        let (items, _) = s.range(&a, 4, 4, 100);
        assert_eq!(ids(&items), ["a-4"]);

        // Another node is at 1 and both sources say they start at 3 or 4.
        let mut t = Sequencer::new(limits, false);
        t.accept(up("a", 1, 10));
        t.accept(up("a", 5, 50));
        let sources: Vec<Arc<str>> = vec!["p".into(), "q".into()];
        assert_eq!(
            t.report_gone(&a, "p".into(), 4, &sources),
            0,
            "q may still have it"
        );
        assert_eq!(t.report_gone(&a, "q".into(), 3, &sources), 1);
        assert_eq!(t.hwm(&a), 2);
        t.accept(up("a", 3, 30));
        t.accept(up("a", 4, 40));
        assert_eq!(t.hwm(&a), 5, "held update drained after the gap filled");
        assert_eq!(t.stats().lost, 1);
    }

    #[test]
    fn retired_origins_leave_the_vector_but_stay_deduplicated() {
        let mut s = Sequencer::new(SequencerLimits::default(), false);
        let a = Origin::new("a", 1);
        s.accept(up("a", 1, 10));
        s.accept(up("a", 2, 20));
        assert_eq!(s.last_hlc(&a), Some(20));
        s.retire(&a);
        assert!(s.vector().is_empty());
        assert_eq!(s.hwm(&a), 2);
        assert_eq!(s.accept(up("a", 2, 20)), Accepted::Duplicate);
    }

    #[test]
    fn peers_that_said_gone_are_remembered_until_progress() {
        let mut s = Sequencer::new(SequencerLimits::default(), false);
        let a = Origin::new("a", 1);
        s.accept(up("a", 5, 50));
        let sources: Vec<Arc<str>> = vec!["p".into(), "q".into()];
        assert_eq!(s.report_gone(&a, "p".into(), 3, &sources), 0);
        assert!(s.said_gone(&a, "p"), "ask q next, not p again");
        assert!(!s.said_gone(&a, "q"));
        s.accept(up("a", 1, 10));
        assert!(!s.said_gone(&a, "p"), "progress starts afresh");
    }
}
