//! Input partitions the consumer owns but librdkafka never started fetching.
//!
//! librdkafka (up to 2.12 at least, issue #5586) leaves an assigned partition unfetched
//! for good when the broker refuses the query for its committed offset with "not
//! coordinator", as a broker does whose coordinator role just moved: the instance stays
//! in the group, owns the partition and reads nothing from it until it restarts. The
//! watch reads that from librdkafka's statistics (the partition is wanted, its fetcher
//! is in state `none`, and the group is settled), and names the partitions seen so
//! several intervals in a row; the runner then assigns them again (`Core::refetch`).

use std::collections::HashMap;

/// Statistics intervals (5 s each) a partition must be seen owned and unfetched, with
/// the group settled, before it counts as stalled. A healthy assignment starts its
/// fetchers within a broker round trip.
pub(super) const STALLED_AFTER: u32 = 3;

/// One input partition as librdkafka's statistics describe it.
pub(super) struct PartitionState<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    /// The consumer owns it.
    pub(super) desired: bool,
    /// Its fetcher's state: `none` until it is started.
    pub(super) fetch_state: &'a str,
}

/// See the module docs.
#[derive(Default)]
pub(super) struct StallWatch {
    /// Consecutive statistics in which each partition was owned and unfetched.
    unfetched: HashMap<(String, i32), u32>,
}

impl StallWatch {
    /// Takes one statistics snapshot. `settled` is true when the group has a
    /// coordinator and no rebalance is under way (a partition waits for either without
    /// being stalled). Returns the partitions stalled now; each is named again every
    /// [`STALLED_AFTER`] intervals for as long as it stays so.
    pub(super) fn observe<'a>(
        &mut self,
        settled: bool,
        partitions: impl IntoIterator<Item = PartitionState<'a>>,
    ) -> Vec<(String, i32)> {
        if !settled {
            self.unfetched.clear();
            return Vec::new();
        }
        let mut seen = HashMap::with_capacity(self.unfetched.len());
        let mut stalled = Vec::new();
        for p in partitions {
            if p.partition < 0 || !p.desired || p.fetch_state != "none" {
                continue;
            }
            let key = (p.topic.to_string(), p.partition);
            let count = self.unfetched.get(&key).copied().unwrap_or(0) + 1;
            if count >= STALLED_AFTER {
                stalled.push(key.clone());
                seen.insert(key, 0);
            } else {
                seen.insert(key, count);
            }
        }
        self.unfetched = seen;
        stalled.sort();
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, desired: bool, fetch_state: &str) -> PartitionState<'_> {
        PartitionState {
            topic: "metrics",
            partition,
            desired,
            fetch_state,
        }
    }

    #[test]
    fn a_partition_owned_and_unfetched_for_three_settled_intervals_is_stalled() {
        let mut watch = StallWatch::default();
        // (settled, [(partition, desired, fetch state)], stalled after this snapshot)
        type Snapshot = (bool, &'static [(i32, bool, &'static str)], &'static [i32]);
        let table: &[Snapshot] = &[
            // Partition 0 is fetched; 1 never starts; 2 is not ours; 3 starts late.
            (
                true,
                &[
                    (0, true, "active"),
                    (1, true, "none"),
                    (2, false, "none"),
                    (3, true, "none"),
                ],
                &[],
            ),
            (
                true,
                &[
                    (0, true, "active"),
                    (1, true, "none"),
                    (2, false, "none"),
                    (3, true, "offset-query"),
                ],
                &[],
            ),
            (
                true,
                &[
                    (0, true, "active"),
                    (1, true, "none"),
                    (2, false, "none"),
                    (3, true, "active"),
                ],
                &[1],
            ),
            // Named again only after as many intervals more.
            (true, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[1]),
            // A rebalance or a missing coordinator starts the count again.
            (true, &[(1, true, "none")], &[]),
            (false, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[1]),
            // Started at last: forgotten.
            (true, &[(1, true, "active")], &[]),
            (true, &[(1, true, "none")], &[]),
            (true, &[(1, true, "none")], &[]),
            (true, &[(-1, true, "none")], &[]),
        ];
        for (i, (settled, parts, want)) in table.iter().enumerate() {
            let got = watch.observe(*settled, parts.iter().map(|(p, d, s)| part(*p, *d, s)));
            let want: Vec<(String, i32)> = want.iter().map(|p| ("metrics".into(), *p)).collect();
            assert_eq!(got, want, "snapshot {i}");
        }
    }
}
