//! The per-series state of a stage: a map from series key to state that is looked up
//! once per event without allocating, bounded in size, and snapshotted, restored and
//! dropped per partition.
//!
//! Bounded: at most `max` series. A series not seen for `ttl` of event time (measured
//! against the newest event seen) is idle and evicted in a sweep once per quarter of the
//! TTL, so departed pods and renamed series do not hold memory for ever. The TTL is long
//! (a week by default), so a series that pauses (an agent down overnight, a job that
//! reports only while it runs) keeps what its detector and forecaster learnt. When a new
//! series finds the table full, series idle for [`PRESSURE_IDLE_MS`] (or the TTL, if
//! shorter) are evicted to make room, so a fleet that renames its pods at every deploy
//! does not fill the table with a week of departed ones. Evictions are counted.
//!
//! The clock idleness is measured against never runs ahead of the wall clock (when the
//! caller gives it, see [`SeriesTable::bound_clock`]) by more than [`CLOCK_SKEW_MS`]: one
//! record stamped hours ahead by a skewed agent clock moves only its own series, not the
//! partition's clock, so it cannot make every other series look idle.
//!
//! The key of an event is written into a reusable buffer and looked up by reference
//! (`entry_ref`): only a series seen for the first time allocates its key. The hasher is
//! foldhash, several times cheaper than SipHash on short keys; its seed is random per
//! process, so crafted keys cannot be aimed at one bucket chain ahead of time.

use super::snapshot::{decode_partitioned, encode, Partitioned, RestoreError};
use crate::event::Labels;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use serde::{de::DeserializeOwned, Serialize};

/// Per-series states, keyed by [`super::series_key`], holding at most `max` series.
#[derive(Debug)]
pub struct SeriesTable<S> {
    /// Boxed: a hash table keeps spare buckets (up to half of them at a million
    /// series), and an inline state of several hundred bytes in each would double the
    /// memory per series; a spare bucket of pointers costs 32 bytes.
    map: HashMap<String, Box<Slot<S>>>,
    scratch: String,
    max: usize,
    ttl_ms: i64,
    newest_ms: i64,
    /// Newest event time per partition: a series is idle against its own partition's
    /// clock, so a partition that lags (a backlog after a failover) loses nothing.
    newest_by_partition: Vec<(i32, i64)>,
    last_sweep_ms: i64,
    /// The wall clock plus [`CLOCK_SKEW_MS`]: no clock moves past it (`i64::MAX`: no
    /// wall clock given, as in a replay of history).
    clock_limit_ms: i64,
    evicted: u64,
    /// Keys evicted since the last [`SeriesTable::take_changes`], for changelog
    /// tombstones; at most [`MAX_PENDING_REMOVALS`].
    removed: Vec<(i32, String)>,
}

/// When the table is full, a series idle this long (event time) makes room for a new
/// one: six hours, the TTL before it became a week.
pub const PRESSURE_IDLE_MS: i64 = 6 * 3_600_000;

/// Most evicted keys remembered for tombstones between two checkpoints. Beyond it a
/// tombstone is skipped: the key's last state stays in the changelog and is evicted
/// again, by its TTL, after the next restore.
pub const MAX_PENDING_REMOVALS: usize = 100_000;

/// How far ahead of the wall clock an event time may move the table's clocks: agents'
/// clocks run a little ahead; beyond this a timestamp is an outlier for the clocks (the
/// event itself is still processed).
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The newest event time seen on `partition` (`i64::MIN`: none yet).
fn newest_of(clocks: &[(i32, i64)], partition: i32) -> i64 {
    clocks
        .iter()
        .find(|(p, _)| *p == partition)
        .map_or(i64::MIN, |(_, t)| *t)
}

/// `seen_ms` of a series restored before its partition saw any event.
const RESTORED: i64 = i64::MIN;

/// A series' state, the newest event time it was seen at, and whether it changed
/// since the last checkpoint — that flag in the lowest bit of the time (a millisecond
/// does not matter to a TTL of hours; a separate `bool` would cost 8 bytes per series
/// in padding).
#[derive(Debug)]
struct Slot<S> {
    state: S,
    seen_and_dirty: i64,
}

