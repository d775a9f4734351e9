//! The bounded history: the hub-wide sequence of recent updates, indexed by id so a
//! `Last-Event-ID` resume finds its place in O(1), trimmed by count, bytes and age.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::published::Published;

/// How much history is kept. Every bound applies; the oldest entries go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_entries: usize,
    /// Sum of encoded frame sizes.
    pub max_bytes: usize,
    /// `None` keeps entries regardless of age.
    pub max_age: Option<Duration>,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            max_age: Some(Duration::from_secs(3600)),
        }
    }
}

/// Where a subscriber wants to start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// Live updates only; no `Last-Event-ID` header in the response.
    #[default]
    Live,
    /// Everything retained.
    Earliest,
    /// Everything after the update with this id.
    After(String),
}

/// What a resume request found: the entries to replay (already filtered by the
/// caller) start at `from_seq`; `response_id` is the `Last-Event-ID` to answer with.
#[derive(Debug)]
pub(crate) struct ResumePoint {
    pub from_seq: u64,
    pub response_id: Option<String>,
}

/// The seqs one id was used by, oldest first: one, unless a publisher reused
/// the id (then a short queue, popped as history drops them; O(1) either way,
/// under the log lock).
#[derive(Debug)]
enum Occurrences {
    One(u64),
    Many(VecDeque<u64>),
}

impl Occurrences {
    fn first(&self) -> u64 {
        match self {
            Self::One(seq) => *seq,
            Self::Many(seqs) => seqs.front().copied().unwrap_or(u64::MAX),
        }
    }

    fn push(&mut self, seq: u64) {
        match self {
            Self::One(first) => *self = Self::Many(VecDeque::from([*first, seq])),
            Self::Many(seqs) => seqs.push_back(seq),
        }
    }

