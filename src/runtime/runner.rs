//! The generic stage runner: drives any [`Stage`] core over Kafka with at-least-once
//! delivery.
//!
//! The loop, per batch:
//! 1. read up to `max_batch` records (or until `max_batch_wait` has passed);
//! 2. decode and check each one; hand it to the core, or send it to the dead-letter
//!    topic with its reason; send every output, keyed, through an idempotent producer;
//! 3. on `tick_interval`, let the core emit what is due on time alone;
//! 4. wait until the broker acknowledged every output of the batch;
//! 5. commit, per partition, the offset after the last record read — or the lowest
//!    offset the core still holds, whichever is lower.
//!
//! So an offset is committed only once everything derived from the records before it
//! is durable. A crash re-delivers from the last commit (at-least-once). In-flight work
//! is bounded by the batch size and the producer queue; nothing queues without limit.

use super::{now_ms, KafkaOptions, Shutdown};
use crate::event::{encode, DeadLetter};
use crate::stage::{InputLimits, Keyed, RecordMeta, Rejection, Stage, StageInput};
use crate::telemetry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a stage is wired to Kafka.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Consumer group; one per stage, shared by all its instances.
    pub group_id: String,
    /// Topics read.
    pub input_topics: Vec<String>,
    /// Topic written.
    pub output_topic: String,
    /// Where unusable inputs go.
    pub deadletter_topic: String,
    /// Most records per batch (bounds in-flight work). Default 500.
    pub max_batch: usize,
    /// Longest wait to fill a batch once its first record arrived. Default 20 ms.
    pub max_batch_wait: Duration,
    /// How often the core's `tick` runs. Default 500 ms.
    pub tick_interval: Duration,
    /// Time allowed to finish in-flight work, flush and commit on shutdown. Default 10 s.
    pub shutdown_deadline: Duration,
    /// Limits for input checks.
    pub limits: InputLimits,
    /// Live counters, readable while the stage runs (by the demo, tests, benches).
    pub progress: Arc<Progress>,
}

/// Live counters of a running stage.
#[derive(Debug, Default)]
pub struct Progress {
    consumed: AtomicU64,
    dead_lettered: AtomicU64,
    produced: AtomicU64,
}

impl Progress {
    /// Records read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }
    /// Records dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
    /// Outputs acknowledged so far.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }
}

impl RunnerConfig {
    /// Defaults for a stage reading `inputs` and writing `output`.
    pub fn new(
        group_id: impl Into<String>,
        inputs: Vec<String>,
        output: String,
        deadletter: String,
    ) -> Self {
        RunnerConfig {
            group_id: group_id.into(),
            input_topics: inputs,
            output_topic: output,
            deadletter_topic: deadletter,
            max_batch: 500,
            max_batch_wait: Duration::from_millis(20),
            tick_interval: Duration::from_millis(500),
            shutdown_deadline: Duration::from_secs(10),
            limits: InputLimits::default(),
            progress: Arc::new(Progress::default()),
        }
    }
}

/// What a stage did during one run, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// Records read from the input topics.
    pub consumed: u64,
    /// Records handed to the core.
    pub processed: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Output records acknowledged by the broker.
    pub produced: u64,
    /// Successful offset commits.
    pub commits: u64,
    /// Assignments seen.
    pub assignments: u64,
    /// True when the final commit finished within the shutdown deadline.
    pub clean_shutdown: bool,
}

/// Why a stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka client setup failed: {0}")]
    Setup(#[source] KafkaError),
    /// An output could not be delivered; offsets were not committed past it, so a
    /// restart re-processes the batch.
    #[error("delivery to {topic} failed: {source}; offsets were not committed, a restart re-processes the batch")]
    Delivery {
        /// Topic.
        topic: String,
        /// Cause.
        #[source]
        source: KafkaError,
    },
}

/// Partition changes recorded by the consumer's rebalance callbacks, which run inside
/// `recv()` on the runner's own task; the runner applies them to the core right after.
#[derive(Default)]
struct RebalanceLog {
    events: Mutex<Vec<(bool, Vec<i32>)>>,
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.push(false, tpl);
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.push(true, tpl);
        }
    }
}

