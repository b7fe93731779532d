//! Topic subscriptions: exact routing keys in a hash map, wildcard patterns
//! (RabbitMQ topic rules on `.`-separated words) in a list.
//!
//! Both are copy-on-write: a publish clones an `Arc` under a short read lock
//! and fans out with no lock held; subscribe and unsubscribe pay the copy.

use super::subscription::Subscription;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Subscribers = Arc<[Arc<Subscription>]>;

#[derive(Debug, Clone)]
struct WildcardEntry {
    words: Arc<[Box<str>]>,
    subscription: Arc<Subscription>,
}

#[derive(Debug, Default)]
struct Registry {
    exact: HashMap<Box<str>, Subscribers>,
    wildcard: Arc<[WildcardEntry]>,
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
    // reachable[j]: the pattern prefix seen so far can match key[..j].
    let mut reachable = vec![false; key.len() + 1];
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
            let list: Vec<_> = registry.wildcard.iter().cloned().chain([entry]).collect();
            registry.wildcard = list.into();
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
            let list: Vec<_> = registry
                .wildcard
                .iter()
                .filter(|e| !Arc::ptr_eq(&e.subscription, subscription))
                .cloned()
                .collect();
            registry.wildcard = list.into();
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
        let (exact, wildcard) = {
            let registry = self.read();
            (
                registry.exact.get(routing_key).cloned(),
                Arc::clone(&registry.wildcard),
            )
        };
        for subscription in exact.iter().flat_map(|s| s.iter()) {
            deliver(subscription);
        }
        if !wildcard.is_empty() {
            let words: Vec<&str> = routing_key.split('.').collect();
            for entry in wildcard.iter().filter(|e| matches(&e.words, &words)) {
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
    }
}
