//! Deciding whether an update is visible to a subscriber, with a bounded cache of
//! URI-template results (templates cost far more than a hash lookup, and the same
//! selector/topic pairs recur for every update on a busy topic).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use hubbub_proto::{Selector, Update};

use crate::subscriber::Subscriber;

/// Owned by one dispatcher (no lock). Cleared wholesale when full: simple, and a
/// cold cache only costs template evaluations, never correctness.
#[derive(Debug)]
pub(crate) struct MatchCache {
    results: HashMap<u64, (Box<str>, Box<str>, bool)>,
    capacity: usize,
    hasher: RandomState,
}

impl MatchCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            results: HashMap::new(),
            capacity,
            hasher: RandomState::new(),
        }
    }

    pub fn matches(&mut self, selector: &Selector, topic: &str) -> bool {
        let Selector::Template(template) = selector else {
            return selector.matches(topic);
        };
        let key = self.key(template.as_str(), topic);
        if let Some((sel, top, hit)) = self.results.get(&key)
            && &**sel == template.as_str()
            && &**top == topic
        {
            return *hit;
        }
        let hit = selector.matches(topic);
        if self.results.len() >= self.capacity {
            self.results.clear();
        }
        self.results
            .insert(key, (template.as_str().into(), topic.into(), hit));
        hit
    }

    fn key(&self, selector: &str, topic: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        selector.hash(&mut h);
        topic.hash(&mut h);
        h.finish()
    }

    /// Some topic matches some selector.
    pub fn any(&mut self, selectors: &[Selector], topics: &[String]) -> bool {
        selectors
            .iter()
            .any(|s| topics.iter().any(|t| self.matches(s, t)))
    }

    /// The private-update rule: public updates are visible to all; private ones only
    /// when a topic matches the subscriber's `mercure.subscribe` claim.
    pub fn authorized(&mut self, sub: &Subscriber, update: &Update) -> bool {
        !update.private
            || sub
                .claims
                .as_deref()
                .is_some_and(|claims| self.any(claims, &update.topics))
    }

    /// The full delivery rule, used for history replay.
    pub fn visible(&mut self, sub: &Subscriber, update: &Update) -> bool {
        self.any(&sub.selectors, &update.topics) && self.authorized(sub, update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_results_equal_fresh_ones() {
        let mut cache = MatchCache::new(2);
        let sel = Selector::parse("https://a/{x}").unwrap();
        for _ in 0..3 {
            for (topic, want) in [
                ("https://a/1", true),
                ("https://a/1/2", false),
                ("https://b/1", false),
            ] {
                assert_eq!(cache.matches(&sel, topic), want, "{topic}");
            }
        }
        assert!(cache.results.len() <= 2);
    }
}
