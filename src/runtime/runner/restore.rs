//! Restoring a stage's state from its changelog when partitions are assigned.
//!
//! The changelog is co-partitioned with the input: the state of every key read from
//! input partition `p` lives in partition `p` of `<prefix><stage>-state`. A new owner
//! reads each assigned partition from its beginning to its end (the last stable offset:
//! only committed transactions count) and hands every record to the core, one at a
//! time, before it processes any input of that partition. Memory stays bounded by the
//! core's own table limit, however long the changelog has grown: a compacted topic
//! holds one record per live key, and superseded versions of a key overwrite each other.

use super::super::{KafkaOptions, Shutdown};
use crate::stage::Stage;
use crate::telemetry;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Unusable state records logged one by one per restore; the rest are counted.
const LOGGED_UNUSABLE: u64 = 10;

/// What one restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    /// Changelog records read.
    pub records: u64,
    /// Keys restored (a key written twice counts twice).
    pub restored: u64,
    /// Tombstones applied.
    pub forgotten: u64,
    /// Records that could not be used (unreadable, wrong version, table full): the key
    /// starts cold.
    pub unusable: u64,
    /// Partitions whose end was not reached within the restore timeout.
    pub incomplete: Vec<i32>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The restore consumer's context: the end of a partition is what a restore waits for,
/// not an error worth a log line (librdkafka reports it through the error callback too).
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::runtime::kafka::log_limited(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            crate::runtime::kafka::log_client_error("state restore", &error, reason);
        }
    }
}

impl ConsumerContext for RestoreContext {}

/// Reads changelog partitions; one per runner, with no consumer group.
pub(super) struct StateRestorer {
    consumer: BaseConsumer<RestoreContext>,
    topic: String,
    timeout: Duration,
    /// A restore stops early when the stage is asked to stop (a broker that is away
    /// would otherwise hold the shutdown for the whole timeout).
    shutdown: Shutdown,
}

impl StateRestorer {
    /// A restorer for `topic`, giving up on a partition after `timeout`.
    pub(super) fn new(
        kafka: &KafkaOptions,
        topic: &str,
        timeout: Duration,
        shutdown: Shutdown,
    ) -> Result<Self, KafkaError> {
        let mut config = kafka.admin_config();
        config
            .set("group.id", format!("{topic}-restore"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            // Records are applied as they come: a small prefetch bounds the memory a
            // long changelog can take while it is read. librdkafka counts the prefetch
            // in compressed bytes and keeps a fetched batch decompressed until its last
            // record is read, so the per-partition fetch is what bounds memory: state
            // records compress up to ~45x (lz4, repetitive snapshots), and 256 KiB per
            // partition held ~11 MB decompressed each (heaptrack: 68 MB over 6
            // partitions, the restore test's RSS spikes). A partition over its prefetch
            // waits fetch.queue.backoff.ms (1 s by default) to fetch again; 10 ms keeps
            // small fetches fast (the test's restore: 9 s with 256 KiB, 1.9 s now).
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "1024")
            .set("max.partition.fetch.bytes", "32768")
            .set("fetch.max.bytes", "1048576")
            .set("fetch.queue.backoff.ms", "10")
            .set("auto.offset.reset", "earliest");
        Ok(StateRestorer {
            consumer: config.create_with_context(RestoreContext)?,
            topic: topic.to_string(),
            timeout,
            shutdown,
        })
    }

    /// The state topic.
    pub(super) fn topic(&self) -> &str {
        &self.topic
    }

    /// Restores `partitions` into `stage`: every changelog record from the beginning to
    /// the end of each partition, in order.
    pub(super) fn restore<S: Stage>(&self, stage: &mut S, partitions: &[i32]) -> RestoreStats {
        let started = Instant::now();
        let mut stats = RestoreStats::default();
        if partitions.is_empty() {
            return stats;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Beginning) {
                tracing::warn!(topic = %self.topic, partition = p, error = %e, "cannot restore partition");
            }
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::error!(topic = %self.topic, error = %e, "cannot read the state changelog; partitions start cold");
            stats.incomplete = partitions.to_vec();
            return stats;
        }
        let mut pending: BTreeSet<i32> = partitions.iter().copied().collect();
        let deadline = started + self.timeout;
        while !pending.is_empty() && Instant::now() < deadline && !self.shutdown.is_triggered() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "error while restoring state; retrying");
                }
                Some(Ok(m)) => {
                    stats.records += 1;
                    let partition = m.partition();
                    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        stats.unusable += 1;
                        continue;
                    };
                    let Some(state) = stage.state() else {
                        continue;
                    };
                    match m.payload() {
                        None => {
                            state.forget(key);
                            stats.forgotten += 1;
                        }
                        Some(bytes) => match state.restore(partition, key, bytes) {
                            Ok(()) => stats.restored += 1,
                            Err(e) => {
                                stats.unusable += 1;
                                // The first few in detail; the count is in the summary.
                                if stats.unusable <= LOGGED_UNUSABLE {
                                    tracing::warn!(topic = %self.topic, partition, offset = m.offset(), error = %e, "state record skipped; the key starts cold");
                                }
                            }
                        },
                    }
                }
            }
        }
        if let Err(e) = self.consumer.unassign() {
            tracing::warn!(topic = %self.topic, error = %e, "cannot release the changelog partitions");
        }
        stats.incomplete = pending.into_iter().collect();
        stats.elapsed = started.elapsed();
        if !stats.incomplete.is_empty() {
            tracing::error!(topic = %self.topic, partitions = %telemetry::list(&stats.incomplete), timeout = ?self.timeout, "the end of the changelog was not reached in time; those partitions continue from what was read");
        }
        telemetry::restore(
            stage.name(),
            stats.elapsed.as_secs_f64(),
            stats.restored,
            stats.unusable,
        );
        tracing::info!(stage = stage.name(), partitions = %telemetry::list(partitions), records = stats.records, restored = stats.restored, forgotten = stats.forgotten, unusable = stats.unusable, elapsed = ?stats.elapsed, "state restored");
        stats
    }
}
