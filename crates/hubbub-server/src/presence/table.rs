//! The table of active subscriptions, built by applying subscription events
//! in delivery order (no I/O, no clock).
//!
//! Every node applies the same events in the same order (the cluster's one
//! order), so every node decides the same thing for each: an event that
//! changes nothing (a second `active: false` for one subscription, emitted by
//! two nodes that both saw its owner die, or an owner's re-announcement of a
//! subscription the table holds) is dropped everywhere, and an event that
//! changes the table is delivered everywhere. That is how each change reaches
//! subscribers exactly once however many nodes emitted it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::event::Tracked;

/// What a node held for one origin: compared with what the origin gossips
/// about its own subscriptions to find a diverged table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    /// XOR of [`digest_of`] over the topics: order-free, updated in O(1).
    pub digest: u64,
}

impl Summary {
    pub fn add(&mut self, topic: &str) {
        self.count += 1;
        self.digest ^= digest_of(topic);
    }

    pub fn remove(&mut self, topic: &str) {
        self.count -= 1;
        self.digest ^= digest_of(topic);
    }

    /// `count:digest`, the gossiped form.
    pub fn encode(&self) -> String {
        format!("{}:{:016x}", self.count, self.digest)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (count, digest) = s.split_once(':')?;
        Some(Self {
            count: count.parse().ok()?,
            digest: u64::from_str_radix(digest, 16).ok()?,
        })
    }
}

/// FNV-1a: stable across processes and versions, unlike `std`'s hasher,
/// since nodes compare these values with each other.
pub fn digest_of(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub tracked: Tracked,
    /// The origin (`node/generation`, or `local` on a single node) whose
    /// connection holds the subscription: the one that announced it.
    pub owner: Arc<str>,
}

/// The outcome of applying one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The table changed: deliver the event.
    Changed,
    /// Already so: drop the event.
    Unchanged,
    /// A new subscription while `max_tracked` are held: not tracked, dropped.
    Full,
}

#[derive(Debug)]
pub struct Table {
    /// By topic (the document id), so listings are sorted and a matcher's
    /// subscriptions are one range.
    entries: BTreeMap<String, Entry>,
    owners: HashMap<Arc<str>, Summary>,
    max_tracked: usize,
}

impl Table {
    pub fn new(max_tracked: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            owners: HashMap::new(),
            max_tracked,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max_tracked
    }

    /// Applies one event; `owner` is the origin that stamped it, which owns
    /// the subscription if this event starts it.
    pub fn apply(&mut self, tracked: Tracked, active: bool, owner: &str) -> Applied {
        let topic = tracked.topic();
        if !active {
            let Some(gone) = self.entries.remove(&topic) else {
                return Applied::Unchanged;
            };
            if let Some(s) = self.owners.get_mut(&gone.owner) {
                s.remove(&topic);
                if s.count == 0 {
                    self.owners.remove(&gone.owner);
                }
            }
            return Applied::Changed;
        }
        if self.entries.contains_key(&topic) {
            return Applied::Unchanged;
        }
        if self.is_full() {
            return Applied::Full;
        }
        let owner: Arc<str> = match self.owners.get_key_value(owner) {
            Some((k, _)) => k.clone(),
            None => owner.into(),
        };
        self.owners.entry(owner.clone()).or_default().add(&topic);
        self.entries.insert(topic, Entry { tracked, owner });
        Applied::Changed
    }

    pub fn get(&self, topic: &str) -> Option<&Entry> {
        self.entries.get(topic)
    }

    /// Every subscription whose topic starts with `prefix` (all for `""`), sorted.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// The origins holding subscriptions, with what is held for each.
    pub fn owners(&self) -> impl Iterator<Item = (&Arc<str>, &Summary)> {
        self.owners.iter()
    }

    pub fn summary(&self, owner: &str) -> Summary {
        self.owners.get(owner).copied().unwrap_or_default()
    }

    /// The subscriptions `owner` holds.
    pub fn owned_by<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.values().filter(move |e| &*e.owner == owner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::MatchType;
    use super::*;

    fn sub(n: u32) -> Tracked {
        Tracked {
            match_type: MatchType::Exact,
            matcher: format!("https://example.com/{}", n % 3),
            subscriber: format!("urn:uuid:{n}"),
            payload: None,
        }
    }

    #[test]
    fn each_change_applies_once() {
        let mut t = Table::new(10);
        assert_eq!(t.apply(sub(1), true, "a/1"), Applied::Changed);
        assert_eq!(t.apply(sub(1), true, "a/1"), Applied::Unchanged);
        assert_eq!(t.apply(sub(1), false, "b/1"), Applied::Changed);
        assert_eq!(t.apply(sub(1), false, "a/1"), Applied::Unchanged);
        assert_eq!(t.len(), 0);
        assert_eq!(t.owners().count(), 0);
    }

    #[test]
    fn the_owner_is_who_announced_it_and_summaries_follow() {
        let mut t = Table::new(10);
        t.apply(sub(1), true, "a/1");
        t.apply(sub(2), true, "a/1");
        t.apply(sub(3), true, "b/7");
        let mut mine = Summary::default();
        mine.add(&sub(1).topic());
        mine.add(&sub(2).topic());
        assert_eq!(t.summary("a/1"), mine);
        // Ended by someone else: still counted off its owner.
        t.apply(sub(2), false, "b/7");
        mine.remove(&sub(2).topic());
        assert_eq!(t.summary("a/1"), mine);
        assert_eq!(t.owned_by("b/7").count(), 1);
        assert_eq!(Summary::decode(&mine.encode()), Some(mine));
        assert_eq!(Summary::decode("x"), None);
    }

    #[test]
    fn the_cap_refuses_new_subscriptions_only() {
        let mut t = Table::new(2);
        t.apply(sub(1), true, "a");
        t.apply(sub(2), true, "a");
        assert_eq!(t.apply(sub(3), true, "a"), Applied::Full);
        assert_eq!(t.apply(sub(2), true, "a"), Applied::Unchanged);
        assert_eq!(t.apply(sub(2), false, "a"), Applied::Changed);
        assert_eq!(t.apply(sub(3), true, "a"), Applied::Changed);
    }

    #[test]
    fn a_matchers_subscriptions_are_one_range() {
        let mut t = Table::new(100);
        for n in 0..9 {
            t.apply(sub(n), true, "a");
        }
        let prefix = format!(
            "{}/exact/{}/",
            super::super::event::PREFIX,
            super::super::event::encode("https://example.com/1")
        );
        let got: Vec<_> = t
            .with_prefix(&prefix)
            .map(|e| e.tracked.subscriber.clone())
            .collect();
        assert_eq!(got, ["urn:uuid:1", "urn:uuid:4", "urn:uuid:7"]);
        assert_eq!(t.with_prefix("").count(), 9);
    }
}
