//! A map for the few entries most sessions have: a session's
//! subscriptions, usually one to three.
//!
//! A `HashMap` allocates room for four entries and its control bytes at
//! the first insert; three such maps were a fifth of an idle subscribed
//! session's memory. Up to [`FEW`] entries live in a vector sized to them
//! and are found by comparison; past that the map becomes a `HashMap`, so
//! a session with hundreds of subscriptions keeps constant-time lookups.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept in the vector before the map switches to hashing.
const FEW: usize = 8;

#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    Few(Vec<(K, V)>),
    Many(HashMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Few(entries) => entries.len(),
            SmallMap::Many(map) => map.len(),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(map) => map.get(key),
        }
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Inserts, returning the value `key` had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Few(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if entries.len() < FEW {
                    // Grown one entry at a time: the few entries take what
                    // they need, not the vector's doubling.
                    entries.reserve_exact(1);
                    entries.push((key, value));
                    return None;
                }
                let mut map: HashMap<K, V> = std::mem::take(entries).into_iter().collect();
                map.insert(key, value);
                *self = SmallMap::Many(map);
                None
            }
            SmallMap::Many(map) => map.insert(key, value),
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => {
                let at = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.swap_remove(at);
                if entries.is_empty() {
                    *entries = Vec::new();
                }
                Some(value)
            }
            SmallMap::Many(map) => map.remove(key),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Many(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter().map(|(_, v)| v)), None),
            SmallMap::Many(map) => (None, Some(map.values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Takes every entry out, leaving the map empty.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (K, V)> + use<K, V> {
        let (few, many) = match std::mem::take(self) {
            SmallMap::Few(entries) => (Some(entries.into_iter()), None),
            SmallMap::Many(map) => (None, Some(map.into_iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_below_and_above_the_switch() {
        let mut map = SmallMap::new();
        let mut reference = HashMap::new();
        for round in 0..3u32 {
            for i in 0..20u32 {
                let key = (i * 7 + round) % 23;
                assert_eq!(map.insert(key, i), reference.insert(key, i), "insert {key}");
                assert_eq!(map.len(), reference.len());
            }
            for i in (0..23u32).step_by(3) {
                assert_eq!(map.remove(&i), reference.remove(&i), "remove {i}");
                assert_eq!(map.get(&(i + 1)), reference.get(&(i + 1)));
                assert_eq!(map.contains_key(&(i + 2)), reference.contains_key(&(i + 2)));
            }
            let mut values: Vec<u32> = map.values().copied().collect();
            let mut expected: Vec<u32> = reference.values().copied().collect();
            values.sort_unstable();
            expected.sort_unstable();
            assert_eq!(values, expected);
        }
        let mut drained: Vec<(u32, u32)> = map.drain().collect();
        let mut expected: Vec<(u32, u32)> = reference.drain().collect();
        drained.sort_unstable();
        expected.sort_unstable();
        assert_eq!(drained, expected);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn a_few_entries_take_only_their_own_room() {
        let mut map = SmallMap::new();
        map.insert(1u64, [0u8; 40]);
        match &map {
            SmallMap::Few(entries) => assert_eq!(entries.capacity(), 1),
            SmallMap::Many(_) => panic!("switched to hashing at one entry"),
        }
    }
}
