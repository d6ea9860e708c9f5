//! Making what was read durable. At-least-once: checkpoints in three steps that never
//! block the loop. Exactly-once: transactions ([`super::transaction`]). [`Durability`]
//! is which of the two the stage runs and where it is in it.

use super::offsets::PlannedOffset;
use super::sends::{Outgoing, Sent};
use super::Core;
use crate::runtime::runner::RuntimeError;
use crate::stage::snapshot::UnencodableState;
use crate::stage::{Stage, StateChange};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Instant;

/// State bytes a checkpoint sends at a time, the next wave once these are acknowledged.
/// Thousands of changed keys sent at once (5 MB for 2 000 recommender targets) queued
/// the stage's outputs behind them in the producer for 40–60 ms.
const STATE_WAVE_BYTES: usize = 256 * 1024;

/// An at-least-once checkpoint in three steps, each taken when the previous one's sends
/// are acknowledged, so the loop never waits: the outputs sent before it → the state as
/// it was when it began (in waves of [`STATE_WAVE_BYTES`]) → the input offsets as they
/// were when it began. A durable state thus implies durable outputs, and committed
/// offsets a durable state.
pub(super) struct Checkpoint {
    /// The changed state, taken when the checkpoint began.
    changes: Vec<StateChange>,
    /// How many of `changes` are sent.
    sent: usize,
    /// Offsets to commit, planned when the checkpoint began.
    offsets: Vec<PlannedOffset>,
    /// Every send numbered below this must be acknowledged before the next step.
    barrier: u64,
    /// When it began (its duration is the at-least-once commit time).
    began: Instant,
}

/// How the stage makes what it read durable, and where it is.
pub(super) enum Durability {
    /// At-least-once: a checkpoint may be under way.
    Checkpoints(Option<Checkpoint>),
    /// Exactly-once: a transaction may be open.
    Transactions {
        /// A transaction is open.
        open: bool,
    },
}

impl Durability {
    /// True in exactly-once mode.
    pub(super) fn transactional(&self) -> bool {
        matches!(self, Durability::Transactions { .. })
    }

    /// An exactly-once transaction is open.
    pub(super) fn txn_open(&self) -> bool {
        matches!(self, Durability::Transactions { open: true })
    }

    /// Notes that a transaction was opened (`true`) or ended (`false`).
    pub(super) fn set_txn_open(&mut self, now_open: bool) {
        if let Durability::Transactions { open } = self {
            *open = now_open;
        }
    }

    /// An at-least-once checkpoint is under way.
    pub(super) fn checkpoint_pending(&self) -> bool {
        matches!(self, Durability::Checkpoints(Some(_)))
    }

    fn take_checkpoint(&mut self) -> Option<Checkpoint> {
        match self {
            Durability::Checkpoints(c) => c.take(),
            Durability::Transactions { .. } => None,
        }
    }

    fn put_checkpoint(&mut self, c: Checkpoint) {
        if let Durability::Checkpoints(slot) = self {
            *slot = Some(c);
        }
    }

    fn barrier(&self) -> Option<u64> {
        match self {
            Durability::Checkpoints(Some(c)) => Some(c.barrier),
            _ => None,
        }
    }
}

/// The state of every key the core changed since the last call (see
/// [`crate::stage::KeyedState::take_changes`]); nothing for a stateless core.
pub(super) fn state_changes<S: Stage>(
    stage: &mut S,
    out: &mut Vec<StateChange>,
) -> Result<(), UnencodableState> {
    match stage.state() {
        Some(state) => state.take_changes(out),
        None => Ok(()),
    }
}

/// A state that cannot be encoded stops the stage: a checkpoint without it would
/// commit offsets past what the changelog holds.
fn unencodable(e: UnencodableState) -> RuntimeError {
    RuntimeError::Encode {
        what: "a state for the changelog",
        detail: e.to_string(),
    }
}

