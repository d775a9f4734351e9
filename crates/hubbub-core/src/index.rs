//! The topic index of one shard. Exact selectors are looked up by topic, so a
//! publish touches only the subscribers of its topics; `*`, template and URL
//! Pattern selectors are the only ones checked one by one.

use std::collections::HashMap;
use std::sync::Arc;

use hubbub_proto::Selector;

use crate::subscriber::Subscriber;

type Set = HashMap<u64, Arc<Subscriber>>;

#[derive(Debug, Default)]
pub(crate) struct ShardIndex {
    /// Every subscriber of the shard (the sweeper walks this).
    pub all: Set,
    exact: HashMap<Box<str>, Set>,
    /// Subscribers with at least one `*`, template or URL Pattern selector.
    wide: Set,
}

impl ShardIndex {
    pub fn insert(&mut self, sub: &Arc<Subscriber>) {
        self.all.insert(sub.id, sub.clone());
        for sel in sub.selectors.iter() {
            match sel {
                Selector::Exact(topic) => {
                    self.exact
                        .entry(topic.as_str().into())
                        .or_default()
                        .insert(sub.id, sub.clone());
                }
                Selector::Any | Selector::Template(_) | Selector::UrlPattern(_) => {
                    self.wide.insert(sub.id, sub.clone());
                }
            }
        }
    }

    pub fn remove(&mut self, sub: &Subscriber) {
        if self.all.remove(&sub.id).is_none() {
            return;
        }
        self.wide.remove(&sub.id);
        for sel in sub.selectors.iter() {
            if let Selector::Exact(topic) = sel
                && let Some(set) = self.exact.get_mut(topic.as_str())
            {
                set.remove(&sub.id);
                if set.is_empty() {
                    self.exact.remove(topic.as_str());
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Subscribers an exact selector of which equals one of `topics`. The same
    /// subscriber may come more than once (several topics or selectors).
    pub fn exact_hits<'a>(
        &'a self,
        topics: &'a [String],
    ) -> impl Iterator<Item = &'a Arc<Subscriber>> {
        topics
            .iter()
            .filter_map(|t| self.exact.get(t.as_str()))
            .flat_map(|set| set.values())
    }

    /// How many subscribers a fan-out to `topics` looks at (an upper bound
    /// of how many it queues to).
    pub fn fanout_size(&self, topics: &[String]) -> usize {
        let exact: usize = topics
            .iter()
            .filter_map(|t| self.exact.get(t.as_str()))
            .map(HashMap::len)
            .sum();
        exact + self.wide.len()
    }

    /// Subscribers whose `*`/template selectors must be evaluated.
    pub fn wide(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.wide.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: u64, selectors: &[&str]) -> Arc<Subscriber> {
        let selectors = selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect();
        Arc::new(Subscriber::new(id, 0, selectors, None, 0, None, 0))
    }

    #[test]
    fn exact_topics_are_indexed_and_removed() {
        let mut index = ShardIndex::default();
        let (a, b, c) = (sub(1, &["x", "y"]), sub(2, &["y"]), sub(3, &["*"]));
        for s in [&a, &b, &c] {
            index.insert(s);
        }
        let topics = vec!["y".to_string()];
        let mut hits: Vec<u64> = index.exact_hits(&topics).map(|s| s.id).collect();
        hits.sort();
        assert_eq!(hits, [1, 2]);
        assert_eq!(index.wide().map(|s| s.id).collect::<Vec<_>>(), [3]);
        index.remove(&a);
        index.remove(&a);
        assert_eq!(
            index.exact_hits(&topics).map(|s| s.id).collect::<Vec<_>>(),
            [2]
        );
        assert!(!index.exact.contains_key("x"));
        assert_eq!(index.len(), 2);
    }
}
