//! Publishing metric events to the metrics topic, keyed by target, many in flight.

use crate::event::{encode, EncodeError, MetricEvent};
use crate::runtime::kafka::WatchedContext;
use crate::runtime::KafkaOptions;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::VecDeque;
use std::time::Duration;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Kafka refused or lost the record.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Sends metric events with up to `max_in_flight` unacknowledged at once.
pub struct MetricPublisher {
    producer: FutureProducer<WatchedContext>,
    topic: String,
    in_flight: VecDeque<DeliveryFuture>,
    max_in_flight: usize,
    sent: u64,
}

impl MetricPublisher {
    /// A publisher to `topic`.
    pub fn new(kafka: &KafkaOptions, topic: impl Into<String>) -> Result<Self, KafkaError> {
        Ok(MetricPublisher {
            producer: kafka
                .producer_config()
                .create_with_context(WatchedContext::default())?,
            topic: topic.into(),
            in_flight: VecDeque::new(),
            max_in_flight: 10_000,
            sent: 0,
        })
    }

    /// Records acknowledged so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Queues one event (waits only when `max_in_flight` are outstanding).
    pub async fn publish(&mut self, event: &MetricEvent) -> Result<(), PublishError> {
        let bytes = encode(event)?;
        self.publish_raw(event.target.as_bytes(), &bytes).await
    }

    /// Queues raw bytes with a key (tests use it to send malformed records).
    pub async fn publish_raw(&mut self, key: &[u8], payload: &[u8]) -> Result<(), PublishError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_one().await?;
        }
        loop {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.in_flight.push_back(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        self.settle_one().await?;
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    async fn settle_one(&mut self) -> Result<(), PublishError> {
        if let Some(f) = self.in_flight.pop_front() {
            match f.await {
                Ok(Ok(_)) => self.sent += 1,
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }

    /// Waits until every queued event is acknowledged.
    pub async fn flush(&mut self) -> Result<u64, PublishError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        self.producer.flush(Duration::from_secs(30))?;
        Ok(self.sent)
    }
}
