//! A client of a schema registry with Confluent's REST API (Confluent Schema Registry,
//! Apicurio's `/apis/ccompat/v7`, Karapace, Redpanda): writer schemas fetched by id and
//! cached for the stages' Confluent-framed inputs, and perfpilot's six schemas
//! registered under TopicNameStrategy subjects (`<topic>-value`) for their outputs.
//!
//! The stage's loop asks [`SchemaRegistry::ensure`] (async, retried while the registry
//! is away) before a record with an id it has not seen is handled; the handling itself
//! only looks in the cache ([`SchemaRegistry::lookup`]).

use super::Topics;
use crate::event::confluent::{all_schemas, ConfluentError, WriterSchema};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most writer schemas kept (ids are few in practice: one per schema version).
const MAX_CACHED: usize = 10_000;

/// Largest answer read from the registry.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// How to reach the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryOptions {
    /// Base URL, e.g. `http://registry:8081` or `http://apicurio:8080/apis/ccompat/v7`.
    pub url: String,
    /// Basic-auth user name and password (Confluent's `basic.auth.user.info`).
    pub basic_auth: Option<(String, String)>,
    /// Time allowed for one request.
    pub request_timeout: Duration,
    /// How long a schema fetch is retried while the registry is away, before the record
    /// is dead-lettered as `schema_registry_unavailable`.
    pub fetch_timeout: Duration,
    /// CA certificates (PEM) to verify an https registry with; default: the system's.
    pub ca_location: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub certificate_location: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_location: Option<std::path::PathBuf>,
}

impl RegistryOptions {
    /// Options for `url` with the default timeouts (5 s a request, 60 s of retries).
    pub fn new(url: impl Into<String>) -> Self {
        RegistryOptions {
            url: url.into().trim_end_matches('/').to_string(),
            basic_auth: None,
            request_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(60),
            ca_location: None,
            certificate_location: None,
            key_location: None,
        }
    }
}

/// Why the registry did not give what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// The URL is not usable.
    #[error("schema registry URL {url:?}: {problem}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The TLS settings cannot be used (a CA, certificate or key file).
    #[error("schema registry TLS settings: {0}")]
    Tls(String),
    /// No schema has this id (HTTP 404): the record cannot be read, now or later.
    #[error("the schema registry has no schema with id {0}")]
    UnknownId(u32),
    /// The registry refused the request (4xx other than 404): a setting to fix.
    #[error("the schema registry refused {what}: HTTP {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's message.
        body: String,
    },
    /// Not reachable, timed out, or a 5xx: worth trying again.
    #[error("the schema registry at {url} is unavailable: {detail}")]
    Unavailable {
        /// Base URL.
        url: String,
        /// What happened.
        detail: String,
    },
}

/// What the cache holds for an id.
#[derive(Debug, Clone)]
enum Cached {
    Schema(Arc<WriterSchema>),
    /// The registry said no for good (404), or the schema cannot be read as ours.
    Refused {
        reason: &'static str,
        detail: String,
    },
}

/// The outcome of looking a record's schema id up, for the stage's handling.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The writer schema, resolved against ours.
    Schema(Arc<WriterSchema>),
    /// The record cannot be read: dead-letter it with this reason.
    Refused {
        /// Dead-letter reason.
        reason: &'static str,
        /// Why, for the dead letter's detail.
        detail: String,
    },
}

