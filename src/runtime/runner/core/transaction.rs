//! Exactly-once transactions: the commit, and the recovery when one fails.
//!
//! A transaction fails when the broker is away for longer than its timeout (deliveries
//! time out, the commit cannot reach the coordinator), when a rebalance moves the group
//! on, or when the coordinator aborts it itself. None of these stops the stage: it stops
//! reading, aborts the transaction (retrying while the broker is away, and replacing the
//! producer when the broker has fenced the old one's epoch), then throws away what the
//! aborted transaction held — the state of every assigned partition is restored from the
//! changelog and reading resumes at the committed offsets — and carries on. Only a
//! producer fenced by a live instance with the same transactional id stops it.
//!
//! Every step is a short call retried on the loop's schedule, so a stage in recovery
//! still answers SIGTERM and serves its metrics.

use super::{Core, KAFKA_CALL_TIMEOUT};
use crate::runtime::runner::{RuntimeError, StageProducer};
use crate::stage::Stage;
use crate::telemetry;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Longest one recovery call (abort, init, a committed-offsets read) may block.
const RECOVERY_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between two recovery attempts.
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Failed seeks after which a recovery gives up and the stage stops.
const SEEK_ATTEMPTS: u32 = 12;

/// Why a rewind did not complete.
enum Rewind {
    /// The broker could not be reached (retried for as long as it takes).
    Broker(KafkaError),
    /// The consumer refused to move back (retried [`SEEK_ATTEMPTS`] times).
    Seek(KafkaError),
}

/// Where a recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The failed transaction is not aborted yet.
    Abort,
    /// The producer was replaced; its transactions are not initialised yet.
    Init,
    /// Aborted; the state and the positions are not rewound yet.
    Rewind,
}

/// A failed transaction being recovered from.
pub(in crate::runtime::runner) struct Recovery {
    since: Instant,
    cause: String,
    step: Step,
    attempts: u32,
    seek_failures: u32,
    next_try: Instant,
}

impl Recovery {
    /// When the next attempt is due.
    pub(in crate::runtime::runner) fn next_try(&self) -> Instant {
        self.next_try
    }

    /// What failed.
    pub(in crate::runtime::runner) fn cause(&self) -> &str {
        &self.cause
    }
}

/// A transactional producer fenced by the broker rather than by another instance: its
/// epoch was bumped because its transaction outlived `transaction.timeout.ms` (the
/// broker was away, or the stage was paused).
fn fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

fn fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

impl<S: Stage> Core<S> {
    /// A transaction failed, or one of its sends did: recovery begins (see the module
    /// docs). Reading stops until it is done.
    pub(in crate::runtime::runner) fn begin_recovery(&mut self, cause: &KafkaError) {
        if self.recovery.is_some() {
            return;
        }
        telemetry::transaction_aborted(self.name, &cause.to_string());
        telemetry::healthy(self.name, false);
        self.report.aborts += 1;
        let step = if fatal(cause) {
            Step::Init
        } else {
            Step::Abort
        };
        self.recovery = Some(Recovery {
            since: Instant::now(),
            cause: cause.to_string(),
            step,
            attempts: 0,
            seek_failures: 0,
            next_try: Instant::now(),
        });
        if step == Step::Init {
            self.replace_producer();
        }
    }

    /// A recovery is under way.
    pub(in crate::runtime::runner) fn recovering(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Takes the next step of the recovery, if one is under way. `Err` only when the stage
    /// must stop: another instance with the same transactional id took over.
    pub(in crate::runtime::runner) fn recover<C, K>(
        &mut self,
        consumer: &K,
    ) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let Some(step) = self.recovery.as_ref().map(|r| r.step) else {
            return Ok(());
        };
        let outcome = match step {
            Step::Abort => match self.producer.abort_transaction(RECOVERY_CALL_TIMEOUT) {
                Ok(()) => Ok(Step::Rewind),
                // The broker bumped the epoch (the transaction timed out there): a new
                // producer with the same id takes over from the old one.
                Err(e) if fatal(&e) && fenced(&e) => {
                    self.replace_producer();
                    Ok(Step::Init)
                }
                Err(e) if fatal(&e) => return Err(RuntimeError::Fenced(e)),
                Err(e) => Err(e),
            },
            Step::Init => match self.producer.init_transactions(RECOVERY_CALL_TIMEOUT) {
                Ok(()) => Ok(Step::Rewind),
                Err(e) => Err(e),
            },
            Step::Rewind => match self.rewind(consumer) {
                Ok(()) => Ok(Step::Rewind),
                // The consumer would not move back: after SEEK_ATTEMPTS tries the stage
                // stops rather than read on from the wrong place (a restart resumes
                // from the last commit).
                Err(Rewind::Seek(e))
                    if self
                        .recovery
                        .as_ref()
                        .is_some_and(|r| r.seek_failures + 1 >= SEEK_ATTEMPTS) =>
                {
                    return Err(RuntimeError::Setup(e));
                }
                Err(Rewind::Seek(e)) => {
                    if let Some(r) = self.recovery.as_mut() {
                        r.seek_failures += 1;
                    }
                    Err(e)
                }
                Err(Rewind::Broker(e)) => Err(e),
            },
        };
        let Some(r) = self.recovery.as_mut() else {
            return Ok(());
        };
        match outcome {
            Ok(_) if step == Step::Rewind => {
                let (since, attempts) = (r.since, r.attempts);
                self.recovery = None;
                self.txn_open = false;
                telemetry::healthy(self.name, true);
                tracing::info!(stage = self.name, after = ?since.elapsed(), attempts, "recovered: the failed transaction is aborted, state and positions are back at the last commit; reading resumes");
            }
            Ok(next) => {
                r.step = next;
                r.next_try = Instant::now();
                if next == Step::Rewind {
                    // Nothing sent in the aborted transaction will be acknowledged.
                    self.inflight.clear();
                    self.outputs.clear();
                }
            }
            Err(e) => {
                r.attempts += 1;
                let backoff = Duration::from_millis(200 * u64::from(r.attempts.min(25)))
                    .min(RECOVERY_BACKOFF_MAX);
                r.next_try = Instant::now() + backoff;
                // One line when the broker first proves unreachable, then one a minute.
                if r.attempts == 1 || r.attempts % 12 == 0 {
                    tracing::warn!(stage = self.name, step = ?step, attempts = r.attempts, waited = ?r.since.elapsed(), cause = %r.cause, error = %e, "recovery waits for the broker");
                }
            }
        }
        Ok(())
    }

