//! The stage consumer's context: librdkafka's callbacks (rebalances, commits, errors,
//! statistics) run against the runner's state from here.

use super::core::Core;
use super::stall::{PartitionState, StallWatch};
use crate::runtime::kafka::FatalError;
use crate::stage::Stage;
use crate::telemetry;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::{Arc, Mutex, MutexGuard};

/// The consumer's context: runs the rebalance callbacks against the runner's state.
pub(super) struct RunnerContext<S: Stage> {
    pub(super) core: Arc<Mutex<Core<S>>>,
    /// Set by the error callback, read by the loop (no lock needed in the callback).
    pub(super) fatal: FatalError,
    pub(super) name: &'static str,
    /// Reads librdkafka's statistics for partitions owned but never fetched.
    pub(super) stalls: Mutex<StallWatch>,
    /// Partitions the watch found stalled, for the loop to start again.
    pub(super) stalled: Mutex<Vec<(String, i32)>>,
}

impl<S: Stage> RunnerContext<S> {
    /// The partitions found stalled since the last call.
    pub(super) fn take_stalled(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.stalled.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub(super) fn lock<S: Stage>(core: &Mutex<Core<S>>) -> MutexGuard<'_, Core<S>> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn topic_partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl<S: Stage> ClientContext for RunnerContext<S> {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::runtime::kafka::log_limited(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::runtime::kafka::log_client_error("stage", &error, reason);
        self.fatal.observe(&error, reason);
    }

    /// Consumer lag per input partition, and partitions owned but never fetched, from
    /// librdkafka's statistics.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let settled = statistics
            .cgrp
            .as_ref()
            .is_some_and(|g| g.state == "up" && g.join_state == "steady");
        let partitions = statistics.topics.iter().flat_map(|(topic, t)| {
            t.partitions
                .iter()
                .map(move |(partition, p)| PartitionState {
                    topic,
                    partition: *partition,
                    desired: p.desired,
                    fetch_state: &p.fetch_state,
                })
        });
        let stalled = self
            .stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(settled, partitions);
        if !stalled.is_empty() {
            *self.stalled.lock().unwrap_or_else(|p| p.into_inner()) = stalled;
        }
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue;
                }
                // A partition this instance does not own reads 0 here: summed over the
                // group's instances, each partition counts once.
                let lag = if p.desired { p.consumer_lag.max(0) } else { 0 };
                telemetry::consumer_lag(self.name, topic, *partition, lag);
            }
        }
    }
}

impl<S: Stage> ConsumerContext for RunnerContext<S> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => lock(&self.core).on_revoke(consumer, &topic_partitions(tpl)),
            // Restored before librdkafka starts fetching the partitions.
            Rebalance::Assign(tpl) => lock(&self.core).on_assign(&topic_partitions(tpl)),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    /// The outcome of every commit; only failures matter, and only to be seen: an
    /// asynchronous (checkpoint) commit is never counted as done, so the next one
    /// commits the same offsets again.
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // No offsets to commit is not a failure.
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                tracing::warn!(error = %e, "offset commit failed; the next checkpoint commits again");
            }
        }
    }
}
