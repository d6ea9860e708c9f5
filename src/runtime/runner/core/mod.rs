//! The runner's state and everything done under its lock: each record read is decoded,
//! processed or dead-lettered, and what it gave is sent; partitions come and go.
//!
//! Each concern has a file of its own: [`sends`] (records in flight until the broker
//! acknowledges them), [`offsets`] (how far each partition is read and committed),
//! [`checkpoint`] (at-least-once checkpoints, and which durability the stage runs),
//! [`transaction`] (exactly-once commits and the recovery from a failed one),
//! [`refetch`] (partitions librdkafka never started fetching) and [`stats`] (every
//! count, once).
//!
//! The rebalance callbacks of the consumer need the same state as the loop (a revoke
//! must checkpoint and commit before the partitions move), so it lives behind one
//! mutex. The loop never holds the lock while it waits, for the consumer or for room
//! in the producer's queue, so a callback always finds it free.

mod checkpoint;
mod offsets;
mod refetch;
mod sends;
mod stats;
mod transaction;

use self::checkpoint::Durability;
use self::offsets::OffsetBook;
use self::sends::{Outgoing, Sends, Sent};
use self::stats::{Source, Stats};
use super::restore::StateRestorer;
use super::StageProducer;
use super::{Guarantee, RunnerConfig, RuntimeError};
use crate::event::{encode, DeadLetter};
use crate::runtime::Shutdown;
use crate::stage::{Counted, Keyed, RecordMeta, Rejection, Stage, StageInput, StateChange};
use crate::telemetry;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

/// Longest a commit, a flush or a transaction call may block.
const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest an exactly-once send may wait for room in the producer's queue: a
/// transaction's records must be delivered within its timeout anyway (its
/// message.timeout.ms). Past it the transaction is recovered from, instead of the stage
/// waiting for as long as the broker is away.
const TXN_QUEUE_WAIT: Duration = Duration::from_secs(15);

/// How long a flush waits on the producer before it looks at the stage's own sends again.
const FLUSH_POLL: Duration = Duration::from_millis(5);

/// Dead-letter reason of a record whose output could not be encoded.
const UNENCODABLE_OUTPUT: &str = "unencodable_output";

