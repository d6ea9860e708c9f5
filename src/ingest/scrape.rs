//! Scraping Prometheus/OpenMetrics endpoints (`perfpilot agent --scrape URL`): one GET
//! per endpoint per round, the body parsed and each sample mapped with the label rules.
//! Every sample carries `instance` (the endpoint's host:port) and `job`, as Prometheus
//! adds them, unless the endpoint set them itself.

use super::exposition::{self, BadLine};
use super::mapping::{Mapping, PromSample};
use super::Tally;
use crate::event::MetricEvent;
use crate::telemetry::INGEST_REQUESTS;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest body read from an endpoint.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What the scraper asks for: the text format first, OpenMetrics second.
const ACCEPT: &str =
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// Why an endpoint cannot be scraped.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Not an http:// URL with a host.
    #[error("{url:?}: {problem}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Connecting or reading failed.
    #[error("{url}: {message}")]
    Fetch {
        /// The endpoint.
        url: String,
        /// What happened.
        message: String,
    },
    /// The endpoint answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status code.
        status: u16,
    },
    /// No answer in time.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The limit.
        timeout: Duration,
    },
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The URL.
    pub url: Uri,
    /// host:port, the `instance` label.
    pub instance: String,
}

impl Endpoint {
    /// Parses an `http://host:port/path` URL (the path defaults to `/metrics`).
    pub fn parse(text: &str) -> Result<Self, ScrapeError> {
        let bad = |problem: &str| ScrapeError::Url {
            url: text.to_string(),
            problem: problem.to_string(),
        };
        let mut url: Uri = text.parse().map_err(|e| bad(&format!("{e}")))?;
        match url.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported yet; scrape over http, or have Prometheus remote-write to `perfpilot ingest prometheus`")),
            _ => return Err(bad("expected http://host:port/path")),
        }
        let authority = url.authority().ok_or_else(|| bad("no host in it"))?.clone();
        if url.path() == "/" && !text.ends_with('/') {
            url = format!("http://{authority}/metrics")
                .parse()
                .map_err(|e| bad(&format!("{e}")))?;
        }
        let instance = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        Ok(Endpoint { url, instance })
    }
}

/// A round's result for one endpoint.
#[derive(Debug, Default)]
pub struct Round {
    /// The events to publish.
    pub events: Vec<MetricEvent>,
    /// Samples read.
    pub samples: usize,
    /// Lines that could not be read.
    pub bad_lines: Vec<BadLine>,
}

/// Scrapes endpoints with one HTTP client.
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    job: String,
}

impl Scraper {
    /// A scraper whose requests give up after `timeout`; samples get `job` as their
    /// job label.
    pub fn new(timeout: Duration, job: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Scraper {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            job: job.into(),
        }
    }

    /// The body of one endpoint and whether it is OpenMetrics.
    pub async fn fetch(&self, endpoint: &Endpoint) -> Result<(String, bool), ScrapeError> {
        let url = endpoint.url.to_string();
        let fetch = async {
            let request = hyper::Request::get(endpoint.url.clone())
                .header(hyper::header::ACCEPT, ACCEPT)
                .header(
                    hyper::header::USER_AGENT,
                    concat!("perfpilot/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = self.client.request(request).await.map_err(|e| {
                // The connector's error says what failed (refused, no route, …).
                let source = std::error::Error::source(&e).map(|s| format!(": {s}"));
                format!("{e}{}", source.unwrap_or_default())
            })?;
            let status = response.status();
            let openmetrics = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/openmetrics-text"));
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok::<_, String>((
                status,
                String::from_utf8_lossy(&body).into_owned(),
                openmetrics,
            ))
        };
        let (status, body, openmetrics) = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| ScrapeError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
            .map_err(|message| ScrapeError::Fetch {
                url: url.clone(),
                message,
            })?;
        if !status.is_success() {
            return Err(ScrapeError::Status {
                url,
                status: status.as_u16(),
            });
        }
        Ok((body, openmetrics))
    }

    /// Scrapes one endpoint and maps its samples; `now_ms` is the time of samples
    /// without their own.
    pub async fn scrape(
        &self,
        endpoint: &Endpoint,
        mapping: &std::sync::Mutex<Mapping>,
        now_ms: i64,
    ) -> Result<Round, ScrapeError> {
        let fetched = self.fetch(endpoint).await;
        let status = if fetched.is_ok() { "ok" } else { "failed" };
        metrics::counter!(INGEST_REQUESTS, "ingest" => "scrape", "status" => status).increment(1);
        let (body, openmetrics) = fetched?;
        let (samples, bad_lines) = exposition::parse(&body, openmetrics);
        let mut tally = Tally::new("scrape");
        tally.add("bad_line", bad_lines.len() as u64);
        let mut events = Vec::with_capacity(samples.len());
        let mut mapping = mapping.lock().unwrap_or_else(|p| p.into_inner());
        for s in &samples {
            let mut labels = s.labels.clone();
            for (name, value) in [("instance", &endpoint.instance), ("job", &self.job)] {
                if !labels.iter().any(|(n, _)| n == name) {
                    labels.push((name.to_string(), value.clone()));
                }
            }
            let sample = PromSample {
                name: &s.name,
                labels: &labels,
                value: s.value,
                timestamp_ms: s.timestamp_ms.unwrap_or(now_ms),
                kind: s.kind,
            };
            match mapping.map(&sample, now_ms) {
                Ok(e) => events.push(e),
                Err(skip) => tally.skip(skip.reason()),
            }
        }
        Ok(Round {
            events,
            samples: samples.len(),
            bad_lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_with_metrics_as_the_default_path() {
        let e = Endpoint::parse("http://127.0.0.1:9100").unwrap();
        assert_eq!(e.url.to_string(), "http://127.0.0.1:9100/metrics");
        assert_eq!(e.instance, "127.0.0.1:9100");
        let e = Endpoint::parse("http://web/stats/prometheus?x=1").unwrap();
        assert_eq!(e.url.path(), "/stats/prometheus");
        assert_eq!(e.instance, "web:80");
        for bad in ["https://h:9100/metrics", "h:9100", "ftp://h/x", "not a url"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let msg = Endpoint::parse("https://h/metrics")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("https is not supported"), "{msg}");
    }
}
