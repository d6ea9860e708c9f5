//! Stalled partitions (see `runner::stall`) are assigned again, every owned partition
//! from where the stage stands: after the last record it read, or, where it read
//! nothing yet, at the committed offset. A new assignment starts every fetcher at an
//! explicit offset, without the committed-offset query that left them stalled.

use super::Core;
use crate::stage::Stage;
use crate::telemetry;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// Longest the committed-offset query may block the loop; a query that fails is tried
/// again when the watch names the partitions next.
const REFETCH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl<S: Stage> Core<S> {
    /// Assigns the consumer's partitions again so that `stalled` are fetched. Nothing
    /// is done when a rebalance took any of them away meanwhile.
    pub(in crate::runtime::runner) fn refetch<C, K>(
        &mut self,
        consumer: &K,
        stalled: &[(String, i32)],
    ) -> Result<(), KafkaError>
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let owned: Vec<(String, i32)> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        if !stalled.iter().all(|tp| owned.contains(tp)) {
            return Ok(());
        }
        let mut unread = TopicPartitionList::new();
        for (topic, p) in &owned {
            if self.offsets.read_upto(topic, *p).is_none() {
                unread.add_partition(topic, *p);
            }
        }
        let committed = if unread.count() > 0 {
            consumer.committed_offsets(unread, self.call_timeout(REFETCH_CALL_TIMEOUT))?
        } else {
            TopicPartitionList::new()
        };
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in &owned {
            let offset = match self.offsets.read_upto(topic, *p) {
                Some(upto) => Offset::Offset(upto),
                // No committed offset either: `auto.offset.reset` decides, as it would.
                None => committed
                    .find_partition(topic, *p)
                    .map_or(Offset::Invalid, |e| e.offset()),
            };
            tpl.add_partition_offset(topic, *p, offset)?;
        }
        consumer.assign(&tpl)?;
        let partitions: Vec<i32> = stalled.iter().map(|(_, p)| *p).collect();
        telemetry::refetched(self.name, &partitions);
        Ok(())
    }
}
