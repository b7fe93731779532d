//! A map for the trie's nodes, which mostly hold no entry or one: one entry
//! is kept inline, and a hash map is allocated only from the second on. A
//! pattern of unshared words then costs a node and its word per word, not a
//! hash table each (the smallest holds four buckets).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Default)]
pub(super) enum Few<K, V> {
    #[default]
    None,
    One(K, V),
    #[expect(
        clippy::box_collection,
        reason = "boxed, the map's 48 bytes are not in every node that holds one entry or none"
    )]
    Many(Box<HashMap<K, V>>),
}

impl<K: Hash + Eq, V> Few<K, V> {
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Few::None)
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Few::None => None,
            Few::One(k, v) => (k.borrow() == key).then_some(v),
            Few::Many(map) => map.get(key),
        }
    }

    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Few::None => None,
            Few::One(k, v) => ((*k).borrow() == key).then_some(v),
            Few::Many(map) => map.get_mut(key),
        }
    }

    /// The value under `key`, inserted with `make` when absent. `make_key`
    /// builds the owned key only when it is needed.
    pub(super) fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.is_empty() {
            *self = Few::One(make_key(), make());
            return match self {
                Few::One(_, v) => v,
                _ => unreachable!("an entry was just inserted"),
            };
        }
        let grow = matches!(self, Few::One(k, _) if (*k).borrow() != key);
        if grow && let Few::One(k, v) = std::mem::take(self) {
            let mut map = HashMap::with_capacity(2);
            map.insert(k, v);
            *self = Few::Many(Box::new(map));
        }
        match self {
            Few::One(_, v) => v,
            Few::Many(map) => map.entry(make_key()).or_insert_with(make),
            Few::None => unreachable!("not empty, checked above"),
        }
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Few::None => None,
            Few::One(k, _) => {
                if (*k).borrow() != key {
                    return None;
                }
                match std::mem::take(self) {
                    Few::One(_, v) => Some(v),
                    _ => None,
                }
            }
            Few::Many(map) => {
                let removed = map.remove(key);
                // Back to inline as entries go, so memory goes back too.
                if map.len() <= 1 {
                    let rest = map.drain().next();
                    *self = match rest {
                        Some((k, v)) => Few::One(k, v),
                        None => Few::None,
                    };
                }
                removed
            }
        }
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        let (one, many) = match self {
            Few::None => (None, None),
            Few::One(_, v) => (Some(v), None),
            Few::Many(map) => (None, Some(map.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_inline_to_a_map_and_back() {
        let mut few: Few<Box<str>, u32> = Few::default();
        assert!(few.is_empty());
        *few.get_or_insert_with("a", || "a".into(), || 1) += 10;
        assert!(matches!(few, Few::One(..)));
        assert_eq!(few.get("a"), Some(&11));
        few.get_or_insert_with("b", || "b".into(), || 2);
        few.get_or_insert_with("b", || "b".into(), || 99);
        assert!(matches!(few, Few::Many(_)));
        let mut values: Vec<_> = few.values().copied().collect();
        values.sort_unstable();
        assert_eq!(values, [2, 11]);
        assert_eq!(few.remove("a"), Some(11));
        assert!(matches!(few, Few::One(..)));
        assert_eq!(few.remove("x"), None);
        assert_eq!(few.get_mut("b").map(|v| *v), Some(2));
        assert_eq!(few.remove("b"), Some(2));
        assert!(few.is_empty());
    }
}
