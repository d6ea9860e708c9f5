//! What a stage counts, counted once: each event updates the run's report (returned
//! when it stops), the live counters a driver in the same process reads ([`Progress`])
//! and the Prometheus metrics, and logs what is worth a line — in one call.

use crate::runtime::runner::{Progress, RunReport};
use crate::stage::Rejection;
use crate::telemetry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The stage's counters (see the module docs).
pub(in crate::runtime::runner) struct Stats {
    name: &'static str,
    /// Per-record metric handles (an atomic add each, no lookup).
    metrics: telemetry::RecordMetrics,
    progress: Arc<Progress>,
    pub(in crate::runtime::runner) report: RunReport,
}

/// Where a dead-lettered record came from, for its log line.
pub(super) struct Source<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
}

impl Stats {
    pub(super) fn new(name: &'static str, progress: Arc<Progress>) -> Self {
        Stats {
            name,
            metrics: telemetry::RecordMetrics::new(name),
            progress,
            report: RunReport::default(),
        }
    }

    /// A record was read.
    pub(super) fn read(&mut self) {
        self.report.consumed += 1;
        self.metrics.record_in();
    }

    /// A record was handed to the core: its event-time lag and the core's time on it.
    pub(super) fn processed(&mut self, lag_seconds: f64, processing_seconds: f64) {
        self.report.processed += 1;
        self.metrics.processed(lag_seconds, processing_seconds);
    }

    /// A record is done with: processed or dead-lettered, and what it gave handed to
    /// the producer. A driver waiting for the stage to catch up counts these.
    pub(super) fn handled(&self) {
        self.progress.consumed.fetch_add(1, Ordering::Release);
    }

    /// A record goes to the dead-letter topic: counted by reason and logged.
    pub(super) fn dead_lettered(&mut self, rej: &Rejection, from: &Source<'_>) {
        telemetry::dead_lettered(
            self.name,
            rej.reason,
            from.topic,
            from.partition,
            from.offset,
            &rej.detail,
        );
        self.report.dead_lettered += 1;
        self.progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
        *self
            .report
            .dead_letter_reasons
            .entry(rej.reason.to_string())
            .or_default() += 1;
    }

    /// Outputs the broker acknowledged.
    pub(super) fn produced(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.report.produced += n;
        self.progress.produced.fetch_add(n, Ordering::Release);
        telemetry::records_out(self.name, n);
    }

    /// Sends waiting for their acknowledgement (or for room in the producer's queue).
    pub(super) fn in_flight(&self, n: usize) {
        self.progress.in_flight.store(n as u64, Ordering::Release);
    }

    /// State records handed to the producer for the changelog.
    pub(super) fn state_writes(&mut self, n: usize) {
        telemetry::state_writes(self.name, n as u64);
        self.report.state_writes += n as u64;
    }

    /// The core's timer ran: its gauges with it.
    pub(super) fn ticked(&self, active_series: usize, counters: &[(&'static str, u64)]) {
        self.progress.ticks.fetch_add(1, Ordering::Release);
        telemetry::active_series(self.name, active_series);
        telemetry::core_counters(self.name, counters);
    }

    /// How long a commit (a checkpoint's, or a transaction's) took, and whether it went
    /// through.
    pub(super) fn commit_time(&self, seconds: f64, ok: bool) {
        telemetry::commit(self.name, seconds, ok);
    }

    /// A commit the broker accepted (or, asynchronous, took in).
    pub(super) fn committed(&mut self) {
        self.report.commits += 1;
    }

    /// A transaction was aborted; the stage recovers from it.
    pub(super) fn aborted(&mut self, cause: &str) {
        telemetry::transaction_aborted(self.name, cause);
        self.report.aborts += 1;
    }

    /// Partitions came or went.
    pub(super) fn rebalance(&mut self, kind: &'static str, partitions: &[i32]) {
        telemetry::rebalance(self.name, kind, partitions);
        if kind == "assigned" {
            self.report.assignments += 1;
        }
    }

    /// State restored from the changelog (its metrics are the restorer's).
    pub(super) fn restored(&mut self, keys: u64, unusable: u64) {
        self.report.restored_keys += keys;
        self.report.restore_unusable += unusable;
    }

    /// A record that was not written for being larger than the record limit.
    pub(super) fn too_large(&self, topic: &str) {
        telemetry::record_too_large(self.name, topic);
    }

    /// The producer's queue was full; a send waits.
    pub(super) fn backpressure(&mut self) {
        self.report.queue_full_waits += 1;
        telemetry::backpressure(self.name);
    }
}
