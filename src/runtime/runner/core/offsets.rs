//! The offset book: per input partition, how far the stage has read and what it has
//! committed; the partitions it owns; and those revoked cleanly whose state it keeps in
//! case they come back.

use hashbrown::{Equivalent, HashMap};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;

/// An input partition: (topic, partition).
pub(super) type TopicPartition = (String, i32);

/// An offset about to be committed.
pub(super) type PlannedOffset = (TopicPartition, i64);

/// Looks a [`TopicPartition`] up by `&str` without allocating. It hashes as the tuple
/// does (the topic's text, then the partition), which `Equivalent` requires.
#[derive(Hash)]
struct Lookup<'a>(&'a str, i32);

impl Equivalent<TopicPartition> for Lookup<'_> {
    fn equivalent(&self, key: &TopicPartition) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// See the module docs.
#[derive(Default)]
pub(super) struct OffsetBook {
    /// Offset after the last record read, per assigned partition.
    read_upto: HashMap<TopicPartition, i64>,
    /// Offset last committed synchronously (or in a transaction), per partition.
    committed: HashMap<TopicPartition, i64>,
    /// Input partitions assigned, in the order they came.
    assignment: Vec<TopicPartition>,
    /// Partitions revoked after a successful checkpoint and commit, whose state is kept
    /// until the next assignment (eager rebalancing revokes everything, then hands most
    /// of it back).
    parked: BTreeSet<i32>,
}

impl OffsetBook {
    /// A record at `offset` of (`topic`, `partition`) is handled.
    pub(super) fn read(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.read_upto.get_mut(&Lookup(topic, partition)) {
            Some(upto) => *upto = offset + 1,
            None => {
                self.read_upto
                    .insert((topic.to_string(), partition), offset + 1);
            }
        }
    }

    /// The offset after the last record read from (`topic`, `partition`), if any was.
    pub(super) fn read_upto(&self, topic: &str, partition: i32) -> Option<i64> {
        self.read_upto.get(&Lookup(topic, partition)).copied()
    }

    /// Offsets safe to commit, per partition: after the last record read, but never
    /// past `held(partition)`, the lowest offset the core still holds. Only those that
    /// moved since the last commit.
    pub(super) fn to_commit(
        &self,
        held: impl Fn(i32) -> Option<i64>,
    ) -> (TopicPartitionList, Vec<PlannedOffset>) {
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for ((topic, partition), upto) in &self.read_upto {
            let safe = held(*partition).map_or(*upto, |h| h.min(*upto));
            if self.committed.get(&Lookup(topic, *partition)) == Some(&safe) {
                continue;
            }
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(safe))
                .is_ok()
            {
                planned.push(((topic.clone(), *partition), safe));
            }
        }
        (tpl, planned)
    }

    /// `planned` without the offsets already committed.
    pub(super) fn not_yet_committed(&self, planned: Vec<PlannedOffset>) -> Vec<PlannedOffset> {
        planned
            .into_iter()
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect()
    }

    /// The broker confirmed these commits.
    pub(super) fn committed(&mut self, planned: Vec<PlannedOffset>) {
        self.committed.extend(planned);
    }

    /// What was committed is no longer known for sure (a transaction retried, or
    /// rewound): the next commit sends every offset again.
    pub(super) fn forget_commits(&mut self) {
        self.committed.clear();
    }

    /// The positions were rewound to the last commit: nothing is read since.
    pub(super) fn rewound(&mut self) {
        self.read_upto.clear();
        self.committed.clear();
    }

    /// Input partitions assigned.
    pub(super) fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// `revoked` (with partition numbers `parts`) are gone; `keep` when their state is
    /// kept, parked, in case they come back.
    pub(super) fn revoke(&mut self, revoked: &[TopicPartition], parts: &[i32], keep: bool) {
        if keep {
            self.parked.extend(parts.iter().copied());
        }
        self.assignment.retain(|tp| !revoked.contains(tp));
        self.read_upto.retain(|(_, p), _| !parts.contains(p));
        self.committed.retain(|(_, p), _| !parts.contains(p));
    }

    /// `assigned` (with partition numbers `parts`) are the stage's now. Returns the
    /// parked partitions that did not come back (their state is to be dropped) and the
    /// assigned ones that were not parked (their state is to be restored).
    pub(super) fn assign(
        &mut self,
        assigned: &[TopicPartition],
        parts: &[i32],
    ) -> (Vec<i32>, Vec<i32>) {
        let gone = self
            .parked
            .iter()
            .copied()
            .filter(|p| !parts.contains(p))
            .collect();
        let fresh = parts
            .iter()
            .copied()
            .filter(|p| !self.parked.contains(p))
            .collect();
        self.parked.clear();
        for tp in assigned {
            if !self.assignment.contains(tp) {
                self.assignment.push(tp.clone());
            }
        }
        (gone, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, p: i32) -> TopicPartition {
        (topic.to_string(), p)
    }

    #[test]
    fn commits_only_what_moved_and_never_past_a_held_offset() {
        let mut book = OffsetBook::default();
        book.read("metrics", 0, 9);
        book.read("metrics", 1, 4);
        book.read("metrics", 0, 10);
        let (_, mut planned) = book.to_commit(|p| (p == 1).then_some(3));
        planned.sort();
        assert_eq!(planned, vec![(tp("metrics", 0), 11), (tp("metrics", 1), 3)]);
        book.committed(planned);
        // Nothing moved: nothing to commit.
        assert!(book.to_commit(|p| (p == 1).then_some(3)).1.is_empty());
        book.read("metrics", 1, 5);
        let (_, planned) = book.to_commit(|_| None);
        assert_eq!(planned, vec![(tp("metrics", 1), 6)]);
        assert_eq!(
            book.not_yet_committed(vec![(tp("metrics", 0), 11), (tp("metrics", 1), 6)]),
            vec![(tp("metrics", 1), 6)]
        );
    }

    #[test]
    fn a_clean_revoke_parks_and_the_next_assignment_says_what_to_drop_and_restore() {
        let mut book = OffsetBook::default();
        let all = [tp("metrics", 0), tp("metrics", 1), tp("metrics", 2)];
        assert_eq!(book.assign(&all, &[0, 1, 2]), (vec![], vec![0, 1, 2]));
        book.read("metrics", 2, 7);
        book.revoke(&all, &[0, 1, 2], true);
        assert!(book.assignment().is_empty());
        assert!(book.to_commit(|_| None).1.is_empty());
        // 0 and 2 come back, 1 went elsewhere, 3 is new.
        let back = [tp("metrics", 0), tp("metrics", 2), tp("metrics", 3)];
        assert_eq!(book.assign(&back, &[0, 2, 3]), (vec![1], vec![3]));
        // A revoke that was not clean keeps nothing: everything is restored.
        book.revoke(&back, &[0, 2, 3], false);
        assert_eq!(book.assign(&back, &[0, 2, 3]), (vec![], vec![0, 2, 3]));
    }
}
