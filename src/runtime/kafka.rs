//! Kafka client settings shared by every perfpilot process.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
            return Err(format!(
                "{e}; check the security settings (-X, PERFPILOT_KAFKA_X_*)"
            ));
        }
        match producer
            .client()
            .fetch_metadata(None, std::time::Duration::from_millis(500))
        {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!(
                    "no answer from {} within {timeout:?}: {e}; is a broker listening there? check --bootstrap-servers and the network",
                    kafka.bootstrap_servers
                ))
            }
            Err(_) => {}
        }
    }
}

/// How often one kind of client error or librdkafka log line is logged at most: a
/// broker that is down makes librdkafka report the same failure several times a second.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Kinds of message remembered by the limiter (beyond it, it starts afresh).
const LOG_KINDS: usize = 256;

/// When each kind of message was last logged and how many were held back since.
static LOG_LIMITER: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// A message's kind: its text without digits (addresses, counts and durations vary
/// between repeats of one failure), bounded.
fn log_kind(what: &str, message: &str) -> String {
    let mut kind = String::with_capacity(96);
    kind.push_str(what);
    kind.push(' ');
    kind.extend(message.chars().filter(|c| !c.is_ascii_digit()).take(80));
    kind
}

/// Whether a message of this kind is logged now, and how many like it were held back
/// since the last one that was.
fn admit(kind: String) -> Option<u64> {
    let mut guard = LOG_LIMITER.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= LOG_KINDS && !map.contains_key(&kind) {
        map.clear();
    }
    let now = Instant::now();
    match map.get_mut(&kind) {
        Some((last, held)) if now.duration_since(*last) < LOG_EVERY => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            let n = *held;
            *last = now;
            *held = 0;
            Some(n)
        }
        None => {
            map.insert(kind, (now, 0));
            Some(0)
        }
    }
}

/// Logs a client error at most once per [`LOG_EVERY`] per kind, with a hint when the
/// error says what to check.
pub fn log_client_error(client: &'static str, error: &KafkaError, reason: &str) {
    if let Some(held) = admit(log_kind(client, reason)) {
        let hint = hint_for(error, reason);
        tracing::error!(client, %error, reason, hint, similar_held_back = held, "kafka client error");
    }
}

/// librdkafka's own log lines, at most once per [`LOG_EVERY`] per kind for warnings
/// and worse; the rest at debug.
fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error | Warning => {
            if let Some(held) = admit(log_kind(fac, message)) {
                if matches!(level, Warning) {
                    tracing::warn!(target: "librdkafka", fac, similar_held_back = held, "{message}");
                } else {
                    tracing::error!(target: "librdkafka", fac, similar_held_back = held, "{message}");
                }
            }
        }
        Notice | Info | Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// What to check for a client error: the address for a broker that cannot be reached,
/// the security settings for refused credentials or TLS; `""` when nothing specific.
pub fn hint_for(error: &KafkaError, reason: &str) -> &'static str {
    let code = error.rdkafka_error_code();
    let text = format!("{error} {reason}").to_ascii_lowercase();
    if is_unrecoverable(error) || text.contains("ssl") || text.contains("sasl") {
        "check the security settings (-X, PERFPILOT_KAFKA_X_*)"
    } else if matches!(
        code,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    ) || text.contains("connection refused")
        || text.contains("timed out")
    {
        "is a broker listening at the bootstrap address? check --bootstrap-servers and the network"
    } else {
        ""
    }
}

/// A client context that logs errors (rate-limited, with a hint) and remembers the
/// first unrecoverable one.
#[derive(Debug, Clone, Default)]
pub struct WatchedContext {
    /// Where the unrecoverable error goes.
    pub fatal: FatalError,
}

impl ClientContext for WatchedContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.fatal.observe(&error, reason);
        log_client_error("kafka", &error, reason);
    }
}

/// [`ClientContext::log`] for perfpilot's other contexts: rate-limited like
/// [`WatchedContext`]'s.
pub fn log_limited(level: RDKafkaLogLevel, fac: &str, message: &str) {
    log_librdkafka(level, fac, message);
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
    /// The broker answers DescribeConfigs: stages read the `max.message.bytes` of the
    /// topics they write. librdkafka's mock cluster (the demo's) does not.
    pub describes_configs: bool,
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
            describes_configs: true,
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
    ///
    /// Its prefetch is small and refilled at once (see [`CONSUMER_PREFETCH`]); `-X`
    /// properties override it.
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
        for (k, v) in CONSUMER_PREFETCH {
            c.set(k, v);
        }
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

/// The consumers' prefetch. librdkafka's defaults queue up to 64 MiB per consumer,
/// counted *compressed* (an lz4 batch of metric events is held decompressed, several
/// times larger), and once the queue is full they wait `fetch.queue.backoff.ms` (1 s)
/// before fetching again, so a stage reading a backlog alternated between a full queue
/// and an idle second. A 1 MiB queue refilled after 10 ms, in fetches of 256 KiB per
/// partition (a larger record is still fetched whole), measured with `bench peer` over
/// a backlog of a million events: the detector's peak RSS 117–127 MB → 66–71 MB, and
/// 120 k → 215–325 k events/s.
pub const CONSUMER_PREFETCH: [(&str, &str); 4] = [
    ("queued.max.messages.kbytes", "1024"),
    ("fetch.queue.backoff.ms", "10"),
    ("max.partition.fetch.bytes", "262144"),
    ("fetch.max.bytes", "1048576"),
];

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

/// Environment variables that carry librdkafka properties.
pub const PROPERTY_ENV_PREFIX: &str = "PERFPILOT_KAFKA_X_";

/// The librdkafka properties set in the environment (`PERFPILOT_KAFKA_X_SASL_PASSWORD`
/// → `sasl.password`), sorted by key.
pub fn properties_from_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = vars
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(PROPERTY_ENV_PREFIX)?;
            (!key.is_empty()).then(|| (key.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    props.sort();
    props
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

    #[test]
    fn consumers_prefetch_little_and_refill_at_once_unless_told_otherwise() {
        let plain = KafkaOptions::new("h:1").consumer_config("g");
        for (k, v) in CONSUMER_PREFETCH {
            assert_eq!(plain.get(k), Some(v), "{k}");
        }
        assert_eq!(plain.get("fetch.queue.backoff.ms"), Some("10"));
        let told = KafkaOptions::new("h:1")
            .with("queued.max.messages.kbytes", "65536")
            .consumer_config("g");
        assert_eq!(told.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
