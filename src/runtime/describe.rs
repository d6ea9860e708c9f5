//! `topics describe`: what a cluster actually holds for perfpilot's layout — each topic's
//! partitions and replication, the settings that matter to the stages, and how far each
//! stage's consumer group is behind the end of the topics it reads.

use super::kafka::WatchedContext;
use super::{KafkaOptions, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Topic settings shown by `describe` (the ones the stages depend on).
pub const SHOWN_CONFIGS: [&str; 4] = [
    "cleanup.policy",
    "retention.ms",
    "max.message.bytes",
    "min.insync.replicas",
];

/// One topic as the cluster reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    /// Full name.
    pub name: String,
    /// Partitions, or `None` when the topic does not exist.
    pub partitions: Option<usize>,
    /// Replicas of partition 0.
    pub replication: usize,
    /// The [`SHOWN_CONFIGS`] the broker reports, in that order.
    pub configs: Vec<(String, String)>,
    /// Records in the topic now: the sum of (high − low watermark) over partitions.
    pub records: i64,
    /// Each stage group that reads the topic and its lag.
    pub groups: Vec<GroupLag>,
}

/// How far one consumer group is behind on one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    /// The group id.
    pub group: String,
    /// Records between the group's committed offsets and the high watermarks, summed
    /// over partitions (a partition with no commit counts from its low watermark).
    pub lag: i64,
    /// Partitions the group has committed an offset for.
    pub committed_partitions: usize,
}

/// Why a cluster could not be described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The cluster cannot be reached as configured.
    #[error("cannot describe topics: {0}")]
    Unreachable(String),
    /// A request failed.
    #[error("cannot describe topics: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Describes every topic of `topics` on the cluster, with the lag of the consumer groups
/// that `readers` names for each topic (by full name; topics it omits show no group).
pub async fn describe_all(
    kafka: &KafkaOptions,
    topics: &Topics,
    readers: HashMap<String, Vec<String>>,
) -> Result<Vec<TopicDescription>, DescribeError> {
    let check = kafka.clone();
    tokio::task::spawn_blocking(move || super::kafka::check_connection(&check, TIMEOUT))
        .await
        .map_err(|e| DescribeError::Unreachable(e.to_string()))?
        .map_err(DescribeError::Unreachable)?;
    let names: Vec<String> = topics.specs().into_iter().map(|s| s.name).collect();
    let configs = describe_configs(kafka, &names).await?;
    let kafka = kafka.clone();
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || describe_blocking(&kafka, &topics, &readers, configs))
        .await
        .map_err(|e| DescribeError::Unreachable(e.to_string()))?
}

async fn describe_configs(
    kafka: &KafkaOptions,
    names: &[String],
) -> Result<Vec<Vec<(String, String)>>, DescribeError> {
    if !kafka.describes_configs {
        return Ok(vec![Vec::new(); names.len()]);
    }
    let admin: AdminClient<WatchedContext> = kafka
        .admin_config()
        .create_with_context(WatchedContext::default())?;
    let resources: Vec<ResourceSpecifier> =
        names.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let described = admin.describe_configs(resources.iter(), &opts).await?;
    Ok(described
        .into_iter()
        .map(|r| {
            let Ok(r) = r else { return Vec::new() };
            SHOWN_CONFIGS
                .iter()
                .filter_map(|name| {
                    r.entries
                        .iter()
                        .find(|e| e.name == *name)
                        .and_then(|e| e.value.clone())
                        .map(|v| (name.to_string(), v))
                })
                .collect()
        })
        .collect())
}

