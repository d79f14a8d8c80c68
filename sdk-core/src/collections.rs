//! Small sorted collections: a `Vec` kept sorted by key, searched by binary search.
//!
//! They replace `BTreeMap` / `BTreeSet` in the core, whose node code is instantiated for
//! every key/value type and is a large share of the WebAssembly build. The maps here hold
//! a handful to a few hundred entries, where a sorted vector is as fast and far smaller.
//! Iteration is in key order, like the B-tree collections. Inserting out of order shifts
//! the tail of the vector, so these are not meant for large collections.

use std::borrow::Borrow;
use std::fmt;

/// A map kept as a vector of `(key, value)` pairs sorted by key.
#[derive(Clone, PartialEq, Eq)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

/// Iterator over `(&key, &value)` in key order.
pub type Iter<'a, K, V> =
    std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

/// Iterator over `(&key, &mut value)` in key order.
pub type IterMut<'a, K, V> =
    std::iter::Map<std::slice::IterMut<'a, (K, V)>, fn(&'a mut (K, V)) -> (&'a K, &'a mut V)>;

impl<K, V> SortedMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Entries in key order, values mutable.
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Values in key order, mutable.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Keeps only the entries for which `f` returns true.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| f(k, v));
    }

    /// Removes and returns the entry with the smallest key.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        if self.entries.is_empty() {
            None
        } else {
            Some(self.entries.remove(0))
        }
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// Index of `key`, or where it would be inserted.
    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value for `key`, mutable.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// True when `key` has an entry.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets the value for `key`; returns the previous value (the stored key is kept).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes the entry for `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// The value for `key`, inserting `f()` first when there is none.
    pub fn get_or_insert_with(&mut self, key: K, f: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (key, f()));
                i
            }
        };
        &mut self.entries[i].1
    }
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    /// Collects pairs; a repeated key keeps the last value.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A set kept as a sorted vector (a [`SortedMap`] with `()` values).
#[derive(Clone, PartialEq, Eq)]
pub struct SortedSet<K>(SortedMap<K, ()>);

impl<K> SortedSet<K> {
    /// An empty set.
    pub const fn new() -> Self {
        Self(SortedMap::new())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Elements in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.0.keys()
    }

    /// Keeps only the elements for which `f` returns true.
    pub fn retain(&mut self, mut f: impl FnMut(&K) -> bool) {
        self.0.retain(|k, _| f(k));
    }

    /// Removes and returns the smallest element.
    pub fn pop_first(&mut self) -> Option<K> {
        self.0.pop_first().map(|(k, _)| k)
    }
}

impl<K: Ord> SortedSet<K> {
    /// True when `key` is in the set.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.contains_key(key)
    }

    /// Adds `key`; true when it was not there yet.
    pub fn insert(&mut self, key: K) -> bool {
        self.0.insert(key, ()).is_none()
    }

    /// Removes `key`; true when it was there.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.remove(key).is_some()
    }
}

impl<K> Default for SortedSet<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug> fmt::Debug for SortedSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<K: Ord> FromIterator<K> for SortedSet<K> {
    /// Collects elements; repeats are kept once.
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        Self(iter.into_iter().map(|k| (k, ())).collect())
    }
}

impl<K> IntoIterator for SortedSet<K> {
    type Item = K;
    type IntoIter = std::iter::Map<std::vec::IntoIter<(K, ())>, fn((K, ())) -> K>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(|(k, _)| k)
    }
}

impl<'a, K> IntoIterator for &'a SortedSet<K> {
    type Item = &'a K;
    type IntoIter = std::iter::Map<Iter<'a, K, ()>, fn((&'a K, &'a ())) -> &'a K>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, _)| k)
    }
}

/// Serde: a map as a map (in key order), a set as a sequence (in order).
#[cfg(feature = "serde")]
mod serde_impls {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{SortedMap, SortedSet};

