//! Per-key state a stage keeps, one abstraction for every core: the runner checkpoints
//! it to the stage's changelog, restores it when partitions are assigned and drops it
//! when they go, through [`KeyedState`] alone.
//!
//! Two implementations: [`super::series_table::SeriesTable`] (per series, looked up
//! without allocating, idle series evicted by event time) for the detector and the
//! forecaster, and [`KeyedMap`] (per target or pool, bounded, least recently used key
//! evicted when full) for the recommender and the coordinator.

use super::snapshot::{
    decode_partitioned, encode, encode_change, Partitioned, RestoreError, UnencodableState,
};
use super::StateChange;
use hashbrown::{HashMap, HashSet};
use serde::{de::DeserializeOwned, Serialize};

/// What the runner needs of a core's per-key state.
pub trait KeyedState {
    /// The state of every key changed since the last call, and tombstones for keys
    /// removed since; they count as written afterwards. A key whose state cannot be
    /// encoded stays changed and is returned (the runner stops on it).
    fn take_changes(&mut self, out: &mut Vec<StateChange>) -> Result<(), UnencodableState>;

    /// Restores one key of `partition` from its snapshot. An error leaves the key cold;
    /// the caller counts it and goes on.
    fn restore(&mut self, partition: i32, key: &str, bytes: &[u8]) -> Result<(), RestoreError>;

    /// Forgets one key (a tombstone met while restoring).
    fn forget(&mut self, key: &str);

    /// Drops the state of every key of the revoked partitions.
    fn drop_partitions(&mut self, partitions: &[i32]);

    /// The state of every key of `partition` as snapshots (key, bytes).
    fn snapshot(&self, partition: i32) -> Vec<(String, Vec<u8>)>;

    /// Keys held.
    fn len(&self) -> usize;

    /// True when no key is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys evicted so far to stay within the limit (or for being idle).
    fn evicted(&self) -> u64;
}

/// A state and when its key was last used.
#[derive(Debug)]
struct Slot<T> {
    state: T,
    used: u64,
}

/// Per-key states, at most `max_keys` of them: a new key that finds the map full
/// evicts the least recently used one (counted, and a tombstone in the changelog) —
/// except keys the map was told to keep ([`KeyedMap::keeping`]); with only those left,
/// the map grows past its limit rather than lose them.
/// Eviction scans the map, so it costs O(keys); it happens only when there are more
/// targets or pools than the limit, which is the case the limit guards against.
#[derive(Debug)]
pub struct KeyedMap<T> {
    map: HashMap<String, Slot<T>>,
    /// Keys changed since the last [`KeyedState::take_changes`].
    changed: HashSet<String>,
    /// Keys evicted since then, for tombstones.
    removed: Vec<(i32, String)>,
    max_keys: usize,
    evicted: u64,
    /// Uses so far (the recency of a key is the value of this at its last use).
    uses: u64,
    /// States that must not be evicted.
    keep: fn(&T) -> bool,
}

impl<T> KeyedMap<T>
where
    T: Default + Partitioned,
{
    /// An empty map holding at most `max_keys` keys (at least 1).
    pub fn new(max_keys: usize) -> Self {
        KeyedMap {
            map: HashMap::new(),
            changed: HashSet::new(),
            removed: Vec::new(),
            max_keys: max_keys.max(1),
            evicted: 0,
            uses: 0,
            keep: |_| false,
        }
    }

    /// Never evicts a state for which `keep` is true (one that holds records not yet
    /// committed, say).
    pub fn keeping(mut self, keep: fn(&T) -> bool) -> Self {
        self.keep = keep;
        self
    }

    /// The state of `key` (of `partition`), created if new, marked changed. A new key
    /// in a full map evicts the least recently used one first.
    pub fn entry(&mut self, key: &str, partition: i32) -> &mut T {
        self.uses += 1;
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            self.evict_least_recent();
        }
        if !self.changed.contains(key) {
            self.changed.insert(key.to_string());
        }
        let slot = self.map.entry_ref(key).or_insert_with(|| Slot {
            state: T::default(),
            used: 0,
        });
        slot.used = self.uses;
        slot.state.set_partition(partition);
        &mut slot.state
    }

    /// The state of `key`, if held (not a use: recency and the changed mark stay).
    pub fn get(&self, key: &str) -> Option<&T> {
        self.map.get(key).map(|s| &s.state)
    }

    /// Every key and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.map.iter().map(|(k, s)| (k, &s.state))
    }

    /// Every state.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.map.values().map(|s| &s.state)
    }

    /// Visits every state mutably; those for which `f` returns true are marked changed
    /// (not a use: a timer's visit does not keep a key alive).
    pub fn update_each(&mut self, mut f: impl FnMut(&str, &mut T) -> bool) {
        for (key, slot) in self.map.iter_mut() {
            if f(key, &mut slot.state) && !self.changed.contains(key.as_str()) {
                self.changed.insert(key.clone());
            }
        }
    }

    fn evict_least_recent(&mut self) {
        let keep = self.keep;
        let Some(oldest) = self
            .map
            .iter()
            .filter(|(_, s)| !keep(&s.state))
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(slot) = self.map.remove(&oldest) {
            self.changed.remove(&oldest);
            self.removed.push((slot.state.partition(), oldest));
            self.evicted += 1;
        }
    }
}

