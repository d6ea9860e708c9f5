//! Exactly-once transactions: the commit, and the recovery when one fails.
//!
//! A transaction fails when the broker is away for longer than its timeout (deliveries
//! time out, the commit cannot reach the coordinator), when a rebalance moves the group
//! on, or when the coordinator aborts it itself. None of these stops the stage: it stops
//! reading, aborts the transaction (retrying while the broker is away, and replacing the
//! producer when the broker has fenced the old one's epoch), then throws away what the
//! aborted transaction held — the state of every assigned partition is restored from the
//! changelog and reading resumes at the committed offsets — and carries on. A producer
//! in a fatal state (the broker fenced its epoch when its transaction timed out there,
//! or lost track of it: INVALID_TXN_STATE after a whole-cluster outage) is replaced by a
//! new one with the same transactional id. Only producers fenced over and over — more
//! than [`RENEWALS_MAX`] in [`RENEWAL_WINDOW`], as two live instances with the same
//! `--instance-id` would fence each other — stop the stage.
//!
//! Every step is a short call retried on the loop's schedule, so a stage in recovery
//! still answers SIGTERM and serves its metrics.

use super::Core;
use crate::runtime::runner::{RuntimeError, StageProducer};
use crate::stage::Stage;
use crate::telemetry;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Longest one recovery call (abort, init, a committed-offsets read) may block.
const RECOVERY_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest the offsets and the commit of a transaction may block the loop each. A
/// commit that times out is retried by the recovery ([`Step::Commit`]), so this only
/// bounds how long a stage is deaf (to SIGTERM, too) while the broker is away. Once the
/// stage is stopping, every transactional call keeps to what is left of the shutdown
/// deadline instead (see [`stop_bounded`]).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time a transactional call gets once the stop's deadline has passed: enough
/// for a broker that answers, short enough that the stop keeps within the watchdog's
/// margin when none does.
const STOPPING_CALL_MIN: Duration = Duration::from_millis(500);

/// A call's timeout: `normal` while running; once a stop was asked for at `stop_at`,
/// what is left of `deadline` after it, but at least [`STOPPING_CALL_MIN`].
fn stop_bounded(
    normal: Duration,
    stop_at: Option<Instant>,
    deadline: Duration,
    now: Instant,
) -> Duration {
    match stop_at {
        Some(at) => {
            let left = (at + deadline).saturating_duration_since(now);
            normal.min(left.max(STOPPING_CALL_MIN))
        }
        None => normal,
    }
}

/// Longest a transactional call may block a running stage. librdkafka's own request
/// timeouts end every call well within it; one still blocked is stuck (seen once in the
/// fault suite: `send_offsets_to_transaction` was still waiting 214 s after it began,
/// across a whole-cluster freeze and after the cluster was back).
const STUCK_CALL: Duration = Duration::from_secs(90);

/// How often a wait for a transactional call looks at the stop signal.
const CALL_POLL: Duration = Duration::from_millis(20);

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

/// Producer renewals allowed within [`RENEWAL_WINDOW`] before the stage stops as fenced.
const RENEWALS_MAX: usize = 3;
const RENEWAL_WINDOW: Duration = Duration::from_secs(300);

/// Where a recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The commit timed out and may still complete: it is retried, as librdkafka asks
    /// ("retry call to resume"; an abort meanwhile is refused as conflicting).
    Commit,
    /// The failed transaction is not aborted yet.
    Abort,
    /// The producer is in a fatal state; a new one is to be made.
    Renew,
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
    /// The producer's last fatal error, reported if renewals run out.
    fatal: Option<KafkaError>,
    /// The failure came from the commit itself (see [`Step::Commit`]).
    committing: bool,
}

impl Recovery {
    /// When the next attempt is due.
    pub(in crate::runtime::runner) fn next_try(&self) -> Instant {
        self.next_try
    }
}

fn fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

/// A transactional call that timed out and is to be called again.
fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable() && !t.is_fatal() && !t.txn_requires_abort())
}

/// An abort refused because a commit is still in progress.
fn conflicting(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::Conflict)
}

