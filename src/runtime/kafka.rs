//! Kafka client settings shared by every perfpilot process.

use rdkafka::ClientConfig;

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
            .set("linger.ms", "5")
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