    /// Replaces the producer with a new one with the same transactional id; its
    /// `init_transactions` (the next step) fences the old epoch and aborts what it had
    /// open.
    fn replace_producer(&mut self) {
        match self
            .producer_config
            .create_with_context::<_, StageProducer>(
                crate::runtime::kafka::WatchedContext::default(),
            ) {
            Ok(p) => {
                tracing::warn!(
                    stage = self.name,
                    "the broker fenced the producer's epoch (its transaction timed out); a new producer with the same transactional id takes over"
                );
                self.inflight.clear();
                self.producer = p;
            }
            Err(e) => {
                tracing::error!(stage = self.name, error = %e, "cannot create a new producer; retrying");
            }
        }
    }

    pub(super) fn commit_transaction<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if !self.txn_open || self.recovery.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        self.write_state()?;
        let (tpl, planned) = self.offsets_to_commit();
        let result = (|| {
            if !planned.is_empty() {
                let Some(cgm) = consumer.group_metadata() else {
                    return Err(KafkaError::Rebalance(RDKafkaErrorCode::InvalidGroupId));
                };
                self.producer
                    .send_offsets_to_transaction(&tpl, &cgm, KAFKA_CALL_TIMEOUT)?;
            }
            self.producer.commit_transaction(KAFKA_CALL_TIMEOUT)
        })();
        telemetry::commit(self.name, started.elapsed().as_secs_f64(), result.is_ok());
        match result {
            Ok(()) => {
                self.txn_open = false;
                self.report.commits += 1;
                self.committed.extend(planned);
                self.settle()
            }
            Err(e) => self.transaction_failed(e),
        }
    }

    /// A transaction could not commit: fatal errors that are not the broker's own
    /// fencing (another instance with this transactional id took over) stop the stage;
    /// anything else begins a recovery.
    pub(super) fn transaction_failed(&mut self, e: KafkaError) -> Result<(), RuntimeError> {
        if fatal(&e) && !fenced(&e) {
            self.txn_open = false;
            return Err(RuntimeError::Fenced(e));
        }
        self.begin_recovery(&e);
        Ok(())
    }

    /// In exactly-once mode, a failed send or transaction call is recovered from rather
    /// than returned; `Ok(None)` then. Anything else passes through.
    pub(in crate::runtime::runner) fn absorb<T>(
        &mut self,
        result: Result<T, RuntimeError>,
    ) -> Result<Option<T>, RuntimeError> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(RuntimeError::Delivery { source, .. } | RuntimeError::Transaction(source))
                if self.exactly_once() =>
            {
                self.transaction_failed(source)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Throws away what the aborted transaction held: the state of every assigned
    /// partition is restored from the changelog and reading resumes at the committed
    /// offsets. Fails, to be retried, while the broker cannot be reached.
    fn rewind<C, K>(&mut self, consumer: &K) -> Result<(), Rewind>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in &self.assignment {
            let _ = tpl.add_partition(topic, *p);
        }
        let positions: Vec<(String, i32, Offset)> = consumer
            .committed_offsets(tpl, RECOVERY_CALL_TIMEOUT)
            .map_err(Rewind::Broker)?
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                (e.topic().to_string(), e.partition(), offset)
            })
            .collect();
        let partitions = super::partition_numbers(self.assignment.iter().map(|(_, p)| *p));
        self.stage.partitions_revoked(&partitions);
        self.outputs.clear();
        if let Some(r) = &self.restorer {
            let stats = r.restore(&mut self.stage, &partitions);
            // What was just read is the committed state, nothing to write back.
            self.stage.take_state_changes(&mut self.changes);
            self.changes.clear();
            if !stats.incomplete.is_empty() {
                return Err(Rewind::Broker(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
        }
        self.read_upto.clear();
        for (topic, p, offset) in positions {
            consumer
                .seek(&topic, p, offset, RECOVERY_CALL_TIMEOUT)
                .map_err(Rewind::Seek)?;
        }
        self.committed.clear();
        Ok(())
    }
}
