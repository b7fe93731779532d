//! Topic subscriptions: exact routing keys in a hash map, wildcard patterns
//! (RabbitMQ topic rules on `.`-separated words) in a word trie.
//!
//! A publish walks only the trie nodes its key's words can reach, so a
//! pattern that cannot match it costs nothing unless it shares a prefix with
//! the key. Patterns are stored in a canonical form (every run of wildcard
//! words becomes its `*`s followed by at most one `#`), so patterns made of
//! wildcards alone reach at most two nodes per key word, however many
//! sessions subscribe them. Subscribe and unsubscribe change one path of the
//! trie under the write lock; a publish collects its matches under a short
//! read lock and delivers with no lock held.

use super::subscription::Subscription;
use few::Few;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

mod few;

type Subscribers = Arc<[Arc<Subscription>]>;

/// One word position of the trie. Its word is the key it is stored under in
/// its parent, so a word shared by many patterns' prefixes is stored once.
#[derive(Debug, Default)]
struct Node {
    literal: Few<Box<str>, Box<Node>>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    /// Subscriptions whose pattern ends here, by the address of their
    /// `Arc`, which is unique while the map holds it.
    subscriptions: Few<usize, Arc<Subscription>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.subscriptions.is_empty()
    }

    fn child_mut(&mut self, word: Word<'_>) -> &mut Node {
        match word {
            Word::Literal(w) => self
                .literal
                .get_or_insert_with(w, || w.into(), Box::default),
            Word::Star => self.star.get_or_insert_default(),
            Word::Hash => self.hash.get_or_insert_default(),
        }
    }

    /// Removes `subscription` from the end of `path`, then every node the
    /// removal left empty, so memory goes back. True when `self` is empty.
    /// The recursion is as deep as the pattern has words, which the session
    /// caps (`EmbeddedConfig::max_pattern_words`).
    fn remove(&mut self, path: &[Word<'_>], subscription: usize) -> bool {
        match path.split_first() {
            None => {
                self.subscriptions.remove(&subscription);
            }
            Some((Word::Literal(w), rest)) => {
                if let Some(child) = self.literal.get_mut(*w)
                    && child.remove(rest, subscription)
                {
                    self.literal.remove(*w);
                }
            }
            Some((Word::Star, rest)) => {
                if let Some(child) = &mut self.star
                    && child.remove(rest, subscription)
                {
                    self.star = None;
                }
            }
            Some((Word::Hash, rest)) => {
                if let Some(child) = &mut self.hash
                    && child.remove(rest, subscription)
                {
                    self.hash = None;
                }
            }
        }
        self.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word<'a> {
    Literal(&'a str),
    Star,
    Hash,
}

/// The canonical path of a pattern: in each run of wildcard words the `*`s
/// come first and the `#`s collapse into one (`#.*.#` → `*.#`: both mean
/// "one word or more"), so equivalent patterns share their nodes and
/// wildcard-only prefixes stay few.
fn canonical(pattern: &str) -> Vec<Word<'_>> {
    let mut path = Vec::new();
    let mut stars = 0;
    let mut hash = false;
    let flush = |path: &mut Vec<Word<'_>>, stars: &mut usize, hash: &mut bool| {
        path.extend(std::iter::repeat_n(Word::Star, *stars));
        if *hash {
            path.push(Word::Hash);
        }
        *stars = 0;
        *hash = false;
    };
    for word in pattern.split('.') {
        match word {
            "*" => stars += 1,
            "#" => hash = true,
            literal => {
                flush(&mut path, &mut stars, &mut hash);
                path.push(Word::Literal(literal));
            }
        }
    }
    flush(&mut path, &mut stars, &mut hash);
    path
}

#[derive(Debug, Default)]
struct Registry {
    exact: HashMap<Box<str>, Subscribers>,
    patterns: Node,
}

/// The trie nodes a key prefix has reached: `(node, reached by its # edge)`.
/// A `#` node stays reachable after consuming a word.
type Reached<'a> = Vec<(&'a Node, bool)>;