    impl<K: Serialize, V: Serialize> Serialize for SortedMap<K, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.iter())
        }
    }

    impl<K: Serialize> Serialize for SortedSet<K> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.iter())
        }
    }

    struct MapVisitor<K, V>(PhantomData<(K, V)>);

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
        type Value = SortedMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = SortedMap::new();
            while let Some((k, v)) = access.next_entry()? {
                map.insert(k, v);
            }
            Ok(map)
        }
    }

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SortedMap<K, V> {
        /// Any key order; a repeated key keeps the last value.
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(MapVisitor(PhantomData))
        }
    }

    struct SetVisitor<K>(PhantomData<K>);

    impl<'de, K: Deserialize<'de> + Ord> Visitor<'de> for SetVisitor<K> {
        type Value = SortedSet<K>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut set = SortedSet::new();
            while let Some(k) = access.next_element()? {
                set.insert(k);
            }
            Ok(set)
        }
    }

    impl<'de, K: Deserialize<'de> + Ord> Deserialize<'de> for SortedSet<K> {
        /// Any order; repeats are kept once.
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_seq(SetVisitor(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{SortedMap, SortedSet};

    fn pairs<K: Clone, V: Clone>(map: &SortedMap<K, V>) -> Vec<(K, V)> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn insert_replace_remove_keep_key_order() {
        let mut map = SortedMap::new();
        assert_eq!(map.insert(3, "c"), None);
        assert_eq!(map.insert(1, "a"), None);
        assert_eq!(map.insert(2, "b"), None);
        assert_eq!(pairs(&map), vec![(1, "a"), (2, "b"), (3, "c")]);
        assert_eq!(map.insert(2, "B"), Some("b"));
        assert_eq!(pairs(&map), vec![(1, "a"), (2, "B"), (3, "c")]);
        assert_eq!(map.get(&2), Some(&"B"));
        assert_eq!(map.get(&4), None);
        assert_eq!(map.remove(&1), Some("a"));
        assert_eq!(map.remove(&1), None);
        assert_eq!(pairs(&map), vec![(2, "B"), (3, "c")]);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(map.values().copied().collect::<Vec<_>>(), vec!["B", "c"]);
        assert_eq!(map.pop_first(), Some((2, "B")));
        assert_eq!(map.len(), 1);
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.pop_first(), None);
    }

    #[test]
    fn lookups_by_borrowed_key() {
        let mut map: SortedMap<String, u64> = SortedMap::new();
        map.insert("b".into(), 2);
        map.insert("a".into(), 1);
        assert_eq!(map.get("a"), Some(&1));
        assert!(map.contains_key("b"));
        assert!(!map.contains_key("c"));
        *map.get_mut("b").expect("present") += 10;
        assert_eq!(map.get("b"), Some(&12));
        assert_eq!(map.remove("a"), Some(1));
        assert_eq!(map.get("a"), None);

        let mut set: SortedSet<String> = SortedSet::new();
        assert!(set.insert("x".into()));
        assert!(!set.insert("x".into()));
        assert!(set.contains("x"));
        assert!(set.remove("x"));
        assert!(!set.remove("x"));
    }

    #[test]
    fn get_or_insert_with_calls_f_only_when_missing() {
        let mut map = SortedMap::new();
        *map.get_or_insert_with("b", || 1) += 1;
        *map.get_or_insert_with("b", || panic!("present")) += 1;
        map.get_or_insert_with("a", || 7);
        assert_eq!(pairs(&map), vec![("a", 7), ("b", 3)]);
    }

    #[test]
    fn retain_and_values_mut() {
        let mut map: SortedMap<u32, u32> = (0..10).map(|i| (i, i * 10)).collect();
        map.retain(|k, v| {
            *v += 1;
            k % 3 == 0
        });
        assert_eq!(pairs(&map), vec![(0, 1), (3, 31), (6, 61), (9, 91)]);
        for v in map.values_mut() {
            *v = 0;
        }
        for (_, v) in map.iter_mut() {
            *v += 1;
        }
        assert!(map.values().all(|v| *v == 1));

        let mut set: SortedSet<u32> = (0..6).collect();
        set.retain(|k| k % 2 == 1);
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![1, 3, 5]);
    }

    #[test]
    fn from_iter_sorts_and_keeps_the_last_duplicate() {
        let map: SortedMap<&str, u32> = [("b", 1), ("c", 2), ("a", 3), ("b", 4), ("a", 5)]
            .into_iter()
            .collect();
        assert_eq!(pairs(&map), vec![("a", 5), ("b", 4), ("c", 2)]);
        let owned: Vec<(&str, u32)> = map.clone().into_iter().collect();
        assert_eq!(owned, pairs(&map));
        let by_ref: Vec<(&&str, &u32)> = (&map).into_iter().collect();
        assert_eq!(by_ref.len(), 3);

        let set: SortedSet<u32> = [3, 1, 3, 2, 1].into_iter().collect();
        assert_eq!(
            (&set).into_iter().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn equality_and_debug_match_the_btree_collections() {
        let a: SortedMap<&str, u32> = [("y", 1), ("x", 2)].into_iter().collect();
        let b: SortedMap<&str, u32> = [("x", 2), ("y", 1)].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, SortedMap::default());
        let btree: BTreeMap<&str, u32> = [("y", 1), ("x", 2)].into_iter().collect();
        assert_eq!(format!("{a:?}"), format!("{btree:?}"));
        assert_eq!(format!("{a:#?}"), format!("{btree:#?}"));

        let set: SortedSet<&str> = ["b", "a"].into_iter().collect();
        let btree: BTreeSet<&str> = ["b", "a"].into_iter().collect();
        assert_eq!(format!("{set:?}"), format!("{btree:?}"));
    }

    /// Random operations give the same contents, in the same order, as a `BTreeMap`.
    #[test]
    fn behaves_like_btreemap_under_random_operations() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut ours: SortedMap<u8, u32> = SortedMap::new();
        let mut theirs: BTreeMap<u8, u32> = BTreeMap::new();
        for step in 0..5_000u32 {
            let key = rng.u8(0..40);
            match rng.u8(0..6) {
                0 | 1 => assert_eq!(ours.insert(key, step), theirs.insert(key, step)),
                2 => assert_eq!(ours.remove(&key), theirs.remove(&key)),
                3 => assert_eq!(ours.get(&key), theirs.get(&key)),
                4 => {
                    *ours.get_or_insert_with(key, || step) += 1;
                    *theirs.entry(key).or_insert(step) += 1;
                }
                _ => {
                    ours.retain(|k, v| (*k as u32 + *v) % 7 != 0);
                    theirs.retain(|k, v| (*k as u32 + *v) % 7 != 0);
                }
            }
            assert_eq!(ours.len(), theirs.len());
            assert!(ours.iter().eq(theirs.iter()), "diverged at step {step}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trip() {
        let map: SortedMap<String, u64> = [("b".to_string(), 2), ("a".to_string(), 1)]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&map).expect("serialize");
        assert_eq!(json, r#"{"a":1,"b":2}"#);
        let back: SortedMap<String, u64> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, map);

        // Unsorted input ends up sorted; a repeated key keeps the last value, like BTreeMap.
        let text = r#"{"c":3,"a":1,"c":4,"b":2}"#;
        let ours: SortedMap<String, u64> = serde_json::from_str(text).expect("deserialize");
        let theirs: BTreeMap<String, u64> = serde_json::from_str(text).expect("deserialize");
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(
            serde_json::to_string(&ours).expect("serialize"),
            serde_json::to_string(&theirs).expect("serialize")
        );
        assert!(serde_json::from_str::<SortedMap<String, u64>>("[1]").is_err());

        let set: SortedSet<String> = serde_json::from_str(r#"["b","a","b"]"#).expect("set");
        assert_eq!(
            serde_json::to_string(&set).expect("serialize"),
            r#"["a","b"]"#
        );
        let back: SortedSet<String> =
            serde_json::from_str(&serde_json::to_string(&set).expect("serialize")).expect("set");
        assert_eq!(back, set);
    }
}
