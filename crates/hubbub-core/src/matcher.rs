//! Deciding whether an update is visible to a subscriber, with a bounded cache of
//! URI-template and URL-Pattern results (both cost far more than a hash lookup,
//! and the same selector/topic pairs recur for every update on a busy topic).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use hubbub_proto::{Selector, Update};

use crate::subscriber::Subscriber;

/// Owned by one dispatcher (no lock). Cleared wholesale when full: simple, and a
/// cold cache only costs template evaluations, never correctness.
#[derive(Debug)]
pub(crate) struct MatchCache {
    /// (kind, selector key, topic) -> matched. The kind keeps a template and a
    /// URL Pattern with the same text apart.
    results: HashMap<u64, (Kind, Box<str>, Box<str>, bool)>,
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
        let (kind, text) = match selector {
            Selector::Template(template) => (Kind::Template, template.as_str()),
            Selector::UrlPattern(pattern) => (Kind::UrlPattern, pattern.cache_key()),
            Selector::Any | Selector::Exact(_) => return selector.matches(topic),
        };
        let key = self.key(kind, text, topic);
        if let Some((k, sel, top, hit)) = self.results.get(&key)
            && *k == kind
            && &**sel == text
            && &**top == topic
        {
            return *hit;
        }
        let hit = selector.matches(topic);
        if self.results.len() >= self.capacity {
            self.results.clear();
        }
        self.results
            .insert(key, (kind, text.into(), topic.into(), hit));
        hit
    }

    fn key(&self, kind: Kind, selector: &str, topic: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        kind.hash(&mut h);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Template,
    UrlPattern,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0.x template may hold U+0001, so its text can equal a URL Pattern's
    /// cache key; a shared cache entry would hand one's answer to the other.
    #[test]
    fn kinds_do_not_share_results() {
        let mut cache = MatchCache::new(16);
        let pattern = Selector::url_pattern("https://a/{x}", "https://hub/").unwrap();
        let Selector::UrlPattern(p) = &pattern else {
            unreachable!()
        };
        let template = Selector::parse(p.cache_key()).unwrap();
        assert!(matches!(template, Selector::Template(_)));
        let (topic, by_template, by_pattern) = ("https://a/x", false, true);
        assert_eq!(template.matches(topic), by_template);
        assert_eq!(pattern.matches(topic), by_pattern);
        for _ in 0..2 {
            assert_eq!(cache.matches(&template, topic), by_template);
            assert_eq!(cache.matches(&pattern, topic), by_pattern);
        }
    }

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
