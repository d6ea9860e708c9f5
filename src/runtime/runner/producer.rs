//! The stage's producer: one of its own, or one shared by the at-least-once stages of a
//! process ([`SharedProducer`]).
//!
//! Four stages in one process (the demo, `bench latency --through decisions`) each had
//! a producer: four sets of librdkafka threads, and four produce requests to each broker
//! every linger period where one would carry them all. Sharing is safe at least once:
//! each record is tracked by its own delivery future, and a checkpoint's flush waits for
//! the other stages' records too, which only makes it later, never wrong. Exactly-once
//! stages keep their own, since a transaction belongs to one producer.

use super::{RuntimeError, StageProducer};
use crate::runtime::KafkaOptions;
use rdkafka::ClientConfig;
use std::fmt;

/// Room for the record batch framing around the largest record.
const BATCH_FRAMING: usize = 64 * 1024;

/// The producer settings of a stage writing records of up to `max_record_bytes`:
/// `transactional_id` for exactly-once, `None` for at-least-once.
pub(super) fn stage_producer_config(
    kafka: &KafkaOptions,
    max_record_bytes: usize,
    transactional_id: Option<String>,
) -> ClientConfig {
    let mut config = kafka.producer_config();
    config.set(
        "message.max.bytes",
        (max_record_bytes + BATCH_FRAMING).to_string(),
    );
    match transactional_id {
        None => {
            // At-least-once: a delivery waits for the broker however long it is away
            // (the producer retries with backoff), instead of failing after 30 s and
            // stopping the stage. The queue below bounds what waits; when it is full
            // the stage stops reading until deliveries resume. (Exactly-once cannot: a
            // transaction's sends must finish within its timeout.)
            config
                .set("message.timeout.ms", "0")
                .set("queue.buffering.max.kbytes", "262144");
        }
        Some(id) => {
            config
                .set("transactional.id", id)
                // An instance that dies mid-transaction blocks read_committed readers
                // of its partitions until this passes (or until it restarts with its id).
                .set("transaction.timeout.ms", "15000")
                .set("message.timeout.ms", "15000");
        }
    }
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    config
}

/// One producer for every at-least-once stage of a process: set it in each stage's
/// [`super::RunnerConfig::shared_producer`]. Clones share the producer.
#[derive(Clone)]
pub struct SharedProducer {
    pub(super) producer: StageProducer,
    pub(super) config: ClientConfig,
    /// Largest record it was made for; stages sharing it keep within it.
    pub(super) max_record_bytes: usize,
}

impl SharedProducer {
    /// A producer with the stages' at-least-once settings, for records of up to
    /// `max_record_bytes`.
    pub fn new(kafka: &KafkaOptions, max_record_bytes: usize) -> Result<Self, RuntimeError> {
        let config = stage_producer_config(kafka, max_record_bytes, None);
        let producer = config
            .clone()
            .create_with_context(crate::runtime::kafka::WatchedContext::default())
            .map_err(RuntimeError::Setup)?;
        Ok(SharedProducer {
            producer,
            config,
            max_record_bytes,
        })
    }
}

impl fmt::Debug for SharedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedProducer")
            .field("max_record_bytes", &self.max_record_bytes)
            .finish_non_exhaustive()
    }
}