impl RebalanceLog {
    fn push(&self, assigned: bool, tpl: &TopicPartitionList) {
        let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        parts.sort_unstable();
        parts.dedup();
        if let Ok(mut ev) = self.events.lock() {
            ev.push((assigned, parts));
        }
    }
    fn drain(&self) -> Vec<(bool, Vec<i32>)> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

struct Runner<S: Stage> {
    stage: S,
    cfg: RunnerConfig,
    name: &'static str,
    producer: FutureProducer,
    outputs: Vec<S::Output>,
    inflight: Vec<(DeliveryFuture, &'static str)>,
    /// Offset after the last record read, per (topic, partition), for assigned partitions.
    read_upto: HashMap<(String, i32), i64>,
    committed: HashMap<(String, i32), i64>,
    report: RunReport,
}

/// Runs `stage` until `shutdown` triggers, then finishes in-flight work, flushes,
/// commits and leaves the group within `cfg.shutdown_deadline`.
pub async fn run_stage<S: Stage>(
    stage: S,
    kafka: &KafkaOptions,
    cfg: RunnerConfig,
    shutdown: Shutdown,
) -> Result<RunReport, RuntimeError> {
    let consumer: StreamConsumer<RebalanceLog> = kafka
        .consumer_config(&cfg.group_id)
        .create_with_context(RebalanceLog::default())
        .map_err(RuntimeError::Setup)?;
    let topics: Vec<&str> = cfg.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(RuntimeError::Setup)?;
    let producer: FutureProducer = kafka
        .producer_config()
        .create()
        .map_err(RuntimeError::Setup)?;
    let name = stage.name();
    tracing::info!(
        stage = name,
        group = %cfg.group_id,
        inputs = ?cfg.input_topics,
        output = %cfg.output_topic,
        bootstrap = %kafka.bootstrap_servers,
        "stage started"
    );
    let mut runner = Runner {
        stage,
        name,
        producer,
        outputs: Vec::new(),
        inflight: Vec::new(),
        read_upto: HashMap::new(),
        committed: HashMap::new(),
        report: RunReport::default(),
        cfg,
    };
    let result = runner.run(&consumer, &shutdown).await;
    let deadline = runner.cfg.shutdown_deadline;
    let drained = tokio::time::timeout(deadline, runner.finish(&consumer)).await;
    match (&result, drained) {
        (Ok(()), Ok(Ok(()))) => runner.report.clean_shutdown = true,
        (_, Ok(Err(e))) => tracing::error!(stage = name, error = %e, "final flush failed; uncommitted records will be re-processed"),
        (_, Err(_)) => tracing::error!(stage = name, ?deadline, "shutdown deadline passed before in-flight work finished; uncommitted records will be re-processed"),
        _ => {}
    }
    consumer.unsubscribe();
    tracing::info!(stage = name, report = ?runner.report, "stage stopped");
    result.map(|()| runner.report)
}

impl<S: Stage> Runner<S> {
    async fn run(
        &mut self,
        consumer: &StreamConsumer<RebalanceLog>,
        shutdown: &Shutdown,
    ) -> Result<(), RuntimeError> {
        let mut next_tick = Instant::now() + self.cfg.tick_interval;
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                m = consumer.recv() => Some(m),
                _ = tokio::time::sleep_until(next_tick.into()) => None,
            };
            self.apply_rebalances(consumer);
            if let Some(m) = first {
                self.handle(m).await?;
                let batch_end = Instant::now() + self.cfg.max_batch_wait;
                let mut n = 1;
                while n < self.cfg.max_batch {
                    tokio::select! {
                        biased;
                        m = consumer.recv() => { self.apply_rebalances(consumer); self.handle(m).await?; n += 1; }
                        _ = tokio::time::sleep_until(batch_end.into()) => break,
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.tick().await?;
                next_tick = Instant::now() + self.cfg.tick_interval;
            }
            self.await_deliveries().await?;
            self.commit(consumer);
            telemetry::batch(self.name);
        }
    }

    /// Finishes in-flight work after the loop ended: deliveries, flush, final commit.
    async fn finish(
        &mut self,
        consumer: &StreamConsumer<RebalanceLog>,
    ) -> Result<(), RuntimeError> {
        self.await_deliveries().await?;
        let remaining = self.cfg.shutdown_deadline;
        self.producer
            .flush(remaining)
            .map_err(|source| RuntimeError::Delivery {
                topic: self.cfg.output_topic.clone(),
                source,
            })?;
        self.commit(consumer);
        Ok(())
    }

    fn apply_rebalances(&mut self, consumer: &StreamConsumer<RebalanceLog>) {
        for (assigned, parts) in consumer.context().drain() {
            if assigned {
                self.report.assignments += 1;
                telemetry::rebalance(self.name, "assigned", &parts);
                self.stage.partitions_assigned(&parts);
            } else {
                telemetry::rebalance(self.name, "revoked", &parts);
                self.stage.partitions_revoked(&parts);
                self.read_upto.retain(|(_, p), _| !parts.contains(p));
                self.committed.retain(|(_, p), _| !parts.contains(p));
            }
        }
    }