impl Registry {
    /// Adds every subscription whose pattern matches `words` to `out`, each
    /// once, and returns how many trie nodes the walk visited (the work of
    /// a publish, which tests hold constant against unrelated patterns).
    fn collect_patterns(&self, words: &[&str], out: &mut Vec<Arc<Subscription>>) -> usize {
        let root = &self.patterns;
        if root.is_empty() {
            return 0;
        }
        let mut visited = 0;
        let mut current: Reached<'_> = Vec::new();
        let mut next: Reached<'_> = Vec::new();
        push_with_hash(&mut current, root, false);
        for word in words {
            next.clear();
            for &(node, is_hash) in &current {
                visited += 1;
                if is_hash {
                    // The same # node may also follow from its parent below.
                    next.push((node, true));
                }
                if let Some(child) = node.literal.get(*word) {
                    push_with_hash(&mut next, child, false);
                }
                if let Some(child) = &node.star {
                    push_with_hash(&mut next, child, false);
                }
            }
            dedup_hash_nodes(&mut next);
            std::mem::swap(&mut current, &mut next);
            if current.is_empty() {
                return visited;
            }
        }
        for (node, _) in current {
            visited += 1;
            out.extend(node.subscriptions.values().cloned());
        }
        visited
    }
}

/// Adds `node` and, as `#` also matches zero words, its `#` child. In the
/// canonical form a `#` node has no `#` child, so one step is the whole
/// closure.
fn push_with_hash<'a>(reached: &mut Reached<'a>, node: &'a Node, is_hash: bool) {
    reached.push((node, is_hash));
    if let Some(hash) = &node.hash {
        reached.push((hash, true));
    }
}

/// A `#` node can be reached twice for one key prefix: by consuming a word
/// itself and by following from its parent. Every other node has one parent
/// and one edge from it, so only `#` nodes need the check (and there are few
/// of them on one walk).
fn dedup_hash_nodes(reached: &mut Reached<'_>) {
    let mut i = 0;
    while i < reached.len() {
        let (node, is_hash) = reached[i];
        if is_hash && reached[..i].iter().any(|(n, _)| std::ptr::eq(*n, node)) {
            reached.swap_remove(i);
        } else {
            i += 1;
        }
    }
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

/// Words in a routing key or pattern.
pub(crate) fn word_count(routing_key: &str) -> usize {
    routing_key.split('.').count()
}

fn identity(subscription: &Arc<Subscription>) -> usize {
    Arc::as_ptr(subscription) as usize
}

impl TopicRegistry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, routing_key: &str, subscription: Arc<Subscription>) {
        if is_pattern(routing_key) {
            let path = canonical(routing_key);
            let mut registry = self.write();
            let mut node = &mut registry.patterns;
            for word in path {
                node = node.child_mut(word);
            }
            let identity = identity(&subscription);
            node.subscriptions
                .get_or_insert_with(&identity, || identity, || subscription);
        } else {
            // Copy-on-write per key: a publish clones one `Arc` for its
            // whole exact fan-out; the copy here grows only with the
            // subscribers of this same key.
            let mut registry = self.write();
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
        if is_pattern(routing_key) {
            let path = canonical(routing_key);
            let mut registry = self.write();
            registry.patterns.remove(&path, identity(subscription));
            return;
        }
        let mut registry = self.write();
        if let Some(current) = registry.exact.get(routing_key) {
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

    /// Calls `deliver` for every subscription matching `routing_key`, once
    /// each.
    pub(crate) fn for_each_match(
        &self,
        routing_key: &str,
        mut deliver: impl FnMut(&Arc<Subscription>),
    ) {
        let mut by_pattern = Vec::new();
        let exact = {
            let registry = self.read();
            if !registry.patterns.is_empty() {
                let words: Vec<&str> = routing_key.split('.').collect();
                registry.collect_patterns(&words, &mut by_pattern);
            }
            registry.exact.get(routing_key).cloned()
        };
        for subscription in exact.iter().flat_map(|s| s.iter()) {
            deliver(subscription);
        }
        for subscription in &by_pattern {
            deliver(subscription);
        }
    }
}

#[cfg(test)]
mod tests;
