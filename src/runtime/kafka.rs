//! Kafka client settings shared by every perfpilot process.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::{Arc, Mutex};

/// True for client errors that retrying cannot cure: refused credentials, a failed TLS
/// handshake, missing permissions. A command stops on them with the cause instead of
/// waiting for ever.
pub fn is_unrecoverable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// The first unrecoverable error a client reported, shared with whoever waits on it.
#[derive(Debug, Clone, Default)]
pub struct FatalError(Arc<Mutex<Option<String>>>);

impl FatalError {
    /// Records `error` if it is unrecoverable (the first one wins).
    pub fn observe(&self, error: &KafkaError, reason: &str) {
        if is_unrecoverable(error) {
            if let Ok(mut slot) = self.0.lock() {
                slot.get_or_insert_with(|| format!("{error}: {reason}"));
            }
        }
    }

    /// The recorded error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// Connects to the cluster and asks for its metadata, within `timeout`: `Ok` when it
/// answered; the unrecoverable error (refused credentials, ...) as soon as the client
/// reports one, rather than after a request's timeout. Blocks; for commands that are
/// about to talk to the cluster through clients that do not report such errors (the
/// admin client).
pub fn check_connection(kafka: &KafkaOptions, timeout: std::time::Duration) -> Result<(), String> {
    use rdkafka::producer::{BaseProducer, Producer};
    let context = WatchedContext::default();
    let fatal = context.fatal.clone();
    let producer: BaseProducer<WatchedContext> = kafka
        .admin_config()
        .create_with_context(context)
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(std::time::Duration::from_millis(100));
        if let Some(e) = fatal.get() {
            return Err(e);
        }
        match producer
            .client()
            .fetch_metadata(None, std::time::Duration::from_millis(500))
        {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!(
                    "no answer from {} within {timeout:?}: {e}",
                    kafka.bootstrap_servers
                ))
            }
            Err(_) => {}
        }
    }
}

/// A client context that logs errors like the default one and remembers the first
/// unrecoverable one.
#[derive(Debug, Clone, Default)]
pub struct WatchedContext {
    /// Where the unrecoverable error goes.
    pub fatal: FatalError,
}

impl ClientContext for WatchedContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.fatal.observe(&error, reason);
        tracing::error!(%error, reason, "kafka client error");
    }
}

impl rdkafka::producer::ProducerContext for WatchedContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (`-X key=value`), applied last, so they override
    /// perfpilot's defaults (security settings, timeouts, ...).
    pub properties: Vec<(String, String)>,
    /// Properties for consumers only (group timeouts), applied after `properties`.
    pub consumer_properties: Vec<(String, String)>,
}

/// Keys whose values must never be printed.
const SECRET_KEYS: [&str; 4] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
];

impl KafkaOptions {
    /// Options for a cluster at `bootstrap_servers` with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaOptions {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
            consumer_properties: Vec::new(),
        }
    }

    /// Adds a consumer-only librdkafka property.
    pub fn with_consumer(mut self, key: &str, value: &str) -> Self {
        self.consumer_properties
            .push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a librdkafka property.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer in `group_id` that never commits by itself and starts from the
    /// earliest offset when the group has none.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false");
        let mut c = self.finish(c);
        for (k, v) in &self.consumer_properties {
            c.set(k, v);
        }
        c
    }

    /// An idempotent producer (acks=all, no duplicates on retry, order kept).
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "200000");
        self.finish(c)
    }

    /// An admin client.
    pub fn admin_config(&self) -> ClientConfig {
        let c = self.base();
        self.finish(c)
    }

    /// The properties with secrets masked, for logs.
    pub fn redacted_properties(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_KEYS.contains(&k.as_str())
                    || k.contains("password")
                    || k.contains("secret");
                (k.clone(), if secret { "*****".into() } else { v.clone() })
            })
            .collect()
    }
}

/// Parses a `key=value` librdkafka property given on the command line.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "expected key=value, got {:?}",
            s.split('=').next().unwrap_or("")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_overrides_win() {
        let o = KafkaOptions::new("h:1")
            .with("sasl.password", "hunter2")
            .with("linger.ms", "50");
        let red = o.redacted_properties();
        assert_eq!(red[0].1, "*****");
        assert_eq!(o.producer_config().get("linger.ms"), Some("50"));
        assert!(parse_property("novalue").is_err());
        assert_eq!(parse_property("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}
