//! The topic layout: names (a prefix plus fixed suffixes), keys, partitions, and
//! creation on a real cluster or the embedded broker.

use super::KafkaOptions;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Names of perfpilot's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Prepended to every name, for example `perfpilot.`.
    pub prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            prefix: "perfpilot.".into(),
        }
    }
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// What it carries and how it is keyed.
    pub purpose: &'static str,
    /// Topic configs (cleanup policy, retention).
    pub configs: Vec<(&'static str, String)>,
}

/// The logical topics, without prefix.
pub const LOGICAL: [&str; 6] = [
    "metrics",
    "anomalies",
    "forecasts",
    "recommendations",
    "decisions",
    "deadletter",
];

impl Topics {
    /// With a prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The full name of a logical topic.
    pub fn name(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, logical)
    }

    /// Metric events, key = target.
    pub fn metrics(&self) -> String {
        self.name("metrics")
    }
    /// Anomalies, key = target.
    pub fn anomalies(&self) -> String {
        self.name("anomalies")
    }
    /// Forecasts, key = target.
    pub fn forecasts(&self) -> String {
        self.name("forecasts")
    }
    /// Recommendations, key = pool.
    pub fn recommendations(&self) -> String {
        self.name("recommendations")
    }
    /// Decisions, key = target.
    pub fn decisions(&self) -> String {
        self.name("decisions")
    }
    /// Dead letters, key = the original key.
    pub fn deadletter(&self) -> String {
        self.name("deadletter")
    }
    /// Compacted state changelog of a stage.
    pub fn state(&self, stage: &str) -> String {
        self.name(&format!("{stage}-state"))
    }

    /// A topic given by the user: a logical name (`decisions`) or a full one.
    pub fn resolve(&self, given: &str) -> String {
        if LOGICAL.contains(&given) || given.ends_with("-state") && !given.starts_with(&self.prefix)
        {
            self.name(given)
        } else {
            given.to_string()
        }
    }

    /// Every topic perfpilot uses, with its settings.
    pub fn specs(&self) -> Vec<TopicSpec> {
        let week = (7 * 24 * 3600 * 1000_i64).to_string();
        let month = (30 * 24 * 3600 * 1000_i64).to_string();
        let delete = |name: String, purpose, retention: &str| TopicSpec {
            name,
            purpose,
            configs: vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", retention.to_string()),
            ],
        };
        let mut v = vec![
            delete(
                self.metrics(),
                "metric events from agents; key = target",
                &week,
            ),
            delete(
                self.anomalies(),
                "anomalies from the detector; key = target",
                &week,
            ),
            delete(
                self.forecasts(),
                "forecasts from the forecaster; key = target",
                &week,
            ),
            delete(
                self.recommendations(),
                "recommendations; key = pool",
                &month,
            ),
            delete(self.decisions(), "decisions; key = target", &month),
            delete(
                self.deadletter(),
                "rejected inputs with their reason; key = original key",
                &month,
            ),
        ];
        for stage in ["detector", "forecaster", "recommender", "coordinator"] {
            v.push(TopicSpec {
                name: self.state(stage),
                purpose: "compacted per-key state changelog of a stage",
                configs: vec![
                    ("cleanup.policy", "compact".into()),
                    ("min.compaction.lag.ms", "60000".into()),
                ],
            });
        }
        v
    }
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be created or the request failed as a whole.
    #[error("cannot create topics: {0}")]
    Admin(#[from] rdkafka::error::KafkaError),
    /// The client cannot reach the cluster as configured (credentials, TLS).
    #[error("cannot create topics: {0}; check the security settings (-X, PERFPILOT_KAFKA_X_*)")]
    Client(String),
    /// The broker refused one topic.
    #[error("cannot create topic {topic}: {code}")]
    Refused {
        /// Topic.
        topic: String,
        /// Broker's error.
        code: RDKafkaErrorCode,
    },
}

/// Creates every perfpilot topic on a real cluster; existing topics are left alone.
/// Returns, per topic, whether it was created (false: it existed).
pub async fn create_all(
    kafka: &KafkaOptions,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, bool)>, TopicError> {
    let check = kafka.clone();
    tokio::task::spawn_blocking(move || {
        super::kafka::check_connection(&check, Duration::from_secs(30))
    })
    .await
    .map_err(|e| TopicError::Client(e.to_string()))?
    .map_err(TopicError::Client)?;
    let context = super::kafka::WatchedContext::default();
    let fatal = context.fatal.clone();
    let admin: AdminClient<super::kafka::WatchedContext> =
        kafka.admin_config().create_with_context(context)?;
    let specs = topics.specs();
    let new: Vec<NewTopic> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(&s.name, partitions, TopicReplication::Fixed(replication));
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let create = admin.create_topics(new.iter(), &opts);
    tokio::pin!(create);
    let results = loop {
        tokio::select! {
            r = &mut create => break r?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(e) = fatal.get() {
                    return Err(TopicError::Client(e));
                }
            }
        }
    };
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, false)),
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(out)
}

/// The smallest `max.message.bytes` among `topics` (the largest record batch each
/// accepts, after compression), as the broker reports their configs. `None` when no
/// topic reports one (they do not exist yet, or the principal may not describe them).
pub async fn smallest_record_limit(
    kafka: &KafkaOptions,
    topics: &[&str],
) -> Result<Option<usize>, KafkaError> {
    let admin: AdminClient<super::kafka::WatchedContext> = kafka
        .admin_config()
        .create_with_context(super::kafka::WatchedContext::default())?;
    let resources: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin.describe_configs(resources.iter(), &opts).await?;
    Ok(described
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|r| {
            r.entries
                .into_iter()
                .find(|e| e.name == "max.message.bytes")
                .and_then(|e| e.value)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_resolution() {
        let t = Topics::with_prefix("x.");
        assert_eq!(t.decisions(), "x.decisions");
        assert_eq!(t.resolve("decisions"), "x.decisions");
        assert_eq!(t.resolve("other.topic"), "other.topic");
        assert_eq!(t.specs().len(), 10);
        assert!(t
            .specs()
            .iter()
            .any(|s| s.configs.contains(&("cleanup.policy", "compact".into()))));
    }
}
