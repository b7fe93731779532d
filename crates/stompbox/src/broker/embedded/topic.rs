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

use super::subscription::{Source, Subscription};
use few::Few;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

mod few;

type Subscribers = Arc<Vec<Arc<Subscription>>>;

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
    /// removal left empty, so memory goes back. True when `self` is empty;
    /// `ended` is set when the pattern lost its last subscriber. The
    /// recursion is as deep as the pattern has words, which the session
    /// caps (`EmbeddedConfig::max_pattern_words`).
    fn remove(&mut self, path: &[Word<'_>], subscription: usize, ended: &mut bool) -> bool {
        match path.split_first() {
            None => {
                *ended = self.subscriptions.remove(&subscription).is_some()
                    && self.subscriptions.is_empty();
            }
            Some((Word::Literal(w), rest)) => {
                if let Some(child) = self.literal.get_mut(*w)
                    && child.remove(rest, subscription, ended)
                {
                    self.literal.remove(*w);
                }
            }
            Some((Word::Star, rest)) => {
                if let Some(child) = &mut self.star
                    && child.remove(rest, subscription, ended)
                {
                    self.star = None;
                }
            }
            Some((Word::Hash, rest)) => {
                if let Some(child) = &mut self.hash
                    && child.remove(rest, subscription, ended)
                {
                    self.hash = None;
                }
            }
        }
        self.is_empty()
    }

    fn children(&self) -> impl Iterator<Item = &Node> {
        self.literal
            .values()
            .map(|b| &**b)
            .chain(self.star.as_deref())
            .chain(self.hash.as_deref())
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
    /// Exact routing keys with subscribers, and patterns (canonical) with
    /// subscribers: changed under the write lock, read without any lock.
    keys: AtomicUsize,
    patterns: AtomicUsize,
}

/// One destination of a registry, for an operator.
#[derive(Debug)]
pub(crate) struct TopicFigures<'a> {
    /// The routing key; for a pattern, the (least, by name) one its
    /// subscribers subscribed with, as equivalent spellings (`#.#`, `#`)
    /// share one entry.
    pub(crate) routing_key: &'a str,
    pub(crate) pattern: bool,
    pub(crate) subscribers: usize,
    pub(crate) unacked: usize,
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
            if node.subscriptions.is_empty() {
                self.patterns.fetch_add(1, Ordering::Relaxed);
            }
            node.subscriptions
                .get_or_insert_with(&identity, || identity, || subscription);
        } else {
            // Copy-on-write per key: a publish clones one `Arc` for its
            // whole exact fan-out and walks it outside the lock. The list
            // is copied only while such a walk holds it; otherwise it grows
            // in place, so 10,000 subscribers of one topic cost 10,000
            // pushes, not 50 million copies.
            let mut registry = self.write();
            match registry.exact.get_mut(routing_key) {
                Some(list) => Arc::make_mut(list).push(subscription),
                None => {
                    registry
                        .exact
                        .insert(routing_key.into(), Arc::new(vec![subscription]));
                    self.keys.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub(crate) fn remove(&self, routing_key: &str, subscription: &Arc<Subscription>) {
        if is_pattern(routing_key) {
            let path = canonical(routing_key);
            let mut registry = self.write();
            let mut ended = false;
            registry
                .patterns
                .remove(&path, identity(subscription), &mut ended);
            if ended {
                self.patterns.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let mut registry = self.write();
        let Some(current) = registry.exact.get_mut(routing_key) else {
            return;
        };
        let Some(at) = current.iter().position(|s| Arc::ptr_eq(s, subscription)) else {
            return;
        };
        let list = Arc::make_mut(current);
        // `remove`, not `swap_remove`: publishes keep delivering in the
        // order subscribers came.
        list.remove(at);
        if list.capacity() > 4 * list.len() + 8 {
            list.shrink_to_fit();
        }
        if list.is_empty() {
            registry.exact.remove(routing_key);
            self.keys.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Routing keys and patterns with subscribers now, counted as they
    /// come and go (no lock).
    pub(crate) fn destination_count(&self) -> usize {
        self.keys.load(Ordering::Relaxed) + self.patterns.load(Ordering::Relaxed)
    }

    /// Calls `visit` for every routing key and pattern with subscribers,
    /// under the read lock: publishes go on meanwhile, subscribes and
    /// unsubscribes wait. The work is one step per key, trie node and
    /// client-ack subscriber (whose pending messages are counted); nothing
    /// is allocated but the walk's stack.
    pub(crate) fn for_each_destination(&self, mut visit: impl FnMut(TopicFigures<'_>)) {
        let registry = self.read();
        for (key, subscribers) in &registry.exact {
            visit(TopicFigures {
                routing_key: key,
                pattern: false,
                subscribers: subscribers.len(),
                unacked: subscribers.iter().map(|s| s.unacked()).sum(),
            });
        }
        let mut stack = vec![&registry.patterns];
        while let Some(node) = stack.pop() {
            stack.extend(node.children());
            let name = node
                .subscriptions
                .values()
                .filter_map(|s| match &s.source {
                    Source::Topic { routing_key } => Some(&**routing_key),
                    _ => None,
                })
                .min();
            let Some(name) = name else { continue };
            visit(TopicFigures {
                routing_key: name,
                pattern: true,
                subscribers: node.subscriptions.values().count(),
                unacked: node.subscriptions.values().map(|s| s.unacked()).sum(),
            });
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