/// A registry client with its cache of writer schemas and the ids of our schemas.
pub struct SchemaRegistry {
    options: RegistryOptions,
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    expected: Option<&'static str>,
    cache: Mutex<HashMap<u32, Cached>>,
    output_ids: Mutex<HashMap<&'static str, u32>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.options.url)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A client; `expected` is the record a stage reads (a writer schema of another
    /// name is read as it).
    pub fn new(
        options: RegistryOptions,
        expected: Option<&'static str>,
    ) -> Result<Self, RegistryError> {
        let url_error = |problem: &str| RegistryError::Url {
            url: options.url.clone(),
            problem: problem.to_string(),
        };
        let uri: Uri = options
            .url
            .parse()
            .map_err(|e| url_error(&format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(url_error("expected http(s)://host:port[/path]"));
        }
        if uri.authority().is_none() {
            return Err(url_error("no host in it"));
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(options.request_timeout));
        http.enforce_http(false);
        let tls = tls_settings(&options).map_err(|e| RegistryError::Tls(e.to_string()))?;
        let connector = HttpsConnector::with_connector(http, tls)
            .map_err(|e| RegistryError::Tls(e.to_string()))?;
        Ok(SchemaRegistry {
            base: options.url.clone(),
            options,
            // A new connection per request: requests are rare (a new schema id, the
            // start), and a pooled connection to a registry that went away would hang
            // the next one.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            expected,
            cache: Mutex::new(HashMap::new()),
            output_ids: Mutex::new(HashMap::new()),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn unavailable(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Unavailable {
            url: self.base.clone(),
            detail: detail.into(),
        }
    }

    /// One request; the status and the body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, String), RegistryError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                hyper::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json, application/json",
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("perfpilot/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(
                hyper::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            );
        }
        if let Some((user, password)) = &self.options.basic_auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            req = req.header(hyper::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.unavailable(e.to_string()))?;
        let call = async {
            let response = self.client.request(req).await.map_err(|e| {
                let source = std::error::Error::source(&e).map(|s| format!(": {s}"));
                self.unavailable(format!("{e}{}", source.unwrap_or_default()))
            })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| self.unavailable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(self.options.request_timeout, call)
            .await
            .map_err(|_| {
                self.unavailable(format!(
                    "no answer within {:?}",
                    self.options.request_timeout
                ))
            })?
    }

    /// The schema text with registry id `id`.
    pub async fn fetch(&self, id: u32) -> Result<String, RegistryError> {
        let (status, body) = self
            .request(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        match status {
            s if s.is_success() => schema_field(&body).ok_or_else(|| {
                self.unavailable(format!("the answer for id {id} has no \"schema\": {body}"))
            }),
            StatusCode::NOT_FOUND => Err(RegistryError::UnknownId(id)),
            s if s.is_server_error() => Err(self.unavailable(format!("HTTP {s}: {body}"))),
            s => Err(RegistryError::Refused {
                what: format!("GET /schemas/ids/{id}"),
                status: s.as_u16(),
                body,
            }),
        }
    }

    /// Registers `schema` under `subject`; its id (the existing one when already
    /// registered).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
        let path = format!("/subjects/{subject}/versions");
        let (status, answer) = self.request(Method::POST, &path, Some(body)).await?;
        if status.is_server_error() {
            return Err(self.unavailable(format!("HTTP {status}: {answer}")));
        }
        if !status.is_success() {
            return Err(RegistryError::Refused {
                what: format!("POST {path}"),
                status: status.as_u16(),
                body: answer,
            });
        }
        serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.unavailable(format!("the answer to {path} has no id: {answer}")))
    }

    /// Registers the six perfpilot schemas under `<topic>-value` for their topics and
    /// remembers their ids for the outputs. Retried while the registry is away, until
    /// `give_up` resolves. A subject that refuses ours as incompatible (409, 422) is
    /// left as it is, and that record type keeps single-object framing; any other
    /// refusal (credentials, a wrong URL) is an error.
    pub async fn register_all(
        &self,
        topics: &Topics,
        give_up: impl std::future::Future<Output = ()>,
    ) -> Result<(), RegistryError> {
        tokio::pin!(give_up);
        for (name, json, _) in all_schemas() {
            let subject = format!("{}-value", topic_of(topics, name));
            let mut wait = Duration::from_millis(500);
            let id = loop {
                match self.register(&subject, json).await {
                    Ok(id) => break Some(id),
                    // The subject holds a schema ours is not compatible with (a team's
                    // own under another record name, say): records of this type stay
                    // in single-object framing, which every stage reads, rather than
                    // the stage not starting.
                    Err(RegistryError::Refused {
                        status: 409 | 422,
                        body,
                        ..
                    }) => {
                        tracing::warn!(%subject, record = name, %body, "the schema registry refused perfpilot's schema for this subject; records of this type are written in single-object framing");
                        break None;
                    }
                    Err(e @ RegistryError::Unavailable { .. }) => {
                        tracing::warn!(error = %e, %subject, "registering a schema; trying again in {wait:?}");
                        tokio::select! {
                            _ = &mut give_up => return Err(e),
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            if let Some(id) = id {
                tracing::info!(%subject, id, record = name, "schema registered");
                lock(&self.output_ids).insert(name, id);
            }
        }
        Ok(())
    }

    /// The registry id of our schema for `record`, once registered.
    pub fn output_id(&self, record: &str) -> Option<u32> {
        lock(&self.output_ids).get(record).copied()
    }

    /// Whether the cache has an answer for `id` (a schema or a refusal), without taking
    /// a copy of it.
    pub fn knows(&self, id: u32) -> bool {
        lock(&self.cache).contains_key(&id)
    }

    /// What the cache knows of `id`: `None` when it was never fetched (or the
    /// registry was away when it was).
    pub fn lookup(&self, id: u32) -> Option<Lookup> {
        lock(&self.cache).get(&id).map(|c| match c {
            Cached::Schema(s) => Lookup::Schema(s.clone()),
            Cached::Refused { reason, detail } => Lookup::Refused {
                reason,
                detail: detail.clone(),
            },
        })
    }

    /// Makes sure the cache knows `id`: fetches it, retrying while the registry is
    /// away for up to `fetch_timeout` (or until `give_up`). Afterwards [`lookup`]
    /// answers, unless the registry stayed away.
    ///
    /// [`lookup`]: SchemaRegistry::lookup
    pub async fn ensure(&self, id: u32, give_up: impl std::future::Future<Output = ()>) {
        if self.knows(id) {
            return;
        }
        tokio::pin!(give_up);
        let deadline = tokio::time::Instant::now() + self.options.fetch_timeout;
        let mut wait = Duration::from_millis(200);
        let cached = loop {
            match self.fetch(id).await {
                Ok(text) => {
                    break match WriterSchema::parse(id, &text, self.expected) {
                        Ok(s) => {
                            tracing::info!(id, read_as = s.reader_name(), "writer schema fetched");
                            Cached::Schema(Arc::new(s))
                        }
                        Err(e) => {
                            tracing::warn!(id, error = %e, "a writer schema cannot be read as ours; its records are dead-lettered");
                            refused(&e)
                        }
                    }
                }
                Err(e @ (RegistryError::UnknownId(_) | RegistryError::Refused { .. })) => {
                    break Cached::Refused {
                        reason: "unknown_schema_id",
                        detail: e.to_string(),
                    }
                }
                Err(e) => {
                    if tokio::time::Instant::now() + wait > deadline {
                        tracing::warn!(error = %e, id, "the schema registry stayed away; the record is dead-lettered as schema_registry_unavailable");
                        return;
                    }
                    tracing::warn!(error = %e, id, "fetching a writer schema; trying again in {wait:?}");
                    tokio::select! {
                        _ = &mut give_up => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, cached);
    }
}

/// TLS as the options say: their CA file, or the system's certificates; a client
/// certificate and key for mutual TLS.
fn tls_settings(
    options: &RegistryOptions,
) -> Result<openssl::ssl::SslConnectorBuilder, openssl::error::ErrorStack> {
    let mut tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())?;
    match &options.ca_location {
        Some(ca) => tls.set_ca_file(ca)?,
        None => {
            tls.set_default_verify_paths()?;
            // The bundled OpenSSL looks in its own build prefix; the system's bundle is
            // where Debian, Alpine and Red Hat keep it.
            for bundle in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ] {
                if std::path::Path::new(bundle).exists() {
                    tls.set_ca_file(bundle)?;
                    break;
                }
            }
        }
    }
    if let Some(cert) = &options.certificate_location {
        tls.set_certificate_chain_file(cert)?;
    }
    if let Some(key) = &options.key_location {
        tls.set_private_key_file(key, openssl::ssl::SslFiletype::PEM)?;
    }
    Ok(tls)
}

fn refused(e: &ConfluentError) -> Cached {
    Cached::Refused {
        reason: e.reason(),
        detail: e.to_string(),
    }
}

/// The topic each record type is written to.
fn topic_of(topics: &Topics, record: &str) -> String {
    match record {
        "MetricEvent" => topics.metrics(),
        "Anomaly" => topics.anomalies(),
        "Forecast" => topics.forecasts(),
        "Recommendation" => topics.recommendations(),
        "Decision" => topics.decisions(),
        _ => topics.deadletter(),
    }
}

/// The `schema` string of a `/schemas/ids/{id}` answer.
fn schema_field(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("schema")?
        .as_str()
        .map(str::to_string)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_when_the_client_is_made() {
        assert!(SchemaRegistry::new(RegistryOptions::new("http://r:8081/"), None).is_ok());
        assert_eq!(
            SchemaRegistry::new(RegistryOptions::new("http://r:8081/"), None)
                .unwrap()
                .url(),
            "http://r:8081"
        );
        assert!(SchemaRegistry::new(RegistryOptions::new("https://r:8081"), None).is_ok());
        let mut missing_ca = RegistryOptions::new("https://r:8081");
        missing_ca.ca_location = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            SchemaRegistry::new(missing_ca, None),
            Err(RegistryError::Tls(_))
        ));
        for bad in ["ftp://r:8081", "r:8081", "not a url"] {
            assert!(
                SchemaRegistry::new(RegistryOptions::new(bad), None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_schema_is_read_from_the_registry_answer() {
        assert_eq!(
            schema_field(r#"{"schema":"{\"type\":\"string\"}"}"#).as_deref(),
            Some("{\"type\":\"string\"}")
        );
        assert_eq!(schema_field("{}"), None);
        assert_eq!(schema_field("not json"), None);
    }

    /// A registry that answers 409 to the anomalies subject, 401 to `deny`, and ids
    /// 1, 2, … to the rest.
    fn fake_registry(deny_all: bool) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut next = 0;
            for mut c in listener.incoming().flatten() {
                let mut buf = vec![0u8; 65536];
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                // Read the whole body before answering (Content-Length).
                let want = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut got = head.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
                while got < want {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got += k,
                    }
                }
                let (status, body) = if deny_all {
                    (
                        "401 Unauthorized",
                        r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
                    )
                } else if head.contains("t.anomalies-value") {
                    (
                        "409 Conflict",
                        r#"{"error_code":409,"message":"incompatible"}"#.to_string(),
                    )
                } else {
                    next += 1;
                    ("200 OK", format!(r#"{{"id":{next}}}"#))
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_incompatible_subject_keeps_single_object_framing_and_bad_credentials_stop() {
        let topics = Topics::with_prefix("t.");
        let r = SchemaRegistry::new(RegistryOptions::new(fake_registry(false)), None).unwrap();
        r.register_all(&topics, std::future::pending())
            .await
            .unwrap();
        assert_eq!(r.output_id("Anomaly"), None, "refused: single-object");
        assert!(r.output_id("MetricEvent").is_some());
        assert!(r.output_id("DeadLetter").is_some());
        let denied = SchemaRegistry::new(RegistryOptions::new(fake_registry(true)), None).unwrap();
        let e = denied
            .register_all(&topics, std::future::pending())
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::Refused { status: 401, .. }),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_unavailable_and_nothing_is_cached() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options = RegistryOptions::new(format!("http://127.0.0.1:{port}"));
        options.fetch_timeout = Duration::from_millis(300);
        let r = SchemaRegistry::new(options, None).unwrap();
        assert!(matches!(
            r.fetch(1).await,
            Err(RegistryError::Unavailable { .. })
        ));
        r.ensure(1, std::future::pending()).await;
        assert!(
            r.lookup(1).is_none(),
            "left for the stage to dead-letter as unavailable"
        );
    }
}
