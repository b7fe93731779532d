//! Topic subscriptions: exact routing keys in a hash map, wildcard patterns
//! (RabbitMQ topic rules on `.`-separated words) in lists indexed by their
//! first word.
//!
//! A publish only looks at the patterns that start with the key's first
//! word, plus those that start with `*` or `#`, so patterns on unrelated
//! topics cost it nothing. Everything is copy-on-write: a publish clones a
//! few `Arc`s under a short read lock and fans out with no lock held;
//! subscribe and unsubscribe pay the copy of one list.

use super::subscription::Subscription;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Subscribers = Arc<[Arc<Subscription>]>;

#[derive(Debug, Clone)]
struct WildcardEntry {
    words: Arc<[Box<str>]>,
    subscription: Arc<Subscription>,
}

type Patterns = Arc<[WildcardEntry]>;

#[derive(Debug, Default)]
struct Registry {
    exact: HashMap<Box<str>, Subscribers>,
    /// Patterns by their first word, when it is a literal.
    by_first_word: HashMap<Box<str>, Patterns>,
    /// Patterns starting with `*` or `#`: checked on every publish.
    leading_wildcard: Patterns,
}

impl Registry {
    /// The list a pattern belongs in.
    fn patterns_mut(&mut self, first: &str) -> &mut Patterns {
        if first == "*" || first == "#" {
            &mut self.leading_wildcard
        } else {
            self.by_first_word.entry(first.into()).or_default()
        }
    }
}

fn first_word(key: &str) -> &str {
    key.split('.').next().unwrap_or_default()
}

/// All topic subscriptions of the embedded broker.
#[derive(Debug, Default)]
pub(crate) struct TopicRegistry {
    inner: RwLock<Registry>,
}

/// True when a routing key has a `*` or `#` word, which makes a subscription
/// a pattern.
pub(crate) fn is_pattern(routing_key: &str) -> bool {
    routing_key.split('.').any(|w| w == "*" || w == "#")
}

/// RabbitMQ topic matching: `*` is exactly one word, `#` zero or more.
///
/// Dynamic programming over (pattern word, key word) so that a hostile
/// pattern such as `#.#.#.#…` costs O(pattern × key), not exponential time.
pub(crate) fn matches(pattern: &[Box<str>], key: &[&str]) -> bool {
    // reachable[j]: the pattern prefix seen so far can match key[..j]. On the
    // stack for ordinary keys, so a publish allocates nothing per pattern.
    let mut small = [false; 33];
    let mut large = Vec::new();
    let reachable: &mut [bool] = if key.len() < small.len() {
        &mut small[..=key.len()]
    } else {
        large.resize(key.len() + 1, false);
        &mut large
    };
    reachable[0] = true;
    for word in pattern {
        if word.as_ref() == "#" {
            for j in 1..=key.len() {
                reachable[j] = reachable[j] || reachable[j - 1];
            }
        } else {
            for j in (1..=key.len()).rev() {
                reachable[j] =
                    reachable[j - 1] && (word.as_ref() == "*" || word.as_ref() == key[j - 1]);
            }
            reachable[0] = false;
        }
    }
    reachable[key.len()]
}

