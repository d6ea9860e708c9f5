//! The runner's state and everything done under its lock: decoding, the core's
//! processing, sends, checkpoints, commits, transactions, and what happens when
//! partitions come and go.
//!
//! The rebalance callbacks of the consumer need the same state as the loop (a revoke
//! must checkpoint and commit before the partitions move), so it lives behind one
//! mutex. The loop never holds the lock while it waits for the consumer, so a callback
//! always finds it free.

mod transaction;

use super::restore::StateRestorer;
use super::StageProducer;
use super::{Guarantee, RunReport, RunnerConfig, RuntimeError};
use crate::event::{encode, DeadLetter};
use crate::runtime::Shutdown;
use crate::stage::{Keyed, RecordMeta, Rejection, Stage, StageInput, StateChange};
use crate::telemetry;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// What an in-flight send carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Output,
    DeadLetter,
    State,
}

/// An offset about to be committed: ((topic, partition), offset).
type PlannedOffset = ((String, i32), i64);

/// An at-least-once checkpoint in three steps, each taken when the previous one's sends
/// are acknowledged, so the loop never waits: the outputs sent before it → the state as
/// it was when it began (in waves of [`STATE_WAVE_BYTES`]) → the input offsets as they
/// were when it began. A durable state thus implies durable outputs, and committed
/// offsets a durable state.
struct PendingCheckpoint {
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

/// State bytes a checkpoint sends at a time, the next wave once these are acknowledged.
/// Thousands of changed keys sent at once (5 MB for 2 000 recommender targets) queued
/// the stage's outputs behind them in the producer for 40–60 ms.
const STATE_WAVE_BYTES: usize = 256 * 1024;

/// Longest a commit, a flush or a transaction call may block.
const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest an exactly-once send waits for room in the producer's queue: a transaction's
/// records must be delivered within its timeout anyway (its message.timeout.ms). Past
/// it the send fails and the transaction is recovered from, instead of the stage
/// waiting, deaf, inside a call for as long as the broker is away.
const TXN_QUEUE_WAIT: Duration = Duration::from_secs(15);

/// Deliveries waiting this long without any acknowledgement make the stage report itself
/// unhealthy (`perfpilot_healthy` 0, one log line) until they move again.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(10);

pub(super) struct Core<S: Stage> {
    pub(super) stage: S,
    pub(super) cfg: RunnerConfig,
    pub(super) name: &'static str,
    /// Per-record metric handles.
    metrics: telemetry::RecordMetrics,
    producer: StageProducer,
    /// What the producer was made from: exactly-once recovery makes a new one when the
    /// broker fenced the old one's epoch.
    producer_config: ClientConfig,
    /// A failed exactly-once transaction being recovered from; reading waits for it.
    recovery: Option<transaction::Recovery>,
    /// When the producer was last replaced (exactly-once recovery), within a window.
    renewals: Vec<Instant>,
    restorer: Option<StateRestorer>,
    outputs: Vec<S::Output>,
    changes: Vec<StateChange>,
    /// Sends not yet acknowledged, with their sequence numbers.
    inflight: Vec<(DeliveryFuture, Sent, u64)>,
    /// Sequence number of the next send.
    next_seq: u64,
    /// An at-least-once checkpoint under way (it never blocks the loop).
    checkpoint: Option<PendingCheckpoint>,
    /// Offset after the last record read, per (topic, partition), for assigned partitions.
    read_upto: HashMap<(String, i32), i64>,
    committed: HashMap<(String, i32), i64>,
    /// Input partitions assigned, by topic.
    assignment: Vec<(String, i32)>,
    /// Partitions revoked after a successful checkpoint and commit whose state is kept
    /// until the next assignment, in case they come back (eager rebalancing revokes
    /// everything, then hands most of it back).
    parked: BTreeSet<i32>,
    /// An exactly-once transaction is open.
    txn_open: bool,
    /// When a delivery was last acknowledged, or nothing was waiting.
    last_delivery_progress: Instant,
    /// Deliveries have been waiting longer than [`UNHEALTHY_AFTER`].
    waiting_for_broker: bool,
    /// A failure seen inside a rebalance callback, returned by the loop.
    pub(super) failure: Option<RuntimeError>,
    /// The stop signal: a send waiting for room in a full queue gives up once it is
    /// given (after the shutdown deadline), so a stage asked to stop does stop.
    shutdown: Shutdown,