pub(super) struct Core<S: Stage> {
    pub(super) stage: S,
    pub(super) cfg: RunnerConfig,
    pub(super) name: &'static str,
    pub(super) stats: Stats,
    producer: StageProducer,
    /// What the producer was made from: exactly-once recovery makes a new one when the
    /// broker fenced the old one's epoch.
    producer_config: ClientConfig,
    /// A failed exactly-once transaction being recovered from; reading waits for it.
    recovery: Option<transaction::Recovery>,
    /// When the producer was last replaced (exactly-once recovery), within a window.
    renewals: Vec<Instant>,
    /// A transactional call was left behind still running (see `bounded`): the
    /// producer is busy for good, so the next recovery starts with a new one.
    call_left_behind: bool,
    restorer: Option<StateRestorer>,
    outputs: Vec<S::Output>,
    changes: Vec<StateChange>,
    sends: Sends,
    durability: Durability,
    offsets: OffsetBook,
    /// A failure seen inside a rebalance callback, returned by the loop.
    pub(super) failure: Option<RuntimeError>,
    /// The stop signal: sends waiting for room give up once it is given (after the
    /// shutdown deadline), so a stage asked to stop does stop.
    shutdown: Shutdown,
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
        let name = stage.name();
        telemetry::healthy(name, true);
        let durability = match cfg.guarantee {
            Guarantee::AtLeastOnce => Durability::Checkpoints(None),
            Guarantee::ExactlyOnce => Durability::Transactions { open: false },
        };
        Core {
            name,
            stats: Stats::new(name, cfg.progress.clone()),
            stage,
            cfg,
            producer,
            producer_config,
            recovery: None,
            renewals: Vec::new(),
            call_left_behind: false,
            restorer,
            outputs: Vec::new(),
            changes: Vec::new(),
            sends: Sends::new(name),
            durability,
            offsets: OffsetBook::default(),
            failure: None,
            shutdown,
        }
    }

    fn exactly_once(&self) -> bool {
        self.durability.transactional()
    }

    /// Opens a transaction if none is (exactly-once only).
    fn ensure_txn(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once() && !self.durability.txn_open() {
            self.producer
                .begin_transaction()
                .map_err(RuntimeError::Transaction)?;
            self.durability.set_txn_open(true);
        }
        Ok(())
    }

    /// Handles one record from the consumer. `Ok(false)` when the consumer reported an
    /// error instead (the caller backs off).
    pub(super) fn handle<M: Message>(
        &mut self,
        m: Result<M, KafkaError>,
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
        self.stats.read();
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
            self.decode_input(payload, now)
        };
        match decoded {
            Ok(input) => {
                // Saturating: the times of records other than metric events are not
                // range-checked, and i64::MIN would overflow a plain subtraction.
                let lag = now.saturating_sub(input.event_time_ms()) as f64 / 1000.0;
                let started = Instant::now();
                self.stage.process(input, &meta, &mut self.outputs);
                self.stats.processed(lag, started.elapsed().as_secs_f64());
                if let Some(detail) = self.send_outputs()? {
                    // The core made an output its schema refuses: the record that led
                    // to it is kept, with why, rather than dropped unseen.
                    let rej = Rejection {
                        reason: UNENCODABLE_OUTPUT,
                        detail,
                    };
                    self.dead_letter(&m, rej, now)?;
                }
            }
            Err(rej) => self.dead_letter(&m, rej, now)?,
        }
        self.offsets.read(m.topic(), m.partition(), m.offset());
        // Counted once handled: what the record gave is with the producer by now.
        self.stats.handled();
        Ok(true)
    }

    /// Decodes one input: single-object encoded, or Confluent-framed through the
    /// registry's cache (which the loop filled before the record came here).
    fn decode_input(&self, payload: &[u8], now: i64) -> Result<S::Input, Rejection> {
        use crate::event::confluent::{confluent_schema_id, CONFLUENT_HEADER_LEN};
        use crate::runtime::registry::Lookup;
        let (Some(id), Some(registry)) = (confluent_schema_id(payload), &self.cfg.registry) else {
            return S::Input::from_bytes(payload, now, &self.cfg.limits);
        };
        match registry.lookup(id) {
            None => Err(Rejection {
                reason: "schema_registry_unavailable",
                detail: format!(
                    "schema id {id}: the schema registry at {} did not answer in time",
                    registry.url()
                ),
            }),
            Some(Lookup::Refused { reason, detail }) => Err(Rejection { reason, detail }),
            Some(Lookup::Schema(writer)) => {
                let single = writer
                    .to_single_object(&payload[CONFLUENT_HEADER_LEN..])
                    .map_err(|e| Rejection {
                        reason: e.reason(),
                        detail: e.to_string(),
                    })?;
                S::Input::from_bytes(&single, now, &self.cfg.limits)
            }
        }
    }

    /// The bytes of a record of type `record`: as encoded, or in Confluent framing
    /// when a registry gave our schema an id.
    fn framed(&self, record: &'static str, single_object: Vec<u8>) -> Vec<u8> {
        match self.cfg.registry.as_ref().and_then(|r| r.output_id(record)) {
            Some(id) => crate::event::confluent::to_confluent(&single_object, id),
            None => single_object,
        }
    }

    fn dead_letter<M: Message>(
        &mut self,
        m: &M,
        rej: Rejection,
        now: i64,
    ) -> Result<(), RuntimeError> {
        let source = Source {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
        };
        self.stats.dead_lettered(&rej, &source);
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
        // A dead letter is plain bytes and strings: only a broken schema fails to
        // encode it, and then the stage stops rather than lose the record unseen.
        let bytes = encode(&dl).map_err(|e| RuntimeError::Encode {
            what: "a dead letter",
            detail: e.to_string(),
        })?;
        let bytes = self.framed("DeadLetter", bytes);
        let topic = self.cfg.deadletter_topic.clone();
        self.send(Outgoing {
            topic: &topic,
            partition: None,
            // The record's key is the (possibly cut) original key.
            key: dl.key.as_deref(),
            payload: Some(&bytes),
            what: Sent::DeadLetter,
        })
    }

    /// Sends the core's outputs. Returns why, when some could not be encoded (the rest
    /// are sent).
    fn send_outputs(&mut self) -> Result<Option<String>, RuntimeError> {
        if self.outputs.is_empty() {
            return Ok(None);
        }
        let topic = self.cfg.output_topic.clone();
        let outputs = std::mem::take(&mut self.outputs);
        let mut unencodable = None;
        for out in &outputs {
            match encode(out) {
                Ok(bytes) => {
                    let bytes = self.framed(<S::Output as crate::event::AvroRecord>::NAME, bytes);
                    self.send(Outgoing {
                        topic: &topic,
                        partition: None,
                        key: Some(out.key().as_bytes()),
                        payload: Some(&bytes),
                        what: Sent::Output,
                    })?;
                    telemetry::output(
                        self.name,
                        <S::Output as crate::event::AvroRecord>::NAME,
                        out.counted_target(),
                        out.verdict_and_rule(),
                    );
                }
                Err(e) => {
                    unencodable.get_or_insert_with(|| {
                        format!("an output keyed {:?} cannot be encoded: {e}", out.key())
                    });
                }
            }
        }
        // Keep the buffer's capacity for the next record.
        self.outputs = outputs;
        self.outputs.clear();
        Ok(unencodable)
    }

    /// Hands one record to the producer, or to the backlog when its queue is full.
    fn send(&mut self, out: Outgoing<'_>) -> Result<(), RuntimeError> {
        let size = out.key.map_or(0, <[u8]>::len) + out.payload.map_or(0, <[u8]>::len);
        if size > self.cfg.max_record_bytes {
            // The broker would refuse it and the stage would stop on the refusal. Inputs
            // are bounded (series keys, labels) so this should not happen; if it does,
            // it is loud and counted, not fatal.
            tracing::error!(
                stage = self.name,
                topic = out.topic,
                size,
                limit = self.cfg.max_record_bytes,
                "a record is larger than --max-record-bytes; it is not sent"
            );
            self.stats.too_large(out.topic);
            return Ok(());
        }
        let topic = out.topic;
        let queued =
            self.sends
                .send(&self.producer, out)
                .map_err(|source| RuntimeError::Delivery {
                    topic: topic.to_string(),
                    source,
                })?;
        if queued {
            self.stats.backpressure();
        }
        self.stats.in_flight(self.sends.pending());
        Ok(())
    }

    /// Sends wait for room in the producer's queue: the loop reads nothing until they
    /// are handed over (see [`sends`]).
    pub(super) fn backlogged(&self) -> bool {
        self.sends.backlog_waited().is_some()
    }

    /// An at-least-once checkpoint is under way (it moves on as its sends are
    /// acknowledged).
    pub(super) fn checkpoint_pending(&self) -> bool {
        self.durability.checkpoint_pending()
    }

    /// Runs the core's timer and sends what it emitted.
    pub(super) fn tick(&mut self) -> Result<(), RuntimeError> {
        self.stage.tick(self.cfg.clock.now_ms(), &mut self.outputs);
        if !self.outputs.is_empty() {
            self.ensure_txn()?;
            if let Some(detail) = self.send_outputs()? {
                // No input record to keep with it: stop rather than skip it.
                return Err(RuntimeError::Encode {
                    what: "an output of the core's timer",
                    detail,
                });
            }
        }
        self.stats
            .ticked(self.stage.active_series(), &self.stage.counters());
        Ok(())
    }

    /// Collects the deliveries that completed and hands the producer what it has room
    /// for, without waiting; the first failure is returned. A backlog that waited too
    /// long is a failure too: past the transaction's patience (exactly-once), or past
    /// the shutdown deadline once the stage is asked to stop.
    pub(super) fn settle(&mut self) -> Result<(), RuntimeError> {
        let settled = self.sends.settle(&self.producer);
        self.stats.produced(settled.produced);
        // After `produced`: a driver that sees nothing in flight sees every output counted.
        self.stats.in_flight(self.sends.pending());
        if let Some((what, source)) = settled.failure {
            return Err(RuntimeError::Delivery {
                topic: what.topic_words().to_string(),
                source,
            });
        }
        if let Some(waited) = self.sends.backlog_waited() {
            let stopping = self.shutdown.is_triggered();
            if (self.exactly_once() && waited >= TXN_QUEUE_WAIT)
                || (stopping && waited >= self.cfg.shutdown_deadline)
            {
                return Err(RuntimeError::Delivery {
                    topic: "the producer's queue".to_string(),
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                });
            }
        }
        Ok(())
    }

    /// Waits until every send so far is acknowledged (or failed): a commit, a revoke
    /// and the stop need it, and block for it (up to [`KAFKA_CALL_TIMEOUT`]).
    fn flush(&mut self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + KAFKA_CALL_TIMEOUT;
        self.settle()?;
        while self.backlogged() {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Delivery {
                    topic: self.cfg.output_topic.clone(),
                    source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                });
            }
            // Room comes as deliveries complete.
            let _ = self.producer.flush(Duration::from_millis(20));
            self.settle()?;
        }
        // Only this stage's own sends are waited for: a producer shared with other
        // stages (`SharedProducer`) may never have an empty queue while they run.
        while self.sends.pending() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Delivery {
                    topic: self.cfg.output_topic.clone(),
                    source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                });
            }
            // Returns as soon as the queue is empty, or after a few ms either way.
            let _ = self.producer.flush(left.min(FLUSH_POLL));
            self.settle()?;
        }
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
        self.stats.rebalance("revoked", &parts);
        let lost = consumer.assignment_lost();
        let outcome = if lost {
            Err(RuntimeError::Lost)
        } else {
            self.commit(consumer)
        };
        let clean = match outcome {
            Ok(()) => !self.durability.txn_open() && self.recovery.is_none(),
            Err(RuntimeError::Lost) => {
                tracing::warn!(stage = self.name, partitions = %telemetry::list(&parts), "partitions lost (session expired); their state is dropped and their new owner re-reads them");
                if self.durability.txn_open() {
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
        if !clean {
            self.stage.partitions_revoked(&parts);
        }
        self.offsets.revoke(revoked, &parts, clean);
    }

    /// Partitions were assigned: restore the state of those not kept from before,
    /// before any of their records is processed.
    pub(super) fn on_assign(&mut self, assigned: &[(String, i32)]) {
        let parts = partition_numbers(assigned.iter().map(|(_, p)| *p));
        self.stats.rebalance("assigned", &parts);
        let (gone, fresh) = self.offsets.assign(assigned, &parts);
        if !gone.is_empty() {
            self.stage.partitions_revoked(&gone);
        }
        if let Some(r) = &self.restorer {
            let restored = r.restore(&mut self.stage, &fresh);
            self.stats.restored(restored.restored, restored.unusable);
            // What was just read is the committed state, nothing to write back (and
            // nothing new that could fail to encode).
            let _ = checkpoint::state_changes(&mut self.stage, &mut self.changes);
            self.changes.clear();
        }
        self.stage.partitions_assigned(&parts);
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