    async fn handle(
        &mut self,
        m: Result<BorrowedMessage<'_>, KafkaError>,
    ) -> Result<(), RuntimeError> {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                // Consumer errors are reported by librdkafka and retried internally.
                tracing::warn!(stage = self.name, error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
        };
        self.report.consumed += 1;
        self.cfg.progress.consumed.fetch_add(1, Ordering::Relaxed);
        telemetry::records_in(self.name, 1);
        let now = now_ms();
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
                telemetry::event_time_lag(self.name, (now - input.event_time_ms()) as f64 / 1000.0);
                let started = Instant::now();
                self.stage.process(input, &meta, &mut self.outputs);
                telemetry::processing_time(self.name, started.elapsed().as_secs_f64());
                self.report.processed += 1;
                self.send_outputs().await?;
            }
            Err(rej) => {
                self.dead_letter(&m, rej, now).await?;
            }
        }
        self.read_upto
            .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        Ok(())
    }

    async fn dead_letter(
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
        };
        // A dead letter is built from plain bytes and strings: encoding cannot fail
        // unless the schema itself is broken, which the schema tests rule out.
        match encode(&dl) {
            Ok(bytes) => {
                let key = m.key().map(<[u8]>::to_vec);
                let topic = self.cfg.deadletter_topic.clone();
                self.send(&topic, key.as_deref(), &bytes, "deadletter")
                    .await
            }
            Err(e) => {
                tracing::error!(stage = self.name, error = %e, "cannot encode a dead letter");
                Ok(())
            }
        }
    }

    async fn send_outputs(&mut self) -> Result<(), RuntimeError> {
        if self.outputs.is_empty() {
            return Ok(());
        }
        let topic = self.cfg.output_topic.clone();
        let outputs = std::mem::take(&mut self.outputs);
        for out in &outputs {
            match encode(out) {
                Ok(bytes) => {
                    self.send(&topic, Some(out.key().as_bytes()), &bytes, "output")
                        .await?
                }
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

    async fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        what: &'static str,
    ) -> Result<(), RuntimeError> {
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send_result(record) {
                Ok(fut) => {
                    self.inflight.push((fut, what));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Backpressure: wait for what is in flight, then retry.
                    telemetry::backpressure(self.name);
                    self.await_deliveries().await?;
                    if self.inflight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
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

    async fn tick(&mut self) -> Result<(), RuntimeError> {
        self.stage.tick(now_ms(), &mut self.outputs);
        self.send_outputs().await?;
        telemetry::active_series(self.name, self.stage.active_series());
        telemetry::core_counters(self.name, &self.stage.counters());
        Ok(())
    }

    async fn await_deliveries(&mut self) -> Result<(), RuntimeError> {
        let mut failure = None;
        let mut produced = 0;
        for (fut, what) in self.inflight.drain(..) {
            let topic = || {
                if what == "output" {
                    "output topic".to_string()
                } else {
                    "dead-letter topic".to_string()
                }
            };
            match fut.await {
                Ok(Ok(_)) => {
                    if what == "output" {
                        produced += 1;
                    }
                }
                Ok(Err((source, _))) => {
                    failure.get_or_insert(RuntimeError::Delivery {
                        topic: topic(),
                        source,
                    });
                }
                Err(_) => {
                    failure.get_or_insert(RuntimeError::Delivery {
                        topic: topic(),
                        source: KafkaError::Canceled,
                    });
                }
            }
        }
        self.report.produced += produced;
        self.cfg
            .progress
            .produced
            .fetch_add(produced, Ordering::Relaxed);
        telemetry::records_out(self.name, produced);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits what is safe: per partition, the offset after the last record read,
    /// but never past a record the core still holds.
    fn commit(&mut self, consumer: &StreamConsumer<RebalanceLog>) {
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
        if planned.is_empty() {
            return;
        }
        let started = Instant::now();
        // A synchronous commit: its latency is measured, and a batch only counts as
        // committed once the broker said so.
        let result = consumer.commit(&tpl, CommitMode::Sync);
        telemetry::commit(self.name, started.elapsed().as_secs_f64(), result.is_ok());
        match result {
            Ok(()) => {
                self.report.commits += 1;
                self.committed.extend(planned);
            }
            // During a rebalance commits fail; the records are re-processed by the next
            // owner or committed with the next batch.
            Err(e) => {
                tracing::warn!(stage = self.name, error = %e, "offset commit failed; will retry with the next batch")
            }
        }
    }
}