    pub(super) report: RunReport,
}

impl<S: Stage> Core<S> {
    pub(super) fn new(
        stage: S,
        cfg: RunnerConfig,
        producer: StageProducer,
        producer_config: ClientConfig,
        restorer: Option<StateRestorer>,
        shutdown: Shutdown,
    ) -> Self {
        telemetry::healthy(stage.name(), true);
        Core {
            name: stage.name(),
            metrics: telemetry::RecordMetrics::new(stage.name()),
            stage,
            cfg,
            producer,
            producer_config,
            recovery: None,
            renewals: Vec::new(),
            restorer,
            outputs: Vec::new(),
            changes: Vec::new(),
            inflight: Vec::new(),
            next_seq: 0,
            checkpoint: None,
            read_upto: HashMap::new(),
            committed: HashMap::new(),
            assignment: Vec::new(),
            parked: BTreeSet::new(),
            txn_open: false,
            last_delivery_progress: Instant::now(),
            waiting_for_broker: false,
            failure: None,
            shutdown,
            report: RunReport::default(),
        }
    }

    fn exactly_once(&self) -> bool {
        self.cfg.guarantee == Guarantee::ExactlyOnce
    }

    /// Opens a transaction if none is (exactly-once only).
    fn ensure_txn(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once() && !self.txn_open {
            self.producer
                .begin_transaction()
                .map_err(RuntimeError::Transaction)?;
            self.txn_open = true;
        }
        Ok(())
    }

