//! The per-series state of a stage: a map from series key to state that is looked up
//! once per event without allocating, bounded in size, and snapshotted, restored and
//! dropped per partition.
//!
//! The key of an event is written into a reusable buffer and looked up by reference
//! (`entry_ref`): only a series seen for the first time allocates its key. The hasher is
//! foldhash, several times cheaper than SipHash on short keys; its seed is random per
//! process, so crafted keys cannot be aimed at one bucket chain ahead of time.

use super::snapshot::{decode, encode, Partitioned, RestoreError};
use crate::event::Labels;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use serde::{de::DeserializeOwned, Serialize};

/// Per-series states, keyed by [`super::series_key`], holding at most `max` series.
#[derive(Debug)]
pub struct SeriesTable<S> {
    map: HashMap<String, S>,
    scratch: String,
    max: usize,
}

impl<S> SeriesTable<S> {
    /// An empty table that refuses series beyond `max`.
    pub fn new(max: usize) -> Self {
        SeriesTable {
            map: HashMap::new(),
            scratch: String::new(),
            max,
        }
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No series held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The state of the series of (target, metric, labels), created at its default when
    /// new. `None` when the series is new and the table is full.
    pub fn get_or_create(&mut self, target: &str, metric: &str, labels: &Labels) -> Option<&mut S>
    where
        S: Default,
    {
        super::write_series_key(&mut self.scratch, target, metric, labels);
        let full = self.map.len() >= self.max;
        match self.map.entry_ref(self.scratch.as_str()) {
            EntryRef::Occupied(o) => Some(o.into_mut()),
            EntryRef::Vacant(_) if full => None,
            EntryRef::Vacant(v) => Some(v.insert(S::default())),
        }
    }

    /// The state of a series by its key.
    pub fn get(&self, key: &str) -> Option<&S> {
        self.map.get(key)
    }
}

impl<S: Partitioned> SeriesTable<S> {
    /// Snapshots of every series of `partition`: (key, versioned bytes).
    pub fn snapshot_partition(&self, partition: i32) -> Vec<(String, Vec<u8>)>
    where
        S: Serialize,
    {
        self.map
            .iter()
            .filter(|(_, s)| s.partition() == partition)
            .filter_map(|(k, s)| encode(s).map(|b| (k.clone(), b)))
            .collect()
    }

    /// Restores one series of `partition` from a snapshot. A restored series counts
    /// against the size limit like any other; beyond it the snapshot is refused.
    pub fn restore(&mut self, partition: i32, key: &str, bytes: &[u8]) -> Result<(), RestoreError>
    where
        S: DeserializeOwned,
    {
        let mut state: S = decode(bytes)?;
        state.set_partition(partition);
        if self.map.len() >= self.max && !self.map.contains_key(key) {
            return Err(RestoreError::Full { max: self.max });
        }
        self.map.insert(key.to_string(), state);
        Ok(())
    }

    /// Drops the state of every series of the revoked partitions.
    pub fn drop_partitions(&mut self, revoked: &[i32]) {
        self.map.retain(|_, s| !revoked.contains(&s.partition()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Labels;

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Count {
        n: u32,
        #[serde(skip)]
        partition: i32,
    }

    impl Partitioned for Count {
        fn partition(&self) -> i32 {
            self.partition
        }
        fn set_partition(&mut self, partition: i32) {
            self.partition = partition;
        }
    }

    #[test]
    fn one_state_per_series_bounded_and_per_partition() {
        let mut t: SeriesTable<Count> = SeriesTable::new(2);
        let mut a = Labels::new();
        a.insert("path".into(), "/a".into());
        let b = Labels::new();
        for _ in 0..3 {
            t.get_or_create("svc", "latency", &a).unwrap().n += 1;
        }
        let s = t.get_or_create("svc", "latency", &b).unwrap();
        s.n += 1;
        s.partition = 1;
        assert_eq!(t.len(), 2);
        assert!(t.get_or_create("svc", "cpu", &b).is_none(), "full");
        assert_eq!(
            t.get(&crate::stage::series_key("svc", "latency", &a))
                .map(|s| s.n),
            Some(3)
        );

        let snap = t.snapshot_partition(1);
        assert_eq!(snap.len(), 1);
        t.drop_partitions(&[1]);
        assert_eq!(t.len(), 1);
        t.restore(1, &snap[0].0, &snap[0].1).unwrap();
        assert_eq!(t.get(&snap[0].0), Some(&Count { n: 1, partition: 1 }));
        assert!(matches!(
            t.restore(1, "another", &snap[0].1),
            Err(RestoreError::Full { max: 2 })
        ));
    }
}