impl<S: Stage> Core<S> {
    /// The commit interval has passed: exactly-once commits its transaction now;
    /// at-least-once begins a checkpoint that [`Core::advance_checkpoint`] completes
    /// without blocking (unless one is still under way).
    pub(in crate::runtime::runner) fn commit_due<C, K>(
        &mut self,
        consumer: &K,
    ) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if self.durability.transactional() {
            return self.commit_transaction(consumer);
        }
        if !self.durability.checkpoint_pending() {
            let mut changes = Vec::new();
            if self.restorer.is_some() {
                let started = Instant::now();
                state_changes(&mut self.stage, &mut changes).map_err(unencodable)?;
                tracing::debug!(
                    stage = self.name,
                    keys = changes.len(),
                    bytes = changes.iter().map(|c| c.bytes.as_ref().map_or(0, Vec::len)).sum::<usize>(),
                    encoded_in = ?started.elapsed(),
                    "checkpoint began"
                );
            }
            let (_, offsets) = self.offsets_to_commit();
            self.durability.put_checkpoint(Checkpoint {
                changes,
                sent: 0,
                offsets,
                barrier: self.sends.next_seq(),
                began: Instant::now(),
            });
        }
        self.advance_checkpoint(consumer)
    }

    /// Takes the next step of the checkpoint under way, if its barrier is passed.
    pub(in crate::runtime::runner) fn advance_checkpoint<C, K>(
        &mut self,
        consumer: &K,
    ) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let Some(barrier) = self.durability.barrier() else {
            return Ok(());
        };
        if !self.sends.acknowledged_below(barrier) {
            return Ok(());
        }
        let Some(mut c) = self.durability.take_checkpoint() else {
            return Ok(());
        };
        if c.sent < c.changes.len() {
            // The next wave of state.
            let (mut end, mut bytes) = (c.sent, 0);
            while end < c.changes.len() && (end == c.sent || bytes < STATE_WAVE_BYTES) {
                let change = &c.changes[end];
                bytes += change.key.len() + change.bytes.as_ref().map_or(0, Vec::len);
                end += 1;
            }
            self.send_state(&c.changes[c.sent..end])?;
            c.sent = end;
            c.barrier = self.sends.next_seq();
            self.durability.put_checkpoint(c);
            return Ok(());
        }
        // The asynchronous commit's answer is not timed (librdkafka reports it to no
        // callback here): the checkpoint is, from its first state write to its offsets
        // handed to the broker, with every write acknowledged.
        self.stats
            .commit_time(c.began.elapsed().as_secs_f64(), true);
        // Asynchronously: a commit is a broker round trip (5–30 ms on a busy machine),
        // which stalled every output of the stage each commit interval.
        self.commit_offsets(consumer, c.offsets, CommitMode::Async);
        Ok(())
    }

    /// Offsets safe to commit: read, and not held by the core.
    pub(super) fn offsets_to_commit(&self) -> (TopicPartitionList, Vec<PlannedOffset>) {
        self.offsets.to_commit(|p| self.stage.held_offset(p))
    }

    /// Commits planned offsets. `Async` returns once the commit is queued (its outcome
    /// is logged by the consumer's commit callback) and is not recorded as committed: the
    /// next checkpoint, or the synchronous commit before partitions are revoked, commits
    /// the same offsets again rather than trust a commit that may still fail.
    fn commit_offsets<C, K>(&mut self, consumer: &K, planned: Vec<PlannedOffset>, mode: CommitMode)
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let planned = self.offsets.not_yet_committed(planned);
        if planned.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &planned {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        let started = Instant::now();
        let result = consumer.commit(&tpl, mode);
        if matches!(mode, CommitMode::Sync) {
            self.stats
                .commit_time(started.elapsed().as_secs_f64(), result.is_ok());
        }
        match result {
            Ok(()) => {
                self.stats.committed();
                if matches!(mode, CommitMode::Sync) {
                    self.offsets.committed(planned);
                }
            }
            // During a rebalance commits fail; the records are re-processed by the next
            // owner or committed with the next checkpoint.
            Err(e) => {
                tracing::warn!(stage = self.name, error = %e, "offset commit failed; will retry with the next checkpoint")
            }
        }
    }

    /// Makes everything read so far durable: at-least-once flushes the outputs, then
    /// writes the changed state and commits the offsets; exactly-once writes the state
    /// and commits outputs, state and offsets in one transaction.
    pub(in crate::runtime::runner) fn commit<C, K>(
        &mut self,
        consumer: &K,
    ) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if self.durability.transactional() {
            return self.commit_transaction(consumer);
        }
        // Outputs first: state that is durable implies outputs that are. A checkpoint
        // under way is folded in: its older state goes out before the newer.
        self.flush()?;
        if let Some(held) = self.durability.take_checkpoint() {
            self.send_state(&held.changes[held.sent..])?;
        }
        self.write_state()?;
        self.flush()?;
        let (_, planned) = self.offsets_to_commit();
        self.commit_offsets(consumer, planned, CommitMode::Sync);
        Ok(())
    }

    /// Sends the state of every key changed since the last checkpoint to its
    /// changelog partition.
    pub(super) fn write_state(&mut self) -> Result<(), RuntimeError> {
        if self.restorer.is_none() {
            return Ok(());
        }
        state_changes(&mut self.stage, &mut self.changes).map_err(unencodable)?;
        let changes = std::mem::take(&mut self.changes);
        self.send_state(&changes)?;
        self.changes = changes;
        self.changes.clear();
        Ok(())
    }

    /// Sends state changes to their changelog partitions.
    fn send_state(&mut self, changes: &[StateChange]) -> Result<(), RuntimeError> {
        let Some(topic) = self.restorer.as_ref().map(|r| r.topic().to_string()) else {
            return Ok(());
        };
        for c in changes {
            self.send(Outgoing {
                topic: &topic,
                partition: Some(c.partition),
                key: Some(c.key.as_bytes()),
                payload: c.bytes.as_deref(),
                what: Sent::State,
            })?;
        }
        self.stats.state_writes(changes.len());
        Ok(())
    }
}