    /// Handles one record from the consumer. `Ok(false)` when the consumer reported an
    /// error instead (the caller backs off).
    pub(super) fn handle(
        &mut self,
        m: Result<BorrowedMessage<'_>, KafkaError>,
    ) -> Result<bool, RuntimeError> {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                // Consumer errors are reported by librdkafka and retried internally.
                tracing::warn!(stage = self.name, error = %e, "consumer error");
                return Ok(false);
            }
        };
        self.ensure_txn()?;
        self.report.consumed += 1;
        self.metrics.record_in();
        let now = self.cfg.clock.now_ms();
        let meta = RecordMeta {
            partition: m.partition(),
            offset: m.offset(),
            now_ms: now,
        };
        let payload = m.payload().unwrap_or(&[]);
        let decoded = if payload.is_empty() {
            Err(Rejection {
                reason: "truncated",
                detail: "record has no value".into(),
            })
        } else {
            S::Input::from_bytes(payload, now, &self.cfg.limits)
        };
        match decoded {
            Ok(input) => {
                // Saturating: the times of records other than metric events are not
                // range-checked, and i64::MIN would overflow a plain subtraction.
                let lag = now.saturating_sub(input.event_time_ms()) as f64 / 1000.0;
                let started = Instant::now();
                self.stage.process(input, &meta, &mut self.outputs);
                self.metrics.processed(lag, started.elapsed().as_secs_f64());
                self.report.processed += 1;
                self.send_outputs()?;
            }
            Err(rej) => self.dead_letter(&m, rej, now)?,
        }
        match self
            .read_upto
            .get_mut(&(m.topic(), m.partition()) as &dyn TopicKey)
        {
            Some(upto) => *upto = m.offset() + 1,
            None => {
                self.read_upto
                    .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            }
        }
        // Counted once handled: what the record gave is with the producer by now.
        self.cfg.progress.consumed.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        rej: Rejection,
        now: i64,
    ) -> Result<(), RuntimeError> {
        telemetry::dead_lettered(
            self.name,
            rej.reason,
            m.topic(),
            m.partition(),
            m.offset(),
            &rej.detail,
        );
        self.report.dead_lettered += 1;
        self.cfg
            .progress
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        *self
            .report
            .dead_letter_reasons
            .entry(rej.reason.to_string())
            .or_default() += 1;
        let dl = DeadLetter {
            stage: self.name.to_string(),
            reason: rej.reason.to_string(),
            detail: rej.detail,
            source_topic: m.topic().to_string(),
            source_partition: m.partition(),
            source_offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            dead_lettered_ms: now,
            original_size: None,
            original_hash: None,
        }
        .fit(self.cfg.max_record_bytes);
        // A dead letter is built from plain bytes and strings: encoding cannot fail
        // unless the schema itself is broken, which the schema tests rule out.
        match encode(&dl) {
            Ok(bytes) => {
                let topic = self.cfg.deadletter_topic.clone();
                // The record's key is the (possibly cut) original key.
                let key = dl.key.as_deref();
                self.send(&topic, None, key, &bytes, Sent::DeadLetter)
            }
            Err(e) => {
                tracing::error!(stage = self.name, error = %e, "cannot encode a dead letter");
                Ok(())
            }
        }
    }

    fn send_outputs(&mut self) -> Result<(), RuntimeError> {
        if self.outputs.is_empty() {
            return Ok(());
        }
        let topic = self.cfg.output_topic.clone();
        let outputs = std::mem::take(&mut self.outputs);
        for out in &outputs {
            match encode(out) {
                Ok(bytes) => self.send(
                    &topic,
                    None,
                    Some(out.key().as_bytes()),
                    &bytes,
                    Sent::Output,
                )?,
                Err(e) => {
                    tracing::error!(stage = self.name, error = %e, "cannot encode an output; it is dropped")
                }
            }
        }
        // Keep the buffer's capacity for the next record.
        self.outputs = outputs;
        self.outputs.clear();
        Ok(())
    }

    /// Sends one record; `payload` `None` is a tombstone.
    fn send_raw(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        what: Sent,
    ) -> Result<(), RuntimeError> {
        let size = key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
        if size > self.cfg.max_record_bytes {
            // The broker would refuse it and the stage would stop on the refusal. Inputs
            // are bounded (series keys, labels) so this should not happen; if it does,
            // it is loud and counted, not fatal.
            tracing::error!(
                stage = self.name,
                topic,
                size,
                limit = self.cfg.max_record_bytes,
                "a record is larger than --max-record-bytes; it is not sent"
            );
            telemetry::record_too_large(self.name, topic);
            return Ok(());
        }
        let mut waiting_since: Option<Instant> = None;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send_result(record) {
                Ok(fut) => {
                    self.inflight.push((fut, what, self.next_seq));
                    self.next_seq += 1;
                    self.count_in_flight();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Backpressure: settle what was delivered, give the producer's
                    // thread a moment, retry — at-least-once for as long as the broker
                    // is away, exactly-once within the transaction's timeout; either
                    // only up to the shutdown deadline once the stage is asked to stop.
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    let waited = since.elapsed();
                    let stopping = self.shutdown.is_triggered();
                    if (self.exactly_once() && waited >= TXN_QUEUE_WAIT)
                        || (stopping && waited >= self.cfg.shutdown_deadline)
                    {
                        return Err(RuntimeError::Delivery {
                            topic: topic.to_string(),
                            source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                        });
                    }
                    telemetry::backpressure(self.name);
                    self.settle()?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, _)) => {
                    return Err(RuntimeError::Delivery {
                        topic: topic.to_string(),
                        source,
                    })
                }
            }
        }
    }

    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        what: Sent,
    ) -> Result<(), RuntimeError> {
        self.send_raw(topic, partition, key, Some(payload), what)
    }

    /// Runs the core's timer and sends what it emitted.
    pub(super) fn tick(&mut self) -> Result<(), RuntimeError> {
        self.stage.tick(self.cfg.clock.now_ms(), &mut self.outputs);
        if !self.outputs.is_empty() {
            self.ensure_txn()?;
            self.send_outputs()?;
        }
        self.cfg.progress.ticks.fetch_add(1, Ordering::Release);
        telemetry::active_series(self.name, self.stage.active_series());
        telemetry::core_counters(self.name, &self.stage.counters());
        Ok(())
    }

    /// Collects the deliveries that completed, without waiting; the first failure is
    /// returned.
    pub(super) fn settle(&mut self) -> Result<(), RuntimeError> {
        let mut failure = None;
        let mut produced = 0;
        let mut cx = Context::from_waker(Waker::noop());
        let before = self.inflight.len();
        self.inflight.retain_mut(|(fut, what, _)| {
            let outcome = match Pin::new(fut).poll(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Ok(Ok(_))) => Ok(()),
                Poll::Ready(Ok(Err((source, _)))) => Err(source),
                Poll::Ready(Err(_)) => Err(KafkaError::Canceled),
            };
            match outcome {
                Ok(()) if *what == Sent::Output => produced += 1,
                Ok(()) => {}
                Err(source) => {
                    failure.get_or_insert(RuntimeError::Delivery {
                        topic: match what {
                            Sent::Output => "the output topic",
                            Sent::DeadLetter => "the dead-letter topic",
                            Sent::State => "the state topic",
                        }
                        .to_string(),
                        source,
                    });
                }
            }
            false
        });
        let acknowledged = self.inflight.len() < before;
        self.watch_deliveries(acknowledged);
        self.report.produced += produced;
        self.cfg
            .progress
            .produced
            .fetch_add(produced, Ordering::Release);
        // After `produced`: a driver that sees nothing in flight sees every output counted.
        self.count_in_flight();
        telemetry::records_out(self.name, produced);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Publishes how many sends wait for their acknowledgement.
    pub(super) fn count_in_flight(&self) {
        self.cfg
            .progress
            .in_flight
            .store(self.inflight.len() as u64, Ordering::Release);
    }

    /// Health: deliveries that wait long for the broker (it is away, or overloaded) make
    /// the stage unhealthy, once, until they move again. The stage keeps running.
    fn watch_deliveries(&mut self, acknowledged: bool) {
        let now = Instant::now();
        if acknowledged || self.inflight.is_empty() {
            self.last_delivery_progress = now;
        }
        let waiting = now.duration_since(self.last_delivery_progress) >= UNHEALTHY_AFTER;
        if waiting != self.waiting_for_broker {
            self.waiting_for_broker = waiting;
            telemetry::healthy(self.name, !waiting);
            if waiting {
                tracing::warn!(
                    stage = self.name,
                    in_flight = self.inflight.len(),
                    "deliveries have waited {UNHEALTHY_AFTER:?} for the broker; the stage keeps them and retries, and stops reading when its queue is full"
                );
            } else {
                tracing::info!(
                    stage = self.name,
                    "deliveries resumed; the stage is healthy again"
                );
            }
        }
    }

    /// Waits until every send so far is acknowledged (or failed).
    fn flush(&mut self) -> Result<(), RuntimeError> {
        if !self.inflight.is_empty() {
            self.producer
                .flush(KAFKA_CALL_TIMEOUT)
                .map_err(|source| RuntimeError::Delivery {
                    topic: self.cfg.output_topic.clone(),
                    source,
                })?;
        }
        self.settle()?;
        if self.inflight.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Delivery {
                topic: self.cfg.output_topic.clone(),
                source: KafkaError::Canceled,
            })
        }
    }

    /// Sends the state of every key changed since the last checkpoint to its
    /// changelog partition.
    fn write_state(&mut self) -> Result<(), RuntimeError> {
        if self.restorer.is_none() {
            return Ok(());
        }
        self.stage.take_state_changes(&mut self.changes);
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
            self.send_raw(
                &topic,
                Some(c.partition),
                Some(c.key.as_bytes()),
                c.bytes.as_deref(),
                Sent::State,
            )?;
        }
        telemetry::state_writes(self.name, changes.len() as u64);
        self.report.state_writes += changes.len() as u64;
        Ok(())
    }

    /// Offsets safe to commit, per partition: after the last record read, but never
    /// past a record the core still holds. Only those that moved.
    fn offsets_to_commit(&self) -> (TopicPartitionList, Vec<PlannedOffset>) {
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for ((topic, partition), upto) in &self.read_upto {
            let safe = match self.stage.held_offset(*partition) {
                Some(held) => held.min(*upto),
                None => *upto,
            };
            if self.committed.get(&(topic.clone(), *partition)) == Some(&safe) {
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

    /// True when every send numbered below `seq` is acknowledged.
    fn acknowledged_below(&self, seq: u64) -> bool {
        self.inflight.iter().all(|(_, _, s)| *s >= seq)
    }

    /// An at-least-once checkpoint is under way.
    pub(super) fn checkpoint_pending(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// The commit interval has passed: exactly-once commits its transaction now;
    /// at-least-once begins a checkpoint that [`Core::advance_checkpoint`] completes
    /// without blocking (unless one is still under way).
    pub(super) fn commit_due<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if self.exactly_once() {
            return self.commit_transaction(consumer);
        }
        if self.checkpoint.is_none() {
            let mut changes = Vec::new();
            if self.restorer.is_some() {
                let started = Instant::now();
                self.stage.take_state_changes(&mut changes);
                tracing::debug!(
                    stage = self.name,
                    keys = changes.len(),
                    bytes = changes.iter().map(|c| c.bytes.as_ref().map_or(0, Vec::len)).sum::<usize>(),
                    encoded_in = ?started.elapsed(),
                    "checkpoint began"
                );
            }
            let (_, offsets) = self.offsets_to_commit();
            self.checkpoint = Some(PendingCheckpoint {
                changes,
                sent: 0,
                offsets,
                barrier: self.next_seq,
                began: Instant::now(),
            });
        }
        self.advance_checkpoint(consumer)
    }

    /// Takes the next step of the checkpoint under way, if its barrier is passed.
    pub(super) fn advance_checkpoint<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let Some(barrier) = self.checkpoint.as_ref().map(|c| c.barrier) else {
            return Ok(());
        };
        if !self.acknowledged_below(barrier) {
            return Ok(());
        }
        if let Some(mut c) = self.checkpoint.take_if(|c| c.sent < c.changes.len()) {
            // The next wave of state.
            let (mut end, mut bytes) = (c.sent, 0);
            while end < c.changes.len() && (end == c.sent || bytes < STATE_WAVE_BYTES) {
                let change = &c.changes[end];
                bytes += change.key.len() + change.bytes.as_ref().map_or(0, Vec::len);
                end += 1;
            }
            self.send_state(&c.changes[c.sent..end])?;
            c.sent = end;
            c.barrier = self.next_seq;
            self.checkpoint = Some(c);
            return Ok(());
        }
        let Some(done) = self.checkpoint.take() else {
            return Ok(());
        };
        // The asynchronous commit's answer is not timed (librdkafka reports it to no
        // callback here): the checkpoint is, from its first state write to its offsets
        // handed to the broker, with every write acknowledged.
        telemetry::commit(self.name, done.began.elapsed().as_secs_f64(), true);
        let offsets = done.offsets;
        // Asynchronously: a commit is a broker round trip (5–30 ms on a busy machine),
        // which stalled every output of the stage each commit interval.
        self.commit_offsets(consumer, offsets, CommitMode::Async);
        Ok(())
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
        let planned: Vec<PlannedOffset> = planned
            .into_iter()
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect();
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
            telemetry::commit(self.name, started.elapsed().as_secs_f64(), result.is_ok());
        }
        match result {
            Ok(()) => {
                self.report.commits += 1;
                if matches!(mode, CommitMode::Sync) {
                    self.committed.extend(planned);
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
    pub(super) fn commit<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if self.exactly_once() {
            return self.commit_transaction(consumer);
        }
        // Outputs first: state that is durable implies outputs that are. A checkpoint
        // under way is folded in: its older state goes out before the newer.
        self.flush()?;
        if let Some(held) = self.checkpoint.take() {
            self.send_state(&held.changes[held.sent..])?;
        }
        self.write_state()?;
        self.flush()?;
        let (_, planned) = self.offsets_to_commit();
        self.commit_offsets(consumer, planned, CommitMode::Sync);
        Ok(())
    }

    /// Partitions are about to be revoked: make everything durable while this instance
    /// still owns them, then keep their state until the next assignment.
    pub(super) fn on_revoke<C, K>(&mut self, consumer: &K, revoked: &[(String, i32)])
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let parts = partition_numbers(revoked.iter().map(|(_, p)| *p));
        telemetry::rebalance(self.name, "revoked", &parts);
        let lost = consumer.assignment_lost();
        let outcome = if lost {
            Err(RuntimeError::Lost)
        } else {
            self.commit(consumer)
        };
        let clean = match outcome {
            Ok(()) => !self.txn_open && self.recovery.is_none(),
            Err(RuntimeError::Lost) => {
                tracing::warn!(stage = self.name, partitions = %telemetry::list(&parts), "partitions lost (session expired); their state is dropped and their new owner re-reads them");
                if self.txn_open {
                    // Its offsets can no longer be committed: abort it, rewind the rest.
                    self.begin_recovery(
                        &KafkaError::Rebalance(RDKafkaErrorCode::IllegalGeneration),
                        false,
                    );
                }
                false
            }
            Err(e) => {
                tracing::error!(stage = self.name, error = %e, "checkpoint on revoke failed; the new owner re-reads from the last commit");
                self.failure.get_or_insert(e);
                false
            }
        };
        if clean {
            self.parked.extend(parts.iter().copied());
        } else {
            self.stage.partitions_revoked(&parts);
        }
        self.assignment.retain(|tp| !revoked.contains(tp));
        self.read_upto.retain(|(_, p), _| !parts.contains(p));
        self.committed.retain(|(_, p), _| !parts.contains(p));
    }

    /// Partitions were assigned: restore the state of those not kept from before,
    /// before any of their records is processed.
    pub(super) fn on_assign(&mut self, assigned: &[(String, i32)]) {
        let parts = partition_numbers(assigned.iter().map(|(_, p)| *p));
        telemetry::rebalance(self.name, "assigned", &parts);
        self.report.assignments += 1;
        let gone: Vec<i32> = self
            .parked
            .iter()
            .copied()
            .filter(|p| !parts.contains(p))
            .collect();
        if !gone.is_empty() {
            self.stage.partitions_revoked(&gone);
        }
        let fresh: Vec<i32> = parts
            .iter()
            .copied()
            .filter(|p| !self.parked.contains(p))
            .collect();
        self.parked.clear();
        if let Some(r) = &self.restorer {
            let stats = r.restore(&mut self.stage, &fresh);
            self.report.restored_keys += stats.restored;
            self.report.restore_unusable += stats.unusable;
            self.stage.take_state_changes(&mut self.changes);
            self.changes.clear();
        }
        self.stage.partitions_assigned(&parts);
        for tp in assigned {
            if !self.assignment.contains(tp) {
                self.assignment.push(tp.clone());
            }
        }
    }

    /// Ends the run: outputs, state and offsets made durable.
    pub(super) fn finish<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if self.recovery.is_some() {
            return self.stop_recovering();
        }
        self.commit(consumer)?;
        self.flush()
    }
}

/// Sorted, distinct partition numbers.
fn partition_numbers(parts: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut v: Vec<i32> = parts.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Looks up a `(String, i32)` map by `(&str, i32)` without allocating.
trait TopicKey {
    fn key(&self) -> (&str, i32);
}

impl TopicKey for (String, i32) {
    fn key(&self) -> (&str, i32) {
        (&self.0, self.1)
    }
}

impl TopicKey for (&str, i32) {
    fn key(&self) -> (&str, i32) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn TopicKey + 'a> for (String, i32) {
    fn borrow(&self) -> &(dyn TopicKey + 'a) {
        self
    }
}

impl PartialEq for dyn TopicKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn TopicKey + '_ {}

impl std::hash::Hash for dyn TopicKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