impl TopicRegistry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, routing_key: &str, subscription: Arc<Subscription>) {
        let mut registry = self.write();
        if is_pattern(routing_key) {
            let entry = WildcardEntry {
                words: routing_key.split('.').map(Box::from).collect(),
                subscription,
            };
            let list = registry.patterns_mut(first_word(routing_key));
            let grown: Vec<_> = list.iter().cloned().chain([entry]).collect();
            *list = grown.into();
        } else {
            let list: Vec<_> = registry
                .exact
                .get(routing_key)
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into_iter()
                .chain([subscription])
                .collect();
            registry.exact.insert(routing_key.into(), list.into());
        }
    }

    pub(crate) fn remove(&self, routing_key: &str, subscription: &Arc<Subscription>) {
        let mut registry = self.write();
        if is_pattern(routing_key) {
            let first = first_word(routing_key);
            let list = registry.patterns_mut(first);
            let kept: Vec<_> = list
                .iter()
                .filter(|e| !Arc::ptr_eq(&e.subscription, subscription))
                .cloned()
                .collect();
            let empty = kept.is_empty();
            *list = kept.into();
            if empty && first != "*" && first != "#" {
                registry.by_first_word.remove(first);
            }
        } else if let Some(current) = registry.exact.get(routing_key) {
            let list: Vec<_> = current
                .iter()
                .filter(|s| !Arc::ptr_eq(s, subscription))
                .cloned()
                .collect();
            if list.is_empty() {
                registry.exact.remove(routing_key);
            } else {
                registry.exact.insert(routing_key.into(), list.into());
            }
        }
    }

    /// Calls `deliver` for every subscription matching `routing_key`.
    pub(crate) fn for_each_match(
        &self,
        routing_key: &str,
        mut deliver: impl FnMut(&Arc<Subscription>),
    ) {
        let (exact, same_first, leading) = {
            let registry = self.read();
            (
                registry.exact.get(routing_key).cloned(),
                registry.by_first_word.get(first_word(routing_key)).cloned(),
                Arc::clone(&registry.leading_wildcard),
            )
        };
        for subscription in exact.iter().flat_map(|s| s.iter()) {
            deliver(subscription);
        }
        if same_first.is_some() || !leading.is_empty() {
            let words: Vec<&str> = routing_key.split('.').collect();
            let candidates = same_first
                .iter()
                .flat_map(|l| l.iter())
                .chain(leading.iter());
            for entry in candidates.filter(|e| matches(&e.words, &words)) {
                deliver(&entry.subscription);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        let p: Vec<Box<str>> = pattern.split('.').map(Box::from).collect();
        let k: Vec<&str> = key.split('.').collect();
        matches(&p, &k)
    }

    #[test]
    fn rabbitmq_topic_rules() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(m("#", "x.y"));
        assert!(m("#.c", "a.b.c"));
        assert!(m("*.b.#", "a.b"));
        assert!(!m("*.b.#", "a.c"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        let long: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        assert!(m("#", &long.join(".")));
        assert!(m(&format!("0.#.{}", 39), &long.join(".")));
    }

    fn subscription(key: u64) -> Arc<Subscription> {
        Arc::new(Subscription {
            id: bytes::Bytes::from(format!("s{key}")),
            display_destination: None,
            key,
            ack: crate::broker::AckMode::Auto,
            version: stompbox_codec::Version::V1_2,
            outbox: Arc::new(crate::outbox::Outbox::new(1024)),
            source: super::super::subscription::Source::Topic {
                routing_key: "x".into(),
            },
            max_unacked: 10,
            pending: std::sync::Mutex::default(),
            cancelled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn matched(registry: &TopicRegistry, key: &str) -> Vec<u64> {
        let mut keys = Vec::new();
        registry.for_each_match(key, |s| keys.push(s.key));
        keys.sort_unstable();
        keys
    }

    #[test]
    fn patterns_are_found_through_their_first_word_and_leading_wildcards() {
        let registry = TopicRegistry::default();
        let subs: Vec<_> = (0..5).map(subscription).collect();
        registry.add("stocks.*.price", Arc::clone(&subs[0]));
        registry.add("#", Arc::clone(&subs[1]));
        registry.add("*.eu.price", Arc::clone(&subs[2]));
        registry.add("news.#", Arc::clone(&subs[3]));
        registry.add("stocks.eu.price", Arc::clone(&subs[4]));
        assert_eq!(matched(&registry, "stocks.eu.price"), [0, 1, 2, 4]);
        assert_eq!(matched(&registry, "news"), [1, 3]);
        assert_eq!(matched(&registry, "weather.eu.price"), [1, 2]);
        registry.remove("#", &subs[1]);
        registry.remove("stocks.*.price", &subs[0]);
        assert_eq!(matched(&registry, "stocks.eu.price"), [2, 4]);
        registry.remove("news.#", &subs[3]);
        assert!(matched(&registry, "news.today").is_empty());
        assert!(registry.read().by_first_word.is_empty());
    }
}
