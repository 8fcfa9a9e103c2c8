//! A copy-on-write hash map for snapshots: 256 shards, each an ordinary
//! hash map behind an `Arc`.
//!
//! Snapshots share the shards they did not change. Publishing clones only
//! the shards a change touched (about 1/256 of the map each), so a change
//! costs a few hundred entries, never the whole map, and readers keep the
//! old shards for as long as they hold the old snapshot.
//!
//! Why not a persistent trie (`imbl::HashMap`): at 100 000 entries its
//! nodes cost ~230 bytes per entry, an ordinary hash map ~55, and the
//! snapshot holds one entry per endpoint address.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

const SHARDS: usize = 256;

pub struct ShardedMap<K, V> {
    /// Shared as a whole until the first change after a clone.
    shards: Arc<Vec<Arc<HashMap<K, V>>>>,
    /// Picks the shard; the same for every clone of the map.
    hasher: RandomState,
    len: usize,
}

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            shards: Arc::new((0..SHARDS).map(|_| Arc::new(HashMap::new())).collect()),
            hasher: RandomState::new(),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.shards.iter().flat_map(|shard| shard.iter()))
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: the shard's own map hashes with other seeds.
        (self.hasher.hash_one(key) >> 56) as usize % SHARDS
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The shard, copied first if a clone of the map shares it.
    fn shard_mut(&mut self, shard: usize) -> &mut HashMap<K, V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[shard])
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard_of(&key);
        let old = self.shard_mut(shard).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        // Copy the shard only when there is something to remove.
        self.shards[shard].get(key)?;
        let old = self.shard_mut(shard).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub(crate) fn clear(&mut self) {
        *self = Self {
            hasher: self.hasher.clone(),
            ..Self::default()
        };
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_its_state_and_shares_untouched_shards() {
        let mut map = ShardedMap::default();
        for i in 0..10_000u32 {
            map.insert(i, i * 2);
        }
        let before = map.clone();
        map.insert(7, 0);
        map.remove(&8);
        map.insert(20_000, 1);
        assert_eq!(before.get(&7), Some(&14));
        assert_eq!(before.get(&8), Some(&16));
        assert_eq!(before.len(), 10_000);
        assert_eq!(map.get(&7), Some(&0));
        assert_eq!(map.get(&8), None);
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.iter().count(), 10_000);
        let shared = before
            .shards
            .iter()
            .zip(map.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= SHARDS - 3, "{shared} shards shared");
        assert_eq!(map.remove(&123_456), None);
        let mut cleared = map.clone();
        cleared.clear();
        assert!(cleared.is_empty() && cleared.get(&1).is_none());
        assert_eq!(map.get(&1), Some(&2));
    }
}
