//! Metrics from where teams already have them: Prometheus remote-write
//! ([`receiver`]) and Prometheus/OpenMetrics endpoints scraped on an interval
//! ([`scrape`]), both turned into metric events by the label rules of [`mapping`].

pub mod exposition;
pub mod mapping;
pub mod receiver;
pub mod remote_write;
pub mod scrape;

use crate::telemetry::INGEST_SAMPLES;

/// Counts of samples by outcome, added to [`INGEST_SAMPLES`] when dropped (one
/// counter update per outcome and request rather than per sample).
#[derive(Debug)]
pub struct Tally {
    ingest: &'static str,
    counts: Vec<(&'static str, u64)>,
}

impl Tally {
    /// An empty tally for `ingest` (`remote_write` or `scrape`).
    pub fn new(ingest: &'static str) -> Self {
        Tally {
            ingest,
            counts: Vec::new(),
        }
    }

    /// One sample with this outcome.
    pub fn skip(&mut self, outcome: &'static str) {
        self.add(outcome, 1);
    }

    /// `n` samples with this outcome.
    pub fn add(&mut self, outcome: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, c)) => *c += n,
            None => self.counts.push((outcome, n)),
        }
    }

    /// The counts so far, in the order the outcomes first came.
    pub fn counts(&self) -> &[(&'static str, u64)] {
        &self.counts
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        for (outcome, n) in &self.counts {
            metrics::counter!(INGEST_SAMPLES, "ingest" => self.ingest, "outcome" => *outcome)
                .increment(*n);
        }
    }
}
