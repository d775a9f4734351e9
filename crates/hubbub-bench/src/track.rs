//! Per-subscriber sequence tracking, across its reconnects: duplicates, reordering
//! and, once the publishers' final counts are known, losses for every
//! (publisher, topic) stream.

/// How far below the highest sequence number a late message is still recognised
/// exactly (as new or duplicate); older ones are assumed new and counted reordered.
const WINDOW: u64 = 64;

/// What one delivery was, for the live counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// New, but arrived after a higher sequence number of the same stream.
    Reordered,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// Lowest sequence number seen (0: nothing seen yet).
    first: u64,
    max: u64,
    /// Bit `i` set: `max - i` was seen.
    bits: u64,
    distinct: u64,
}

/// The streams one subscriber connection sees (it is on a single topic, so there is
/// one stream per publisher).
#[derive(Debug)]
pub struct Tracker {
    streams: Vec<Stream>,
    /// Connected before any publish, so every sequence from 1 on is expected.
    from_start: bool,
}

impl Tracker {
    pub fn new(publishers: usize, from_start: bool) -> Self {
        Self {
            streams: vec![Stream::default(); publishers],
            from_start,
        }
    }

    /// Records `seq` (>= 1) from `publisher`; `None` if the publisher is unknown.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Option<Seen> {
        let s = self.streams.get_mut(publisher as usize)?;
        if seq == 0 {
            return None;
        }
        if s.first == 0 {
            *s = Stream {
                first: seq,
                max: seq,
                bits: 1,
                distinct: 1,
            };
            return Some(Seen::New);
        }
        if seq > s.max {
            let shift = seq - s.max;
            s.bits = if shift >= WINDOW { 0 } else { s.bits << shift };
            s.bits |= 1;
            s.max = seq;
            s.distinct += 1;
            return Some(Seen::New);
        }
        let back = s.max - seq;
        if back < WINDOW {
            let bit = 1u64 << back;
            if s.bits & bit != 0 {
                return Some(Seen::Duplicate);
            }
            s.bits |= bit;
        }
        s.first = s.first.min(seq);
        s.distinct += 1;
        Some(Seen::Reordered)
    }

    /// Messages this subscriber should have had but did not. `published(p)` is the
    /// last sequence publisher `p` got accepted on the subscriber's topic; `None` when
    /// that is unknown (the parent went away), so only holes count.
    pub fn lost(&self, published: Option<&dyn Fn(usize) -> u64>) -> u64 {
        self.streams
            .iter()
            .enumerate()
            .map(|(p, s)| {
                let lo = if self.from_start { 1 } else { s.first };
                let hi = match published {
                    Some(f) => f(p).max(s.max),
                    None => s.max,
                };
                if lo == 0 || hi < lo {
                    return 0;
                }
                (hi - lo + 1).saturating_sub(s.distinct)
            })
            .sum()
    }

    #[cfg(test)]
    fn distinct(&self) -> u64 {
        self.streams.iter().map(|s| s.distinct).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_reordering() {
        let mut t = Tracker::new(2, true);
        assert_eq!(t.record(0, 1), Some(Seen::New));
        assert_eq!(t.record(0, 3), Some(Seen::New));
        assert_eq!(t.record(0, 2), Some(Seen::Reordered));
        assert_eq!(t.record(0, 2), Some(Seen::Duplicate));
        assert_eq!(t.record(0, 3), Some(Seen::Duplicate));
        assert_eq!(t.record(1, 1), Some(Seen::New));
        assert_eq!(t.record(5, 1), None);
        assert_eq!(t.distinct(), 4);
        assert_eq!(t.lost(Some(&|p| [3, 1][p])), 0);
    }

    #[test]
    fn loss_from_start_includes_head_and_tail() {
        let mut t = Tracker::new(1, true);
        for s in [2, 3, 5] {
            t.record(0, s);
        }
        // Missing 1 and 4, and 6..=8 at the tail.
        assert_eq!(t.lost(Some(&|_| 8)), 5);
        // Closed early: only holes inside what was seen (4), and 1 before the first.
        assert_eq!(t.lost(None), 2);
    }

    #[test]
    fn late_joiner_expects_from_first_seen() {
        let mut t = Tracker::new(1, false);
        for s in [10, 12] {
            t.record(0, s);
        }
        assert_eq!(t.lost(None), 1);
        assert_eq!(t.lost(Some(&|_| 13)), 2);
        // A late joiner that saw nothing expects nothing: it cannot know where it began.
        assert_eq!(Tracker::new(1, false).lost(Some(&|_| 9)), 0);
        assert_eq!(Tracker::new(1, true).lost(Some(&|_| 9)), 9);
    }

    #[test]
    fn far_jumps_clear_the_window() {
        let mut t = Tracker::new(1, true);
        t.record(0, 1);
        t.record(0, 1000);
        assert_eq!(
            t.record(0, 1),
            Some(Seen::Reordered),
            "too old to know: assumed new"
        );
        assert_eq!(t.record(0, 999), Some(Seen::Reordered));
        assert_eq!(t.record(0, 999), Some(Seen::Duplicate));
    }
}