    /// Drops the first occurrence; true when none is left.
    fn pop_first(&mut self) -> bool {
        match self {
            Self::One(_) => true,
            Self::Many(seqs) => {
                seqs.pop_front();
                seqs.is_empty()
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct History {
    entries: VecDeque<Arc<Published>>,
    /// The retained seqs of each id, oldest first. Ids should be unique, but
    /// a publisher may reuse one; draft-08 then resolves a cursor to its
    /// earliest occurrence still held.
    by_id: HashMap<Arc<str>, Occurrences>,
    bytes: usize,
    limits: HistoryLimits,
}

impl History {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            entries: VecDeque::new(),
            by_id: HashMap::new(),
            bytes: 0,
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn last_id(&self) -> Option<Arc<str>> {
        self.entries.back().map(|e| e.id.clone())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn set_limits(&mut self, limits: HistoryLimits, now: Instant) {
        self.limits = limits;
        self.trim(now);
    }

    pub fn push(&mut self, entry: Arc<Published>, now: Instant) {
        self.bytes += entry.frame.len();
        self.by_id
            .entry(entry.id.clone())
            .and_modify(|o| o.push(entry.seq))
            .or_insert(Occurrences::One(entry.seq));
        self.entries.push_back(entry);
        self.trim(now);
    }

    /// Drops entries over any bound. Called on push and by the sweeper, so old
    /// entries leave even when nothing is published.
    pub fn trim(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let too_old = self
                .limits
                .max_age
                .is_some_and(|age| now.duration_since(front.at) > age);
            let over =
                self.entries.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes;
            if !(too_old || over) {
                break;
            }
            if let Some(old) = self.entries.pop_front() {
                self.forget(&old);
            }
        }
    }

    fn forget(&mut self, old: &Published) {
        self.bytes -= old.frame.len();
        // Entries leave oldest first, so `old` is its id's first occurrence.
        if let Some(o) = self.by_id.get_mut(&old.id)
            && o.first() == old.seq
            && o.pop_first()
        {
            self.by_id.remove(&old.id);
        }
    }

    /// Resolves a resume request against what is retained. An unknown id replays
    /// nothing and answers `earliest`, telling the client its cursor is gone.
    pub fn resume_point(&self, resume: &Resume, next_seq: u64) -> ResumePoint {
        let first_seq = self.entries.front().map_or(next_seq, |e| e.seq);
        match resume {
            Resume::Live => ResumePoint {
                from_seq: next_seq,
                response_id: None,
            },
            Resume::Earliest => ResumePoint {
                from_seq: first_seq,
                response_id: Some("earliest".into()),
            },
            Resume::After(id) => match self.by_id.get(id.as_str()).map(Occurrences::first) {
                Some(seq) => ResumePoint {
                    from_seq: seq + 1,
                    response_id: Some(id.clone()),
                },
                None => ResumePoint {
                    from_seq: next_seq,
                    response_id: Some("earliest".into()),
                },
            },
        }
    }

    /// Entries with `seq >= from`, oldest first.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &Arc<Published>> {
        let first_seq = self.entries.front().map_or(from, |e| e.seq);
        let skip = from.saturating_sub(first_seq) as usize;
        self.entries.iter().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubbub_proto::Update;

    fn entry(seq: u64, id: &str, at: Instant) -> Arc<Published> {
        Arc::new(Published::new(
            seq,
            Update {
                id: id.into(),
                topics: vec!["t".into()],
                data: "x".into(),
                private: false,
                event_type: None,
                retry: None,
            },
            at,
        ))
    }

    fn ids(h: &History, from: u64) -> Vec<String> {
        h.since(from).map(|e| e.id.to_string()).collect()
    }

    #[test]
    fn trims_by_count_and_keeps_index_consistent() {
        let now = Instant::now();
        let mut h = History::new(HistoryLimits {
            max_entries: 2,
            ..Default::default()
        });
        for (seq, id) in [(1, "a"), (2, "b"), (3, "c")] {
            h.push(entry(seq, id, now), now);
        }
        assert_eq!(ids(&h, 0), ["b", "c"]);
        let p = h.resume_point(&Resume::After("a".into()), 4);
        assert_eq!(
            (p.from_seq, p.response_id.as_deref()),
            (4, Some("earliest"))
        );
        let p = h.resume_point(&Resume::After("b".into()), 4);
        assert_eq!((p.from_seq, p.response_id.as_deref()), (3, Some("b")));
        assert_eq!(ids(&h, p.from_seq), ["c"]);
    }

    #[test]
    fn trims_by_bytes_and_age() {
        let t0 = Instant::now();
        let one = entry(1, "i1", t0).frame.len();
        let mut h = History::new(HistoryLimits {
            max_entries: 100,
            max_bytes: one * 2,
            max_age: Some(Duration::from_secs(10)),
        });
        for seq in 1..=3 {
            h.push(entry(seq, &format!("i{seq}"), t0), t0);
        }
        assert_eq!(h.len(), 2);
        assert_eq!(h.bytes(), one * 2);
        h.trim(t0 + Duration::from_secs(11));
        assert_eq!(h.len(), 0);
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn repeated_ids_resume_after_the_earliest_occurrence() {
        let now = Instant::now();
        let mut h = History::new(HistoryLimits::default());
        for (seq, id) in [(1, "x"), (2, "y"), (3, "x"), (4, "z")] {
            h.push(entry(seq, id, now), now);
        }
        // Draft-08: the earliest "x", then everything after it, the reused one too.
        let p = h.resume_point(&Resume::After("x".into()), 5);
        assert_eq!((p.from_seq, p.response_id.as_deref()), (2, Some("x")));
        assert_eq!(ids(&h, p.from_seq), ["y", "x", "z"]);
        // Once the first "x" leaves, the cursor is the second one.
        h.set_limits(
            HistoryLimits {
                max_entries: 3,
                ..Default::default()
            },
            now,
        );
        assert_eq!(h.resume_point(&Resume::After("x".into()), 5).from_seq, 4);
        // And once that one leaves too, the id is unknown.
        h.set_limits(
            HistoryLimits {
                max_entries: 1,
                ..Default::default()
            },
            now,
        );
        let p = h.resume_point(&Resume::After("x".into()), 5);
        assert_eq!(
            (p.from_seq, p.response_id.as_deref()),
            (5, Some("earliest"))
        );
        assert!(h.by_id.len() == 1 && h.by_id.contains_key("z"));
    }

    #[test]
    fn earliest_and_empty() {
        let now = Instant::now();
        let mut h = History::new(HistoryLimits::default());
        let p = h.resume_point(&Resume::Earliest, 1);
        assert_eq!(
            (p.from_seq, p.response_id.as_deref()),
            (1, Some("earliest"))
        );
        h.push(entry(1, "a", now), now);
        assert_eq!(
            ids(&h, h.resume_point(&Resume::Earliest, 2).from_seq),
            ["a"]
        );
        assert_eq!(h.resume_point(&Resume::Live, 2).response_id, None);
    }
}