impl<S: Stage> Core<S> {
    /// A transaction failed, or one of its sends did: recovery begins (see the module
    /// docs). Reading stops until it is done.
    ///
    /// `committing`: the error came from `commit_transaction` itself (everything else
    /// was in the transaction), so a timeout there is retried rather than aborted.
    pub(in crate::runtime::runner) fn begin_recovery(
        &mut self,
        cause: &KafkaError,
        committing: bool,
    ) {
        if self.recovery.is_some() {
            return;
        }
        self.stats.aborted(&cause.to_string());
        telemetry::healthy(self.name, false);
        let step = if fatal(cause) || self.call_left_behind {
            Step::Renew
        } else if committing && retriable(cause) {
            Step::Commit
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
            fatal: fatal(cause).then(|| cause.clone()),
            committing,
        });
    }

    /// A recovery is under way.
    pub(in crate::runtime::runner) fn recovering(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Takes the next step of the recovery, if one is under way. `Err` only when the stage
    /// must stop: producers fenced too often (another live instance with the same
    /// transactional id), or a consumer that will not seek back.
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
        // After a fatal error (the producer cannot go on) the next step is Renew.
        let outcome = match step {
            Step::Commit => {
                match self.bounded(RECOVERY_CALL_TIMEOUT, |p, t| p.commit_transaction(t)) {
                    // Committed after all: nothing to throw away, reading resumes as it was.
                    Ok(()) => {
                        self.stats.committed();
                        self.offsets.forget_commits();
                        self.finish_recovery(false);
                        return Ok(());
                    }
                    Err(e) if fatal(&e) => self.fatal_seen(e),
                    Err(e) if retriable(&e) || conflicting(&e) => Err(e),
                    Err(_) => Ok(Step::Abort),
                }
            }
            Step::Abort => match self.bounded(RECOVERY_CALL_TIMEOUT, |p, t| p.abort_transaction(t))
            {
                Ok(()) => Ok(Step::Rewind),
                Err(e) if fatal(&e) => self.fatal_seen(e),
                Err(e)
                    if conflicting(&e) && self.recovery.as_ref().is_some_and(|r| r.committing) =>
                {
                    Ok(Step::Commit)
                }
                Err(e) => Err(e),
            },
            Step::Renew => match self.renew_producer() {
                Ok(true) => Ok(Step::Init),
                Ok(false) => {
                    let e = self.recovery.as_mut().and_then(|r| r.fatal.take());
                    return Err(RuntimeError::Fenced(e.unwrap_or(KafkaError::Canceled)));
                }
                Err(e) => Err(e),
            },
            Step::Init => {
                match self.bounded(RECOVERY_CALL_TIMEOUT, |p, t| p.init_transactions(t)) {
                    Ok(()) => Ok(Step::Rewind),
                    Err(e) if fatal(&e) => self.fatal_seen(e),
                    Err(e) => Err(e),
                }
            }
            Step::Rewind => match self.rewind(consumer) {
                Ok(()) => Ok(Step::Rewind),
                // The consumer would not move back: after SEEK_ATTEMPTS tries the stage
                // stops rather than read on from the wrong place (a restart resumes
                // from the last commit).
                Err(Rewind::Seek(e)) => {
                    let failures = self.recovery.as_mut().map_or(SEEK_ATTEMPTS, |r| {
                        r.seek_failures += 1;
                        r.seek_failures
                    });
                    if failures >= SEEK_ATTEMPTS {
                        return Err(RuntimeError::Setup(e));
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
            Ok(_) if step == Step::Rewind => self.finish_recovery(true),
            Ok(next) => {
                r.step = next;
                r.next_try = Instant::now();
                if next == Step::Rewind {
                    // Nothing sent in the aborted transaction will be acknowledged.
                    self.sends.clear();
                    self.stats.in_flight(0);
                    self.outputs.clear();
                }
            }
            Err(e) => {
                r.attempts += 1;
                if self.call_left_behind {
                    // The step's own call is stuck in the producer: only a new one helps.
                    r.step = Step::Renew;
                }
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

    /// The recovery is done: `rewound` when the transaction was aborted and the state
    /// and positions put back, false when its commit went through after all.
    fn finish_recovery(&mut self, rewound: bool) {
        let Some(r) = self.recovery.take() else {
            return;
        };
        self.durability.set_txn_open(false);
        telemetry::healthy(self.name, true);
        if rewound {
            tracing::info!(stage = self.name, after = ?r.since.elapsed(), attempts = r.attempts, "recovered: the failed transaction is aborted, state and positions are back at the last commit; reading resumes");
        } else {
            tracing::info!(stage = self.name, after = ?r.since.elapsed(), attempts = r.attempts, "recovered: the transaction's commit went through when retried; reading resumes");
        }
    }

    /// The stage stops before its recovery is done. Nothing it read is lost or will be
    /// repeated once the failed transaction is aborted: its inputs were not committed,
    /// the next owner re-reads them, and read_committed readers never see its outputs.
    /// So the stop is clean when the transaction is aborted now, or was already, or
    /// belonged to a replaced producer (the broker aborts it on its timeout, or when the
    /// next instance with this id fences it). `Err` when the abort is refused now: the
    /// transaction may still be open (a commit that timed out may even complete).
    pub(super) fn stop_recovering(&mut self) -> Result<(), RuntimeError> {
        let Some(r) = self.recovery.take() else {
            return Ok(());
        };
        let aborted = match r.step {
            Step::Commit | Step::Abort => self
                .bounded(RECOVERY_CALL_TIMEOUT, |p, t| p.abort_transaction(t))
                .or_else(|e| self.fence_open_transaction(e))
                .map_err(|e| e.to_string()),
            // A call left behind still holds the producer and its open transaction.
            Step::Renew if self.call_left_behind => self
                .fence_open_transaction(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut))
                .map_err(|e| e.to_string()),
            Step::Renew | Step::Init | Step::Rewind => Ok(()),
        };
        match aborted {
            Ok(()) => {
                self.durability.set_txn_open(false);
                tracing::info!(stage = self.name, step = ?r.step, cause = %r.cause, "stopped during a recovery: the failed transaction is aborted (or fenced with its producer); its inputs are re-read by the next owner, nothing is lost or repeated");
                Ok(())
            }
            Err(e) => Err(RuntimeError::Unrecovered(format!(
                "{}; the abort failed too: {e}",
                r.cause
            ))),
        }
    }

    /// The abort was refused (a call left behind still holds the producer, or the
    /// producer is in a fatal state): a new producer with the same transactional id
    /// fences the old one, and its `init_transactions` aborts what the old one had open.
    /// `Err` when that cannot be done within the stop's budget either (the broker away):
    /// the broker then aborts the transaction on its timeout.
    fn fence_open_transaction(&mut self, refused: KafkaError) -> KafkaResult<()> {
        tracing::info!(stage = self.name, error = %refused, "stopping: the abort was refused; a new producer with the same transactional id fences the old one and aborts its transaction");
        match self.renew_producer() {
            // Its own few seconds, past the stop's deadline if need be: the watchdog's
            // margin (20 s) covers them.
            Ok(true) => self.on_own_thread(
                RECOVERY_CALL_TIMEOUT,
                Some(RECOVERY_CALL_TIMEOUT + Duration::from_secs(1)),
                |p, t| p.init_transactions(t),
            ),
            Ok(false) => Err(refused),
            Err(e) => Err(e),
        }
    }

    /// Makes one of the producer's transactional calls on a thread of its own and waits
    /// for it, so that a stop is not held by it. librdkafka bounds these calls by the
    /// broker request's socket timeout (60 s), not by the timeout they are given, when a
    /// broker holds the request (seen after the whole cluster froze): the fault suite
    /// saw `send_offsets_to_transaction` block 15 s past a SIGTERM with a 10 s timeout.
    /// While the stage runs the wait is as long as the call; once it is asked to stop, at
    /// most what is left of the shutdown deadline (at least [`STOPPING_CALL_MIN`]). An
    /// abandoned call ends on its own thread; the transaction it belonged to is never
    /// committed (the broker aborts it on its timeout, or the next owner's producer fences
    /// it), so its inputs are re-read: nothing lost, nothing repeated.
    fn bounded<T, F>(&mut self, normal: Duration, call: F) -> KafkaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&StageProducer, Duration) -> KafkaResult<T> + Send + 'static,
    {
        let timeout = self.call_timeout(normal);
        self.on_own_thread(timeout, None, call)
    }

    /// Runs `call(producer, timeout)` on a thread of its own and waits for its result:
    /// while the stage runs, up to [`STUCK_CALL`]; once it is asked to stop, up to the
    /// shutdown deadline, or `after_stop` from the call's start when given (at least
    /// [`STOPPING_CALL_MIN`]). A call waited out is left behind, and noted.
    fn on_own_thread<T, F>(
        &mut self,
        timeout: Duration,
        after_stop: Option<Duration>,
        call: F,
    ) -> KafkaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&StageProducer, Duration) -> KafkaResult<T> + Send + 'static,
    {
        let left_behind = Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
        let producer = self.producer.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("txn-call".into())
            .spawn(move || {
                let _ = tx.send(call(&producer, timeout));
            });
        if let Err(e) = spawned {
            tracing::warn!(stage = self.name, error = %e, "cannot start a thread for a transactional call; the transaction is given up and its inputs re-read");
            return left_behind;
        }
        let started = Instant::now();
        loop {
            match rx.recv_timeout(CALL_POLL) {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return left_behind,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let limit = match self.shutdown.triggered_at() {
                None => started + STUCK_CALL,
                Some(at) => match after_stop {
                    Some(d) => started + d.max(STOPPING_CALL_MIN),
                    None => (at + self.cfg.shutdown_deadline).max(started + STOPPING_CALL_MIN),
                },
            };
            if Instant::now() >= limit {
                self.call_left_behind = true;
                if self.shutdown.is_triggered() {
                    tracing::warn!(stage = self.name, waited = ?started.elapsed(), "stopping: a transactional call still blocked past the shutdown deadline is left behind; its transaction is not committed and its inputs are re-read by the next owner");
                } else {
                    tracing::warn!(stage = self.name, waited = ?started.elapsed(), "a transactional call is stuck in the Kafka client; it is left behind, and a new producer takes over (the transaction is aborted, its inputs re-read)");
                }
                return left_behind;
            }
        }
    }

    /// `normal`, or less once the stage is stopping: what is left of the shutdown
    /// deadline, and at least [`STOPPING_CALL_MIN`]. A broker that does not answer then
    /// cannot hold the stop past the watchdog (a commit that times out is aborted, its
    /// inputs re-read by the next owner: nothing lost, nothing repeated).
    pub(super) fn call_timeout(&self, normal: Duration) -> Duration {
        stop_bounded(
            normal,
            self.shutdown.triggered_at(),
            self.cfg.shutdown_deadline,
            Instant::now(),
        )
    }

    /// Notes a fatal error of the producer: the next step makes a new one.
    fn fatal_seen(&mut self, e: KafkaError) -> Result<Step, KafkaError> {
        if let Some(r) = self.recovery.as_mut() {
            r.fatal = Some(e);
        }
        Ok(Step::Renew)
    }

    /// Replaces the producer with a new one with the same transactional id; its
    /// `init_transactions` (the next step) fences the old epoch and aborts what it had
    /// open. `Ok(false)` when producers were renewed too often (the stage stops, fenced);
    /// `Err` to retry (the producer could not be made).
    fn renew_producer(&mut self) -> Result<bool, KafkaError> {
        let now = Instant::now();
        self.renewals
            .retain(|t| now.duration_since(*t) < RENEWAL_WINDOW);
        if self.renewals.len() >= RENEWALS_MAX {
            return Ok(false);
        }
        let p = self
            .producer_config
            .create_with_context::<_, StageProducer>(
                crate::runtime::kafka::WatchedContext::default(),
            )?;
        tracing::warn!(
            stage = self.name,
            cause = self.recovery.as_ref().map_or("", |r| r.cause.as_str()),
            "the producer cannot go on (a fatal state: its epoch fenced by the broker or its transaction lost; or a call stuck in it); a new producer with the same transactional id takes over"
        );
        self.renewals.push(now);
        self.call_left_behind = false;
        self.sends.clear();
        self.stats.in_flight(0);
        self.producer = p;
        Ok(true)
    }

    pub(super) fn commit_transaction<C, K>(&mut self, consumer: &K) -> Result<(), RuntimeError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        if !self.durability.txn_open() || self.recovery.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        self.write_state()?;
        if self.backlogged() {
            // Sends still waiting for room are not with the producer, so its commit
            // would not wait for them: hand them over first.
            self.flush()?;
        }
        let (tpl, planned) = self.offsets_to_commit();
        // The offsets first; a failure there aborts (a commit without them would let
        // the outputs through and re-read their inputs).
        let offsets = if planned.is_empty() {
            Ok(())
        } else {
            match consumer.group_metadata() {
                Some(cgm) => {
                    let tpl = tpl.clone();
                    self.bounded(COMMIT_TIMEOUT, move |p, t| {
                        p.send_offsets_to_transaction(&tpl, &cgm, t)
                    })
                }
                None => Err(KafkaError::Rebalance(RDKafkaErrorCode::InvalidGroupId)),
            }
        };
        let result = offsets.map_err(|e| (e, false)).and_then(|()| {
            self.bounded(COMMIT_TIMEOUT, |p, t| p.commit_transaction(t))
                .map_err(|e| (e, true))
        });
        self.stats
            .commit_time(started.elapsed().as_secs_f64(), result.is_ok());
        match result {
            Ok(()) => {
                self.durability.set_txn_open(false);
                self.stats.committed();
                self.offsets.committed(planned);
                self.settle()
            }
            Err((e, committing)) => {
                self.begin_recovery(&e, committing);
                Ok(())
            }
        }
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
                self.begin_recovery(&source, false);
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
        for (topic, p) in self.offsets.assignment() {
            let _ = tpl.add_partition(topic, *p);
        }
        let positions: Vec<(String, i32, Offset)> = consumer
            .committed_offsets(tpl, self.call_timeout(RECOVERY_CALL_TIMEOUT))
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
        let partitions =
            super::partition_numbers(self.offsets.assignment().iter().map(|(_, p)| *p));
        self.stage.partitions_revoked(&partitions);
        self.outputs.clear();
        if let Some(r) = &self.restorer {
            let stats = r.restore(&mut self.stage, &partitions);
            // What was just read is the committed state, nothing to write back.
            let _ = super::checkpoint::state_changes(&mut self.stage, &mut self.changes);
            self.changes.clear();
            if !stats.incomplete.is_empty() {
                return Err(Rewind::Broker(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
        }
        self.offsets.rewound();
        for (topic, p, offset) in positions {
            consumer
                .seek(&topic, p, offset, self.call_timeout(RECOVERY_CALL_TIMEOUT))
                .map_err(Rewind::Seek)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_to_what_is_left_of_the_shutdown_deadline() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (normal, asked to stop this long ago, deadline, expected timeout)
        let cases = [
            (s(10), None, s(10), s(10)),
            (s(10), Some(s(0)), s(10), s(10)),
            (s(10), Some(s(4)), s(10), s(6)),
            (s(5), Some(s(2)), s(10), s(5)),
            (s(10), Some(s(9)), s(10), s(1)),
            (s(10), Some(s(30)), s(10), STOPPING_CALL_MIN),
            (ms(100), Some(s(30)), s(10), ms(100)),
        ];
        for (normal, ago, deadline, want) in cases {
            let stop_at = ago.map(|a| now - a);
            assert_eq!(
                stop_bounded(normal, stop_at, deadline, now),
                want,
                "normal {normal:?}, asked {ago:?} ago, deadline {deadline:?}"
            );
        }
    }
}