impl<S> Slot<S> {
    fn new(state: S, seen_ms: i64, dirty: bool) -> Self {
        Slot {
            state,
            seen_and_dirty: (seen_ms & !1) | i64::from(dirty),
        }
    }
    fn seen_ms(&self) -> i64 {
        self.seen_and_dirty & !1
    }
    fn dirty(&self) -> bool {
        self.seen_and_dirty & 1 == 1
    }
    /// Seen at `event_ms` and changed.
    fn touch(&mut self, event_ms: i64) {
        self.seen_and_dirty = (self.seen_ms().max(event_ms) & !1) | 1;
    }
    fn set_seen(&mut self, seen_ms: i64) {
        self.seen_and_dirty = (seen_ms & !1) | (self.seen_and_dirty & 1);
    }
    fn clean(&mut self) {
        self.seen_and_dirty &= !1;
    }
}

impl<S> SeriesTable<S> {
    /// An empty table that holds at most `max` series and evicts those idle for
    /// longer than `ttl_ms` of event time (0: never).
    pub fn new(max: usize, ttl_ms: i64) -> Self {
        SeriesTable {
            map: HashMap::new(),
            scratch: String::new(),
            max,
            ttl_ms,
            newest_ms: i64::MIN,
            newest_by_partition: Vec::new(),
            last_sweep_ms: i64::MIN,
            clock_limit_ms: i64::MAX,
            evicted: 0,
            removed: Vec::new(),
        }
    }

    /// Gives the wall clock (ms since the epoch): from now on no clock of the table moves
    /// past `now_ms` + [`CLOCK_SKEW_MS`]. The stage calls it with each record's arrival
    /// time; without it (a replay of history) event time alone rules.
    pub fn bound_clock(&mut self, now_ms: i64) {
        self.clock_limit_ms = now_ms.saturating_add(CLOCK_SKEW_MS);
    }

    /// Series evicted for being idle, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drops the series idle for longer than the TTL.
    fn sweep(&mut self)
    where
        S: Partitioned,
    {
        self.sweep_idle(self.ttl_ms);
    }

    /// Drops the series idle for longer than `ttl` ms.
    fn sweep_idle(&mut self, ttl: i64)
    where
        S: Partitioned,
    {
        if ttl <= 0 || self.newest_ms == i64::MIN {
            return;
        }
        self.last_sweep_ms = self.newest_ms;
        let before = self.map.len();
        let clocks = &self.newest_by_partition;
        let removed = &mut self.removed;
        self.map.retain(|key, slot| {
            let newest = newest_of(clocks, slot.state.partition());
            if slot.seen_ms() == RESTORED && newest != i64::MIN {
                // Restored before its partition saw an event: its age starts now.
                slot.set_seen(newest);
            }
            let keep = slot.seen_ms() >= newest.saturating_sub(ttl);
            if !keep && removed.len() < MAX_PENDING_REMOVALS {
                removed.push((slot.state.partition(), key.clone()));
            }
            keep
        });
        self.evicted += (before - self.map.len()) as u64;
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No series held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The state of the series of (target, metric, labels) for an event at `event_ms`,
    /// created at its default when new. `None` when the series is new and the table is
    /// full even after evicting idle series.
    pub fn get_or_create(
        &mut self,
        target: &str,
        metric: &str,
        labels: &Labels,
        event_ms: i64,
        partition: i32,
    ) -> Option<&mut S>
    where
        S: Default + Partitioned,
    {
        let clock_ms = event_ms.min(self.clock_limit_ms);
        self.newest_ms = self.newest_ms.max(clock_ms);
        match self
            .newest_by_partition
            .iter_mut()
            .find(|(p, _)| *p == partition)
        {
            Some((_, newest)) => *newest = (*newest).max(clock_ms),
            None => self.newest_by_partition.push((partition, clock_ms)),
        }
        if self.ttl_ms > 0 && self.newest_ms >= self.last_sweep_ms.saturating_add(self.ttl_ms / 4) {
            self.sweep();
        }
        super::write_series_key(&mut self.scratch, target, metric, labels);
        // (The extra lookup runs only when full and event time moved since the last sweep.)
        if self.map.len() >= self.max
            && self.newest_ms > self.last_sweep_ms
            && !self.map.contains_key(self.scratch.as_str())
        {
            // Full: make room from idle series (at most one sweep per newest event time),
            // by the TTL and then, if that freed nothing, by the shorter idle time.
            self.sweep();
            if self.map.len() >= self.max && self.ttl_ms > 0 {
                self.sweep_idle(self.ttl_ms.min(PRESSURE_IDLE_MS));
            }
        }
        let full = self.map.len() >= self.max;
        let slot = match self.map.entry_ref(self.scratch.as_str()) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(_) if full => return None,
            EntryRef::Vacant(v) => v.insert(Box::new(Slot::new(S::default(), event_ms, true))),
        };
        slot.touch(event_ms);
        Some(&mut slot.state)
    }

