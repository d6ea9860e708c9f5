//! The generic stage runner: drives any [`Stage`] core over Kafka, at-least-once (the
//! default) or exactly-once.
//!
//! The loop, per batch:
//! 1. read up to `max_batch` records (or until `max_batch_wait` has passed);
//! 2. decode and check each one; hand it to the core, or send it to the dead-letter
//!    topic with its reason; send every output, keyed;
//! 3. on `tick_interval`, let the core emit what is due on time alone;
//! 4. every `commit_interval`, make it durable. At-least-once, without stopping the loop:
//!    once the broker acknowledged every output sent so far, write the state of every key
//!    that had changed to the stage's changelog, and once that is acknowledged, commit,
//!    per partition, the offset after the last record read (or the lowest offset the core
//!    still holds) as they were when the checkpoint began. Exactly-once: outputs, state
//!    and offsets are one transaction.
//!
//! So an offset is committed only once everything derived from the records before it,
//! and the state that saw them, is durable. A crash re-delivers from the last commit to
//! an owner that restored the state of that same commit.
//!
//! Partitions move between instances through the consumer group. Before a partition is
//! revoked, its owner commits as above (inside the rebalance callback, while it still
//! owns it); before a newly assigned partition is read, its state is restored from the
//! changelog ([`restore`]). In-flight work is bounded by the batch size, the commit
//! interval and the producer queue; nothing queues without limit.

mod context;
mod core;
mod producer;
pub mod restore;
mod stall;
mod steer;

pub use steer::{Clock, Gate, Progress};

use self::context::{lock, RunnerContext};
use self::core::Core;
pub use self::producer::SharedProducer;
use self::restore::StateRestorer;
use super::kafka::FatalError;
use super::{KafkaOptions, Shutdown};
use crate::stage::{InputLimits, Stage};
use crate::telemetry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a stage promises about its outputs when an instance fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Nothing lost; after a crash, the outputs since the last commit may appear twice.
    #[default]
    AtLeastOnce,
    /// Nothing lost, nothing twice, for consumers reading with read_committed: outputs,
    /// state and input offsets commit in one Kafka transaction.
    ExactlyOnce,
}

impl Guarantee {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }

    /// Default time between commits: seconds for at-least-once (a crash re-reads at
    /// most that much), a tenth of one for exactly-once (outputs become visible to
    /// read_committed consumers only when their transaction commits).
    pub fn default_commit_interval(self) -> Duration {
        match self {
            Guarantee::AtLeastOnce => Duration::from_secs(5),
            Guarantee::ExactlyOnce => Duration::from_millis(100),
        }
    }
}

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
    /// Longest wait to fill a batch once its first record arrived. Default 2 ms: outputs
    /// go out as they are made, so a batch only groups the bookkeeping (ticks,
    /// deliveries, checkpoints) and need not wait long.
    pub max_batch_wait: Duration,
    /// How often the core's `tick` runs. Default 500 ms.
    pub tick_interval: Duration,
    /// Time allowed to finish in-flight work, flush and commit on shutdown. Default 10 s.
    pub shutdown_deadline: Duration,
    /// Limits for input checks.
    pub limits: InputLimits,
    /// At-least-once or exactly-once.
    pub guarantee: Guarantee,
    /// Time between commits (and state checkpoints).
    pub commit_interval: Duration,
    /// The stage's compacted state changelog, co-partitioned with its inputs; `None`
    /// runs without one (state starts cold on every assignment).
    pub state_topic: Option<String>,
    /// Longest a restore may take per assignment before the stage goes on with what it
    /// read. Default 5 min.
    pub restore_timeout: Duration,
    /// Largest record (key + value) the stage writes. A dead letter above it keeps its
    /// metadata and the first bytes of the original key and payload, with the
    /// original's size and hash; another record above it is not sent (logged and
    /// counted). Default 1 000 000 bytes, the producer's and under the broker's default
    /// `message.max.bytes`; set it to the smallest `max.message.bytes` of the topics
    /// written.
    pub max_record_bytes: usize,
    /// This instance's stable name: the transactional id in exactly-once mode is
    /// `<group>-<instance_id>`, so a restarted instance fences its previous self.
    pub instance_id: String,
    /// Live counters, readable while the stage runs (by the demo, tests, benches).
    pub progress: Arc<Progress>,
    /// The stage's "now" (default: the wall clock; the demo runs on simulated time).
    pub clock: Clock,
    /// Holds the stage's input while closed (default: none, never held).
    pub gate: Option<Arc<Gate>>,
    /// A schema registry: Confluent-framed inputs are read through it, and outputs are
    /// written in Confluent framing with the ids of our schemas registered there.
    pub registry: Option<Arc<super::registry::SchemaRegistry>>,
    /// A producer shared with the process's other at-least-once stages (default: none,
    /// the stage makes its own). Exactly-once stages always make their own.
    pub shared_producer: Option<SharedProducer>,
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
            max_batch_wait: Duration::from_millis(2),
            tick_interval: Duration::from_millis(500),
            shutdown_deadline: Duration::from_secs(10),
            limits: InputLimits::default(),
            guarantee: Guarantee::AtLeastOnce,
            commit_interval: Guarantee::AtLeastOnce.default_commit_interval(),
            state_topic: None,
            restore_timeout: Duration::from_secs(300),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            instance_id: default_instance_id(),
            progress: Arc::new(Progress::default()),
            clock: Clock::Wall,
            gate: None,
            registry: None,
            shared_producer: None,
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
    /// Successful offset commits (transactions in exactly-once mode).
    pub commits: u64,
    /// State records written to the changelog.
    pub state_writes: u64,
    /// Keys restored from the changelog.
    pub restored_keys: u64,
    /// Changelog records that could not be restored.
    pub restore_unusable: u64,
    /// Transactions aborted (exactly-once).
    pub aborts: u64,
    /// Assignments seen.
    pub assignments: u64,
    /// Sends that found the producer's queue full and waited, in order, for room (the
    /// broker was slow or away); none is dropped.
    pub queue_full_waits: u64,
    /// True when the final commit finished within the shutdown deadline.
    pub clean_shutdown: bool,
}

