//! The embedded broker: librdkafka's in-process mock cluster, for `demo` and tests.
//!
//! It speaks the real Kafka protocol on a loopback port, but has no admin API, no
//! transactions and no compaction (see KAFKA-NOTES.md), so topics are created through
//! the mock's own call. `MockCluster` is neither `Send` nor `Sync`: keep it on the
//! task that created it and hand out `bootstrap_servers()`.

use super::Topics;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// A running embedded broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(EmbeddedBroker {
            cluster: MockCluster::new(brokers)?,
        })
    }

    /// `host:port` list to connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates every perfpilot topic with `partitions` partitions.
    pub fn create_topics(
        &self,
        topics: &Topics,
        partitions: i32,
    ) -> Result<(), rdkafka::error::KafkaError> {
        for spec in topics.specs() {
            self.cluster.create_topic(&spec.name, partitions, 1)?;
        }
        Ok(())
    }

    /// Creates one topic.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<(), rdkafka::error::KafkaError> {
        self.cluster.create_topic(name, partitions, 1)
    }

    /// The next requests of kind `api`, from any client, fail with `errors` in turn:
    /// how tests reproduce a broker's refusals (a coordinator that moved, say).
    pub fn fail_next_requests(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.cluster.request_errors(api, errors);
    }
}
