//! `perfpilot ingest prometheus`: an HTTP server that takes Prometheus remote-write
//! requests, maps their samples with the label rules and publishes the events to the
//! metrics topic. A request is answered 204 only once Kafka acknowledged every event of
//! it; otherwise 503, and Prometheus sends it again (at-least-once, nothing dropped).

use super::mapping::{Mapping, MetricKind, PromSample};
use super::remote_write::{self, MAX_COMPRESSED_BYTES};
use super::Tally;
use crate::event::encode;
use crate::runtime::kafka::WatchedContext;
use crate::runtime::{now_ms, KafkaOptions, Shutdown};
use crate::telemetry::INGEST_REQUESTS;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Most metric families whose type (from remote-write metadata) is remembered.
const MAX_KNOWN_FAMILIES: usize = 100_000;

/// The paths a remote-write request may be sent to.
pub const WRITE_PATHS: [&str; 2] = ["/api/v1/write", "/write"];

/// The receiver's state, shared by every connection.
pub struct Receiver {
    mapping: Mutex<Mapping>,
    families: Mutex<HashMap<String, MetricKind>>,
    producer: FutureProducer<WatchedContext>,
    topic: String,
    publish_timeout: Duration,
    in_flight: AtomicUsize,
}

impl Receiver {
    /// A receiver publishing to `topic`; a request whose events are not all
    /// acknowledged within `publish_timeout` is answered 503.
    pub fn new(
        kafka: &KafkaOptions,
        topic: impl Into<String>,
        mapping: Mapping,
        publish_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let timeout_ms = publish_timeout.as_millis().max(1000).to_string();
        Ok(Receiver {
            mapping: Mutex::new(mapping),
            families: Mutex::new(HashMap::new()),
            producer: kafka
                .producer_config()
                .set("message.timeout.ms", timeout_ms)
                .create_with_context(WatchedContext::default())?,
            topic: topic.into(),
            publish_timeout,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Serves on `listener` until `shutdown`; then waits (up to `grace`) for the
    /// requests being answered and flushes the producer.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: Shutdown,
        grace: Duration,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let receiver = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(receiver.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.producer.flush(Duration::from_secs(5));
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let response = match (req.method(), path.as_str()) {
            (&Method::GET, "/health") => reply(StatusCode::OK, "ok\n".into()),
            (&Method::POST, p) if WRITE_PATHS.contains(&p) => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                let r = self.write(req).await;
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                r
            }
            (_, p) if WRITE_PATHS.contains(&p) => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "remote-write requests are POSTed\n".into(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                format!(
                    "not found; Prometheus' remote_write url is http://<this address>{}\n",
                    WRITE_PATHS[0]
                ),
            ),
        };
        metrics::counter!(INGEST_REQUESTS, "ingest" => "remote_write", "status" => response.status().as_str().to_string())
            .increment(1);
        response
    }

    async fn write(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_COMPRESSED_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body could not be read whole: {e}\n"),
                )
            }
        };
        let request = match remote_write::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                // Counted by its status in perfpilot_ingest_requests_total.
                tracing::warn!(error = %e, reason = e.reason(), "a remote-write request was refused");
                return reply(StatusCode::BAD_REQUEST, format!("{e}\n"));
            }
        };
        let events = self.map(&request);
        match self.publish(&events).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, String::new()),
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "a remote-write request could not be published; Prometheus will retry it");
                let mut tally = Tally::new("remote_write");
                tally.add("failed", events.len() as u64);
                reply(StatusCode::SERVICE_UNAVAILABLE, format!("kafka: {e}\n"))
            }
        }
    }

    fn map(&self, request: &remote_write::WriteRequest) -> Vec<crate::event::MetricEvent> {
        if !request.metadata.is_empty() {
            let mut families = lock(&self.families);
            for m in &request.metadata {
                if families.len() < MAX_KNOWN_FAMILIES
                    || families.contains_key(&m.metric_family_name)
                {
                    families.insert(m.metric_family_name.clone(), m.kind());
                }
            }
        }
        let families = lock(&self.families);
        let mut mapping = lock(&self.mapping);
        let mut tally = Tally::new("remote_write");
        let now = now_ms();
        let mut events = Vec::new();
        for series in &request.timeseries {
            let Some(name) = series.labels.iter().find(|l| l.name == "__name__") else {
                tally.add("no_name", series.samples.len() as u64);
                continue;
            };
            let labels: Vec<(String, String)> = series
                .labels
                .iter()
                .filter(|l| l.name != "__name__")
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let kind = family_kind(&families, &name.value);
            for sample in &series.samples {
                let s = PromSample {
                    name: &name.value,
                    labels: &labels,
                    value: sample.value,
                    timestamp_ms: sample.timestamp,
                    kind,
                };
                match mapping.map(&s, now) {
                    Ok(e) => events.push(e),
                    Err(skip) => tally.skip(skip.reason()),
                }
            }
        }
        events
    }

    /// Publishes every event and waits for all acknowledgements.
    async fn publish(&self, events: &[crate::event::MetricEvent]) -> Result<(), KafkaError> {
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let mut pending: std::collections::VecDeque<DeliveryFuture> = Default::default();
        let mut tally = Tally::new("remote_write");
        let settle = |f: DeliveryFuture| async move {
            match tokio::time::timeout_at(deadline, f).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((e, _)))) => Err(e),
                Ok(Err(_)) => Err(KafkaError::Canceled),
                Err(_) => Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                )),
            }
        };
        for e in events {
            let payload = match encode(e) {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(error = %err, "an event could not be encoded");
                    tally.skip("encode_failed");
                    continue;
                }
            };
            loop {
                let record = FutureRecord::to(&self.topic)
                    .key(e.target.as_bytes())
                    .payload(&payload);
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push_back(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        match pending.pop_front() {
                            Some(f) => settle(f).await?,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                        if tokio::time::Instant::now() >= deadline {
                            return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                        }
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let mut first_error = None;
        for f in pending {
            if let Err(e) = settle(f).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tally.add("published", events.len() as u64);
                Ok(())
            }
        }
    }
}

/// A family's kind from the metadata, trying the name itself and then the family a
/// histogram's or counter's series belongs to.
fn family_kind(families: &HashMap<String, MetricKind>, name: &str) -> MetricKind {
    if families.is_empty() {
        return MetricKind::Unknown;
    }
    if let Some(k) = families.get(name) {
        return *k;
    }
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).and_then(|f| families.get(f)))
        .copied()
        .unwrap_or(MetricKind::Unknown)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}