    /// The state of a series by its key.
    pub fn get(&self, key: &str) -> Option<&S> {
        self.map.get(key).map(|slot| &slot.state)
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
            .filter(|(_, slot)| slot.state.partition() == partition)
            .filter_map(|(k, slot)| encode(&slot.state).map(|b| (k.clone(), b)))
            .collect()
    }

    /// Restores one series of `partition` from a snapshot. A restored series counts
    /// against the size limit like any other; beyond it the snapshot is refused.
    pub fn restore(&mut self, partition: i32, key: &str, bytes: &[u8]) -> Result<(), RestoreError>
    where
        S: DeserializeOwned,
    {
        // Refused before decoding: a long changelog past the limit costs no parsing.
        if self.map.len() >= self.max && !self.map.contains_key(key) {
            return Err(RestoreError::Full { max: self.max });
        }
        let state: S = decode_partitioned(partition, bytes)?;
        // A restored series counts as seen now: it gets a full TTL to show up again.
        let newest = newest_of(&self.newest_by_partition, partition);
        let seen_ms = if newest == i64::MIN { RESTORED } else { newest };
        self.map
            .insert(key.to_string(), Box::new(Slot::new(state, seen_ms, false)));
        Ok(())
    }

    /// Forgets one series (its changelog entry was a tombstone).
    pub fn forget(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Appends the state of every series changed since the last call, and a tombstone
    /// for every series evicted since, to `out`; marks them clean. A state that cannot
    /// be encoded stays dirty, and the first such is returned (the runner stops on it).
    pub fn take_changes(
        &mut self,
        out: &mut Vec<super::StateChange>,
    ) -> Result<(), super::snapshot::UnencodableState>
    where
        S: Serialize,
    {
        let mut failed = None;
        for (key, slot) in self.map.iter_mut().filter(|(_, s)| s.dirty()) {
            match super::snapshot::encode_change(key, &slot.state) {
                Ok(bytes) => {
                    slot.clean();
                    out.push(super::StateChange {
                        partition: slot.state.partition(),
                        key: key.clone(),
                        bytes: Some(bytes),
                    });
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        for (partition, key) in self.removed.drain(..) {
            out.push(super::StateChange {
                partition,
                key,
                bytes: None,
            });
        }
        failed.map_or(Ok(()), Err)
    }

    /// Drops the state of every series of the revoked partitions.
    pub fn drop_partitions(&mut self, revoked: &[i32]) {
        self.map
            .retain(|_, slot| !revoked.contains(&slot.state.partition()));
        self.removed.retain(|(p, _)| !revoked.contains(p));
        self.newest_by_partition
            .retain(|(p, _)| !revoked.contains(p));
    }
}

impl<S> super::keyed::KeyedState for SeriesTable<S>
where
    S: Partitioned + Serialize + DeserializeOwned,
{
    fn take_changes(
        &mut self,
        out: &mut Vec<super::StateChange>,
    ) -> Result<(), super::snapshot::UnencodableState> {
        SeriesTable::take_changes(self, out)
    }

    fn restore(&mut self, partition: i32, key: &str, bytes: &[u8]) -> Result<(), RestoreError> {
        SeriesTable::restore(self, partition, key, bytes)
    }

    fn forget(&mut self, key: &str) {
        SeriesTable::forget(self, key);
    }

    fn drop_partitions(&mut self, partitions: &[i32]) {
        SeriesTable::drop_partitions(self, partitions);
    }

    fn snapshot(&self, partition: i32) -> Vec<(String, Vec<u8>)> {
        self.snapshot_partition(partition)
    }

    fn len(&self) -> usize {
        SeriesTable::len(self)
    }

    fn evicted(&self) -> u64 {
        SeriesTable::evicted(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Labels;

    use crate::stage::snapshot::TestCount as Count;

    #[test]
    fn one_state_per_series_bounded_and_per_partition() {
        let mut t: SeriesTable<Count> = SeriesTable::new(2, 0);
        let mut a = Labels::new();
        a.insert("path".into(), "/a".into());
        let b = Labels::new();
        for _ in 0..3 {
            t.get_or_create("svc", "latency", &a, 0, 0).unwrap().n += 1;
        }
        let s = t.get_or_create("svc", "latency", &b, 0, 0).unwrap();
        s.n += 1;
        s.partition = 1;
        assert_eq!(t.len(), 2);
        assert!(t.get_or_create("svc", "cpu", &b, 0, 0).is_none(), "full");
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

    #[test]
    fn a_lagging_partition_keeps_its_series() {
        let labels = Labels::new();
        let mut t: SeriesTable<Count> = SeriesTable::new(10, 100);
        t.get_or_create("slow", "m", &labels, 0, 0).unwrap();
        // Partition 1 runs far ahead (a backlog on partition 0, say): nothing of
        // partition 0 is idle by its own clock.
        for ts in (0..=1_000).step_by(10) {
            let s = t.get_or_create("fast", "m", &labels, ts, 1).unwrap();
            s.partition = 1;
        }
        assert_eq!((t.len(), t.evicted()), (2, 0));
        // Once partition 0's own clock moves past the TTL, its idle series goes.
        t.get_or_create("other", "m", &labels, 500, 0).unwrap();
        t.get_or_create("fast", "m", &labels, 2_000, 1).unwrap();
        assert!(t
            .get(&crate::stage::series_key("slow", "m", &labels))
            .is_none());
    }

    #[test]
    fn changes_are_taken_once_and_evictions_become_tombstones() {
        let labels = Labels::new();
        let mut t: SeriesTable<Count> = SeriesTable::new(10, 100);
        t.get_or_create("a", "m", &labels, 0, 0).unwrap().n = 1;
        let b = t.get_or_create("b", "m", &labels, 1, 0).unwrap();
        b.partition = 2;
        let mut out = Vec::new();
        t.take_changes(&mut out).unwrap();
        out.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].partition, out[1].partition), (0, 2));
        assert_eq!(
            super::super::snapshot::decode::<Count>(out[0].bytes.as_deref().unwrap())
                .unwrap()
                .n,
            1
        );
        // Nothing changed since: nothing to write.
        out.clear();
        t.take_changes(&mut out).unwrap();
        assert!(out.is_empty());
        // "b" is touched; "a" ages out (its tombstone goes to partition 0).
        for ts in [60, 120, 180] {
            t.get_or_create("b", "m", &labels, ts, 0).unwrap();
        }
        t.take_changes(&mut out).unwrap();
        let a_key = crate::stage::series_key("a", "m", &labels);
        let b_key = crate::stage::series_key("b", "m", &labels);
        assert!(out.contains(&crate::stage::StateChange {
            partition: 0,
            key: a_key.clone(),
            bytes: None
        }));
        assert!(out.iter().any(|c| c.key == b_key && c.bytes.is_some()));
        assert_eq!(out.len(), 2);
        // A restored series is clean; forgetting removes it.
        let bytes = encode(&Count { n: 7, partition: 0 }).unwrap();
        t.restore(3, "r", &bytes).unwrap();
        out.clear();
        t.take_changes(&mut out).unwrap();
        assert!(out.is_empty());
        t.forget("r");
        assert!(t.get("r").is_none());
    }

    #[test]
    fn idle_series_are_evicted_to_make_room_and_by_age() {
        let labels = Labels::new();
        let mut t: SeriesTable<Count> = SeriesTable::new(2, 100);
        t.get_or_create("a", "m", &labels, 0, 0).unwrap();
        t.get_or_create("b", "m", &labels, 20, 0).unwrap();
        t.get_or_create("b", "m", &labels, 90, 0).unwrap();
        // Full; "a" has been idle for 110 > 100 when "c" comes at 110: it makes room.
        assert!(t.get_or_create("c", "m", &labels, 110, 0).is_some());
        assert_eq!((t.len(), t.evicted()), (2, 1));
        assert!(t
            .get(&crate::stage::series_key("a", "m", &labels))
            .is_none());
        // Nothing idle: a new series is refused.
        assert!(t.get_or_create("d", "m", &labels, 120, 0).is_none());
        // Sweeps by age, without pressure, once per quarter TTL.
        let mut u: SeriesTable<Count> = SeriesTable::new(100, 100);
        for i in 0..10 {
            u.get_or_create(&format!("s{i}"), "m", &labels, 0, 0)
                .unwrap();
        }
        for ts in (0..=200).step_by(10) {
            u.get_or_create("alive", "m", &labels, ts, 0).unwrap();
        }
        assert_eq!((u.len(), u.evicted()), (1, 10));
        // A series restored into a fresh table is not evicted by the first event's sweep.
        let snap = u.snapshot_partition(0);
        let mut v: SeriesTable<Count> = SeriesTable::new(100, 100);
        v.restore(0, &snap[0].0, &snap[0].1).unwrap();
        v.get_or_create("other", "m", &labels, 1_000_000, 0)
            .unwrap();
        assert_eq!((v.len(), v.evicted()), (2, 0));
    }

    #[test]
    fn a_paused_series_keeps_its_state_unless_the_table_needs_the_room() {
        let labels = Labels::new();
        let hour = 3_600_000;
        let week = 7 * 24 * hour;
        let mut t: SeriesTable<Count> = SeriesTable::new(2, week);
        t.get_or_create("paused", "m", &labels, 0, 0).unwrap().n = 7;
        // Another series reports for two days; the paused one is kept.
        for h in 0..48 {
            t.get_or_create("busy", "m", &labels, h * hour, 0).unwrap();
        }
        let paused = crate::stage::series_key("paused", "m", &labels);
        assert_eq!(t.get(&paused).map(|c| c.n), Some(7));
        assert_eq!(t.evicted(), 0);
        // Full, a new series comes: the paused one (idle 47 h, past the 6 h of pressure,
        // short of the week) makes room.
        assert!(t.get_or_create("new", "m", &labels, 48 * hour, 0).is_some());
        assert!(t.get(&paused).is_none());
        assert_eq!((t.len(), t.evicted()), (2, 1));
        // Both left were seen within 6 h: the next new series is refused.
        assert!(t
            .get_or_create("another", "m", &labels, 49 * hour, 0)
            .is_none());
    }

    #[test]
    fn one_timestamp_far_ahead_of_the_wall_clock_evicts_nothing() {
        let labels = Labels::new();
        let hour = 3_600_000;
        let now = 1_700_000_000_000;
        let run = |bounded: bool| {
            let mut t: SeriesTable<Count> = SeriesTable::new(1000, 6 * hour);
            for minute in 0..10 {
                let ts = now + minute * 60_000;
                if bounded {
                    t.bound_clock(ts);
                }
                for i in 0..200 {
                    t.get_or_create(&format!("s{i}"), "m", &labels, ts, 0)
                        .unwrap();
                }
                // One agent's clock is 23 hours ahead.
                t.get_or_create("skewed", "m", &labels, ts + 23 * hour, 0)
                    .unwrap();
            }
            (t.len(), t.evicted())
        };
        assert_eq!(run(true), (201, 0));
        // Without the wall clock (a replay of history) event time alone rules: the
        // record 23 h ahead makes the live series look idle. This is what the bound
        // prevents in a stage.
        assert_eq!(run(false).1, 200);
    }
}