impl<T> KeyedState for KeyedMap<T>
where
    T: Default + Partitioned + Serialize + DeserializeOwned,
{
    fn take_changes(&mut self, out: &mut Vec<StateChange>) -> Result<(), UnencodableState> {
        let mut failed: Option<UnencodableState> = None;
        let mut kept = Vec::new();
        for key in self.changed.drain() {
            let Some(slot) = self.map.get(&key) else {
                continue;
            };
            match encode_change(&key, &slot.state) {
                Ok(bytes) => out.push(StateChange {
                    partition: slot.state.partition(),
                    key,
                    bytes: Some(bytes),
                }),
                Err(e) => {
                    failed.get_or_insert(e);
                    kept.push(key);
                }
            }
        }
        self.changed.extend(kept);
        for (partition, key) in self.removed.drain(..) {
            out.push(StateChange {
                partition,
                key,
                bytes: None,
            });
        }
        failed.map_or(Ok(()), Err)
    }

    fn restore(&mut self, partition: i32, key: &str, bytes: &[u8]) -> Result<(), RestoreError> {
        let state: T = decode_partitioned(partition, bytes)?;
        self.uses += 1;
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            self.evict_least_recent();
        }
        self.map.insert(
            key.to_string(),
            Slot {
                state,
                used: self.uses,
            },
        );
        Ok(())
    }

    fn forget(&mut self, key: &str) {
        self.map.remove(key);
        self.changed.remove(key);
    }

    fn drop_partitions(&mut self, partitions: &[i32]) {
        self.map
            .retain(|_, s| !partitions.contains(&s.state.partition()));
        let map = &self.map;
        self.changed.retain(|k| map.contains_key(k));
        self.removed.retain(|(p, _)| !partitions.contains(p));
    }

    fn snapshot(&self, partition: i32) -> Vec<(String, Vec<u8>)> {
        self.map
            .iter()
            .filter(|(_, s)| s.state.partition() == partition)
            .filter_map(|(k, s)| encode(&s.state).map(|b| (k.clone(), b)))
            .collect()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stage::snapshot::TestCount as Count;

    fn keys(changes: &[StateChange]) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = changes
            .iter()
            .map(|c| (c.key.clone(), c.bytes.is_some()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_full_map_evicts_the_least_recently_used_key_with_a_tombstone() {
        let mut m: KeyedMap<Count> = KeyedMap::new(2);
        m.entry("a", 0).n = 1;
        m.entry("b", 1).n = 2;
        m.entry("a", 0).n += 1; // a is now the more recent
        let mut out = Vec::new();
        m.take_changes(&mut out).unwrap();
        assert_eq!(keys(&out), vec![("a".into(), true), ("b".into(), true)]);
        out.clear();
        m.entry("c", 2).n = 3;
        assert_eq!(m.len(), 2);
        assert_eq!(m.evicted(), 1);
        assert!(m.get("b").is_none(), "b was the least recently used");
        assert_eq!(m.get("a").map(|c| c.n), Some(2));
        m.take_changes(&mut out).unwrap();
        assert_eq!(keys(&out), vec![("b".into(), false), ("c".into(), true)]);
        let tombstone = out.iter().find(|c| c.key == "b").unwrap();
        assert_eq!(
            tombstone.partition, 1,
            "the tombstone goes to b's partition"
        );
    }

    #[test]
    fn a_key_to_keep_is_never_evicted() {
        let mut m: KeyedMap<Count> = KeyedMap::new(2).keeping(|c| c.n > 0);
        m.entry("held", 0).n = 1;
        m.entry("idle", 0);
        m.entry("new", 0);
        assert!(m.get("held").is_some(), "a kept key was evicted");
        assert!(m.get("idle").is_none());
        // Only kept keys left: the map grows rather than lose one.
        m.entry("new", 0).n = 1;
        m.entry("newer", 0);
        assert_eq!(m.len(), 3);
        assert_eq!(m.evicted(), 1);
    }

    #[test]
    fn changes_are_taken_once_and_restores_and_partitions_round_trip() {
        let mut m: KeyedMap<Count> = KeyedMap::new(10);
        m.entry("a", 3).n = 7;
        m.entry("b", 4).n = 8;
        let snap = m.snapshot(3);
        assert_eq!(snap.len(), 1);
        let mut out = Vec::new();
        m.take_changes(&mut out).unwrap();
        out.clear();
        m.take_changes(&mut out).unwrap();
        assert!(out.is_empty(), "nothing changed since");
        // Only the visits that say so mark a key changed.
        m.update_each(|k, c| {
            c.n += 1;
            k == "b"
        });
        m.take_changes(&mut out).unwrap();
        assert_eq!(keys(&out), vec![("b".into(), true)]);

        let mut r: KeyedMap<Count> = KeyedMap::new(10);
        r.restore(3, &snap[0].0, &snap[0].1).unwrap();
        assert_eq!(r.get("a"), Some(&Count { n: 7, partition: 3 }));
        assert!(r.restore(3, "x", b"\x01{").is_err());
        r.forget("a");
        assert!(r.is_empty());

        m.drop_partitions(&[4]);
        assert_eq!(m.len(), 1);
        assert!(m.get("b").is_none());
    }
}