fn describe_blocking(
    kafka: &KafkaOptions,
    topics: &Topics,
    readers: &HashMap<String, Vec<String>>,
    configs: Vec<Vec<(String, String)>>,
) -> Result<Vec<TopicDescription>, DescribeError> {
    let probe: BaseConsumer = kafka
        .consumer_config(&format!("{}describe", topics.prefix))
        .create()?;
    let metadata = probe.fetch_metadata(None, TIMEOUT)?;
    // One client per group, asked about every topic the group reads.
    let mut group_clients: HashMap<String, BaseConsumer> = HashMap::new();
    let mut out = Vec::new();
    for (spec, configs) in topics.specs().into_iter().zip(configs) {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == spec.name && t.error().is_none());
        let Some(meta) = found else {
            out.push(TopicDescription {
                name: spec.name,
                partitions: None,
                replication: 0,
                configs,
                records: 0,
                groups: Vec::new(),
            });
            continue;
        };
        let partitions: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
        let replication = meta.partitions().first().map_or(0, |p| p.replicas().len());
        let mut marks = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            marks.push((
                p,
                retrying(|| probe.fetch_watermarks(&spec.name, p, TIMEOUT))?,
            ));
        }
        let records = marks.iter().map(|(_, (lo, hi))| hi - lo).sum();
        let mut lags = Vec::new();
        for group in readers.get(&spec.name).into_iter().flatten().cloned() {
            let consumer = match group_clients.entry(group.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(kafka.consumer_config(&group).create()?)
                }
            };
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition(&spec.name, p);
            }
            let committed = retrying(|| consumer.committed_offsets(tpl.clone(), TIMEOUT))?;
            let (mut lag, mut committed_partitions) = (0, 0);
            for &(p, (lo, hi)) in &marks {
                let at = match committed.find_partition(&spec.name, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => {
                        committed_partitions += 1;
                        o.max(lo)
                    }
                    _ => lo,
                };
                lag += (hi - at).max(0);
            }
            lags.push(GroupLag {
                group,
                lag,
                committed_partitions,
            });
        }
        out.push(TopicDescription {
            name: spec.name,
            partitions: Some(partitions.len()),
            replication,
            configs,
            records,
            groups: lags,
        });
    }
    Ok(out)
}

/// Runs `call` again while the broker answers with a transient error — a partition
/// whose leader is still being elected (a topic just created), the group coordinator
/// still loading (a fresh cluster) — for up to [`TIMEOUT`]; any other error at once.
fn retrying<T>(
    mut call: impl FnMut() -> Result<T, rdkafka::error::KafkaError>,
) -> Result<T, rdkafka::error::KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match call() {
            Err(e)
                if std::time::Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            Code::NotLeaderForPartition
                                | Code::LeaderNotAvailable
                                | Code::CoordinatorNotAvailable
                                | Code::CoordinatorLoadInProgress
                                | Code::NotCoordinator
                                | Code::UnknownTopicOrPartition
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// The description as aligned text: a line per topic, an indented line per group.
pub fn render(described: &[TopicDescription]) -> String {
    let mut s = String::new();
    for t in described {
        let Some(partitions) = t.partitions else {
            s.push_str(&format!(
                "{:<32} missing (create it with `perfpilot topics create`)\n",
                t.name
            ));
            continue;
        };
        let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!(
            "{:<32} partitions={partitions} replication={} records={} {}\n",
            t.name,
            t.replication,
            t.records,
            configs.join(" ")
        ));
        for g in &t.groups {
            let note = if g.committed_partitions == 0 {
                " (no commits yet)"
            } else {
                ""
            };
            s.push_str(&format!("  group {:<30} lag={}{note}\n", g.group, g.lag));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_topics_and_groups_without_commits_are_named() {
        let text = render(&[
            TopicDescription {
                name: "x.metrics".into(),
                partitions: Some(3),
                replication: 1,
                configs: vec![("cleanup.policy".into(), "delete".into())],
                records: 10,
                groups: vec![GroupLag {
                    group: "x.detector".into(),
                    lag: 10,
                    committed_partitions: 0,
                }],
            },
            TopicDescription {
                name: "x.decisions".into(),
                partitions: None,
                replication: 0,
                configs: Vec::new(),
                records: 0,
                groups: Vec::new(),
            },
        ]);
        assert!(
            text.contains("x.metrics")
                && text.contains("partitions=3 replication=1 records=10 cleanup.policy=delete")
        );
        assert!(text.contains("group x.detector") && text.contains("lag=10 (no commits yet)"));
        assert!(text.contains("x.decisions") && text.contains("missing"));
    }
}