/// Why a stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka client setup failed: {0}")]
    Setup(#[source] KafkaError),
    /// The state topic does not match the inputs.
    #[error("state topic {topic}: {problem}")]
    StateTopic {
        /// Topic.
        topic: String,
        /// What is wrong.
        problem: String,
    },
    /// A transaction call failed in a way that cannot be retried.
    #[error("transaction failed: {0}")]
    Transaction(#[source] KafkaError),
    /// Another instance with the same transactional id took over; this one must stop.
    #[error("fenced: another instance with the same transactional id took over ({0}); this instance stops")]
    Fenced(#[source] KafkaError),
    /// The client cannot work as configured: refused credentials, a failed TLS
    /// handshake, missing permissions.
    #[error("kafka client failed: {0}")]
    Client(String),
    /// Partitions were lost (the session expired) before they could be committed.
    #[error("partitions lost before they could be committed")]
    Lost,
    /// The stage was stopped while it recovered from a failed exactly-once transaction.
    #[error("stopped while recovering from a failed transaction ({0}); it was aborted, the next owner re-reads from the last commit")]
    Unrecovered(String),
    /// A record the stage made could not be encoded: its type and its schema disagree,
    /// a defect. The stage stops rather than skip the record unseen.
    #[error("cannot encode {what}: {detail}; the stage stops rather than skip it (a defect in perfpilot: please report it)")]
    Encode {
        /// What it was.
        what: &'static str,
        /// The encoder's error.
        detail: String,
    },
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

/// How often a stage whose sends wait for room in the producer's queue looks again.
const BACKLOG_POLL: Duration = Duration::from_millis(2);

/// The stage's producer: its client errors and librdkafka's log lines rate-limited.
pub(crate) type StageProducer = FutureProducer<super::kafka::WatchedContext>;

/// Default of [`RunnerConfig::max_record_bytes`].
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

/// `<hostname>-<pid>`: unique on a machine, so two instances never fence each other;
/// set `--instance-id` to a stable name for restarts to fence their predecessor.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "perfpilot".into());
    format!("{host}-{}", std::process::id())
}

/// Runs `stage` until `shutdown` triggers, then finishes in-flight work, commits and
/// leaves the group within `cfg.shutdown_deadline`.
pub async fn run_stage<S: Stage>(
    stage: S,
    kafka: &KafkaOptions,
    mut cfg: RunnerConfig,
    shutdown: Shutdown,
) -> Result<RunReport, RuntimeError> {
    let name = stage.name();
    // Refused credentials and the like stop the stage now, with their cause.
    let check = kafka.clone();
    tokio::task::spawn_blocking(move || {
        super::kafka::check_connection(&check, Duration::from_secs(30))
    })
    .await
    .map_err(|e| RuntimeError::Client(e.to_string()))?
    .map_err(RuntimeError::Client)?;
    fit_records_to_topics(name, kafka, &mut cfg).await;
    let exactly_once = cfg.guarantee == Guarantee::ExactlyOnce;
    let shared = match cfg.shared_producer.take() {
        Some(_) if exactly_once => {
            tracing::info!(
                stage = name,
                "exactly-once: the stage makes a producer of its own, not the shared one"
            );
            None
        }
        shared => shared,
    };
    let (producer, producer_config): (StageProducer, _) = match shared {
        Some(shared) => {
            cfg.max_record_bytes = cfg.max_record_bytes.min(shared.max_record_bytes);
            (shared.producer, shared.config)
        }
        None => {
            let transactional_id =
                exactly_once.then(|| format!("{}-{}", cfg.group_id, cfg.instance_id));
            let config =
                producer::stage_producer_config(kafka, cfg.max_record_bytes, transactional_id);
            let producer = config
                .clone()
                .create_with_context(super::kafka::WatchedContext::default())
                .map_err(RuntimeError::Setup)?;
            (producer, config)
        }
    };
    if exactly_once {
        // Fences any earlier producer with this id and aborts its open transaction.
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(RuntimeError::Transaction)?;
    }
    let mut stage = stage;
    let restorer = match (&cfg.state_topic, stage.state().is_some()) {
        (Some(topic), true) => Some(
            StateRestorer::new(kafka, topic, cfg.restore_timeout, shutdown.clone())
                .map_err(RuntimeError::Setup)?,
        ),
        _ => None,
    };
    if let Some(r) = &restorer {
        check_co_partitioned(&producer, r.topic(), &cfg.input_topics)?;
    }
    let mut consumer_config = kafka.consumer_config(&cfg.group_id);
    consumer_config
        .set("isolation.level", "read_committed")
        // Statistics carry the consumer lag per partition (telemetry::CONSUMER_LAG).
        .set("statistics.interval.ms", "5000");
    for (k, v) in &kafka.consumer_properties {
        consumer_config.set(k, v);
    }
    tracing::info!(
        stage = name,
        group = %cfg.group_id,
        inputs = %telemetry::list(&cfg.input_topics),
        output = %cfg.output_topic,
        state = restorer.as_ref().map_or("none", StateRestorer::topic),
        guarantee = cfg.guarantee.as_str(),
        commit_interval = ?cfg.commit_interval,
        bootstrap = %kafka.bootstrap_servers,
        "stage started"
    );
    let shutdown_deadline = cfg.shutdown_deadline;
    let core = Arc::new(Mutex::new(Core::new(
        stage,
        cfg,
        producer,
        producer_config,
        restorer,
        shutdown.clone(),
    )));
    let consumer: StreamConsumer<RunnerContext<S>> = consumer_config
        .create_with_context(RunnerContext {
            core: core.clone(),
            fatal: FatalError::default(),
            name,
            stalls: Mutex::default(),
            stalled: Mutex::default(),
        })
        .map_err(RuntimeError::Setup)?;
    let topics: Vec<String> = lock(&core).cfg.input_topics.clone();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(RuntimeError::Setup)?;

    let result = run_loop(&core, &consumer, &shutdown).await;
    let finished = {
        let started = Instant::now();
        let r = lock(&core).finish(&consumer);
        (r, started.elapsed() <= shutdown_deadline)
    };
    let clean = match (&result, finished) {
        (Ok(()), (Ok(()), true)) => true,
        (_, (Err(e), _)) => {
            tracing::error!(stage = name, error = %e, "final commit failed; uncommitted records will be re-processed");
            false
        }
        (_, (Ok(()), false)) => {
            tracing::error!(stage = name, deadline = ?shutdown_deadline, "shutdown took longer than its deadline");
            false
        }
        _ => false,
    };
    // Leaving the group runs the revoke callback: a last checkpoint, nothing pending.
    consumer.unsubscribe();
    drop(consumer);
    let report = {
        let mut c = lock(&core);
        c.stats.report.clean_shutdown = clean;
        c.stats.report.clone()
    };
    tracing::info!(
        stage = name,
        consumed = report.consumed,
        processed = report.processed,
        dead_lettered = report.dead_lettered,
        produced = report.produced,
        commits = report.commits,
        state_writes = report.state_writes,
        restored_keys = report.restored_keys,
        aborts = report.aborts,
        clean_shutdown = report.clean_shutdown,
        "stage stopped"
    );
    result.map(|()| report)
}

/// Lowers `cfg.max_record_bytes` to what the topics the stage writes accept, as their
/// `max.message.bytes` says, so no record the stage writes is refused by the broker
/// (a refusal used to stop the stage). What stays: the setting when it is smaller, or
/// when the configs cannot be read.
async fn fit_records_to_topics(name: &'static str, kafka: &KafkaOptions, cfg: &mut RunnerConfig) {
    if !kafka.describes_configs {
        return;
    }
    let mut written = vec![cfg.output_topic.as_str(), cfg.deadletter_topic.as_str()];
    written.extend(cfg.state_topic.as_deref());
    match super::topics::smallest_record_limit(kafka, &written).await {
        Ok(Some(limit)) => {
            // A batch of one record: its framing, and lz4's growth of what does not
            // compress (up to 0.4 %).
            let fits = limit.saturating_sub(limit / 100 + 1024).max(4096);
            if fits < cfg.max_record_bytes {
                tracing::info!(stage = name, topics = %telemetry::list(&written), max_message_bytes = limit, max_record_bytes = fits, setting = cfg.max_record_bytes, "records are kept within the smallest max.message.bytes of the topics written");
                cfg.max_record_bytes = fits;
            }
        }
        Ok(None) => {
            tracing::debug!(stage = name, topics = %telemetry::list(&written), "no max.message.bytes reported; --max-record-bytes applies");
        }
        Err(e) => {
            tracing::warn!(stage = name, error = %e, max_record_bytes = cfg.max_record_bytes, "cannot read the topics' max.message.bytes; --max-record-bytes applies");
        }
    }
}

/// Refuses a state topic with fewer partitions than an input: state of partition `p`
/// is written to partition `p`.
fn check_co_partitioned(
    producer: &StageProducer,
    state_topic: &str,
    inputs: &[String],
) -> Result<(), RuntimeError> {
    let count = |topic: &str| -> Result<usize, RuntimeError> {
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(RuntimeError::Setup)?;
        Ok(md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    };
    let state = count(state_topic)?;
    for input in inputs {
        let n = count(input)?;
        if state < n {
            return Err(RuntimeError::StateTopic {
                topic: state_topic.to_string(),
                problem: format!(
                    "has {state} partitions but input {input} has {n}; the changelog must have at least as many (create it with `perfpilot topics create`)"
                ),
            });
        }
    }
    Ok(())
}

/// A number in [0, 1), different in every call and process.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// Handles one record under the lock: `(handled, more)`, as [`Core::handle`] and
/// whether the batch may go on. A Confluent-framed record whose writer schema is not
/// cached yet first waits (without the lock) for the registry to give it.
async fn handle_one<S: Stage>(
    core: &Mutex<Core<S>>,
    registry: Option<&super::registry::SchemaRegistry>,
    m: KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
    shutdown: &Shutdown,
) -> Result<(bool, bool), RuntimeError> {
    let unknown_id = match (registry, &m) {
        (Some(r), Ok(msg)) => crate::event::confluent::confluent_schema_id(
            rdkafka::Message::payload(msg).unwrap_or_default(),
        )
        .filter(|id| !r.knows(*id)),
        _ => None,
    };
    match (unknown_id, registry) {
        (Some(id), Some(r)) => {
            // The message is copied out so that no librdkafka handle is held across the
            // wait; this happens once per new schema id.
            let owned = m.map(|msg| msg.detach());
            r.ensure(id, shutdown.wait()).await;
            if shutdown.is_triggered() && !r.knows(id) {
                // Stopping while the registry is away: the record is left unread (its
                // offset is not committed), for whoever reads the partition next.
                return Ok((false, false));
            }
            handle_locked(core, owned)
        }
        _ => handle_locked(core, m),
    }
}

fn handle_locked<S: Stage, M: rdkafka::Message>(
    core: &Mutex<Core<S>>,
    m: KafkaResult<M>,
) -> Result<(bool, bool), RuntimeError> {
    let mut c = lock(core);
    let r = c.handle(m);
    // Ok(None): a transaction failed; the batch ends and recovery begins.
    let ok = c.absorb(r).map(|ok| ok.unwrap_or(false))?;
    Ok((ok, !c.backlogged()))
}

async fn run_loop<S: Stage>(
    core: &Mutex<Core<S>>,
    consumer: &StreamConsumer<RunnerContext<S>>,
    shutdown: &Shutdown,
) -> Result<(), RuntimeError> {
    let (tick_interval, commit_interval, max_batch, max_batch_wait, gate, registry) = {
        let c = lock(core);
        (
            c.cfg.tick_interval,
            c.cfg.commit_interval,
            c.cfg.max_batch,
            c.cfg.max_batch_wait,
            c.cfg.gate.clone(),
            c.cfg.registry.clone(),
        )
    };
    let mut next_tick = Instant::now() + tick_interval;
    // The first commit comes after 0.5–1.5 intervals: instances (and stages) started
    // together would otherwise checkpoint in step, every burst of state at once.
    let mut next_commit = Instant::now() + commit_interval.mul_f64(0.5 + jitter());
    loop {
        // A failed exactly-once transaction: no reading until it is aborted and the
        // state rewound; each step is retried on its own schedule.
        let retry = lock(core).recovering().map(|r| r.next_try());
        if let Some(at) = retry {
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            lock(core).recover(consumer)?;
            if lock(core).recovering().is_none() {
                next_commit = Instant::now() + commit_interval;
            }
            continue;
        }
        let stalled = consumer.context().take_stalled();
        if !stalled.is_empty() {
            if let Err(e) = lock(core).refetch(consumer, &stalled) {
                // The watch names them again a few intervals on.
                tracing::warn!(error = %e, "could not assign the stalled partitions again; will retry");
            }
        }
        if lock(core).backlogged() {
            // The producer's queue is full: nothing is read until the sends waiting for
            // room are handed over. The wait holds neither the lock nor the thread.
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(BACKLOG_POLL) => {}
            }
            if let Some(e) = consumer.context().fatal.get() {
                return Err(RuntimeError::Client(e));
            }
            let mut c = lock(core);
            let r = c.settle();
            c.absorb(r)?;
            continue;
        }
        let mut wake = next_tick.min(next_commit);
        if lock(core).checkpoint_pending() {
            // A checkpoint under way moves on as its sends are acknowledged.
            wake = wake.min(Instant::now() + Duration::from_millis(5));
        }
        let first = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            m = consumer.recv() => Some(m),
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        let mut full = false;
        if let (Some(_), Some(gate)) = (&first, &gate) {
            // A driver holds the input: the record received waits, unhandled.
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                _ = gate.wait_open() => {}
            }
        }
        if let Some(m) = first {
            // (handled, more): `more` is false when the batch must end early, because
            // sends wait for room in the producer's queue.
            let (mut ok, mut more) = handle_one(core, registry.as_deref(), m, shutdown).await?;
            let batch_end = Instant::now() + max_batch_wait;
            let mut n = 1;
            while ok && more && n < max_batch {
                tokio::select! {
                    biased;
                    m = consumer.recv() => {
                        (ok, more) = handle_one(core, registry.as_deref(), m, shutdown).await?;
                        n += 1;
                    }
                    _ = tokio::time::sleep_until(batch_end.into()) => break,
                }
            }
            if lock(core).recovering().is_some() {
                continue;
            }
            full = n >= max_batch;
            if !ok {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(e) = consumer.context().fatal.get() {
            return Err(RuntimeError::Client(e));
        }
        {
            let mut c = lock(core);
            if let Some(e) = c.failure.take() {
                return Err(e);
            }
            if Instant::now() >= next_tick {
                let r = c.tick();
                c.absorb(r)?;
                next_tick = Instant::now() + tick_interval;
            }
            let r = c.settle();
            c.absorb(r)?;
            if c.recovering().is_some() {
                continue;
            }
            if Instant::now() >= next_commit {
                let r = c.commit_due(consumer);
                c.absorb(r)?;
                next_commit = Instant::now() + commit_interval;
            } else {
                let r = c.advance_checkpoint(consumer);
                c.absorb(r)?;
            }
            telemetry::batch(c.name);
        }
        // librdkafka's queue is not tokio-aware: while records are waiting, `recv` is
        // always ready and this task would never give its worker thread back. Stages
        // sharing a process (the demo, the benches, a metrics endpoint) would wait for a
        // busy stage's backlog; a yield after each full batch lets them in.
        if full {
            tokio::task::yield_now().await;
        }
    }
}
