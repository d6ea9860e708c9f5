//! Logs (tracing) and Prometheus metrics. Every metric perfpilot exports is named here,
//! in one place, so the README's list and the code cannot drift.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::Matcher;
use std::net::SocketAddr;

/// Records consumed by a stage (labels: stage).
pub const RECORDS_IN: &str = "perfpilot_records_in_total";
/// Records produced by a stage, outputs only (labels: stage).
pub const RECORDS_OUT: &str = "perfpilot_records_out_total";
/// Inputs sent to the dead-letter topic (labels: stage, reason).
pub const DEAD_LETTERED: &str = "perfpilot_dead_lettered_total";
/// 1 while the stage's deliveries move, 0 while they have waited long for the broker
/// (labels: stage).
pub const HEALTHY: &str = "perfpilot_healthy";
/// Records not written because they exceed `--max-record-bytes` (labels: stage, topic).
pub const RECORDS_TOO_LARGE: &str = "perfpilot_records_too_large_total";
/// Time the core spent on one record (labels: stage).
pub const PROCESSING_SECONDS: &str = "perfpilot_processing_seconds";
/// Wall clock minus the event time of the last record (labels: stage).
pub const EVENT_TIME_LAG_SECONDS: &str = "perfpilot_event_time_lag_seconds";
/// Time of one offset commit (labels: stage).
pub const COMMIT_SECONDS: &str = "perfpilot_commit_seconds";
/// Failed offset commits (labels: stage).
pub const COMMIT_FAILURES: &str = "perfpilot_commit_failures_total";
/// Series or keys with state in memory (labels: stage).
pub const ACTIVE_SERIES: &str = "perfpilot_active_series";
/// Partition assignments and revocations (labels: stage, kind).
pub const REBALANCES: &str = "perfpilot_rebalances_total";
/// Owned input partitions librdkafka never started fetching, assigned again to start
/// them (labels: stage; see `runner::stall`).
pub const PARTITIONS_REFETCHED: &str = "perfpilot_partitions_refetched_total";
/// Batches processed (labels: stage).
pub const BATCHES: &str = "perfpilot_batches_total";
/// Counters of the cores: late points, duplicates, ... (labels: stage, counter).
pub const CORE_EVENTS: &str = "perfpilot_core_events_total";
/// Records behind the high watermark, per input partition (labels: stage, topic,
/// partition); 0 from instances that do not own the partition.
pub const CONSUMER_LAG: &str = "perfpilot_consumer_lag_records";
/// Always 1; the labels say what runs (labels: version).
pub const BUILD_INFO: &str = "perfpilot_build_info";
/// Times the producer queue was full and the stage waited (labels: stage).
pub const BACKPRESSURE_WAITS: &str = "perfpilot_backpressure_waits_total";
/// Time to restore assigned partitions from the state changelog (labels: stage).
pub const RESTORE_SECONDS: &str = "perfpilot_state_restore_seconds";
/// Keys restored from the state changelog (labels: stage).
pub const RESTORED_KEYS: &str = "perfpilot_state_restored_keys_total";
/// Changelog records that could not be restored; the key started cold (labels: stage).
pub const RESTORE_UNUSABLE: &str = "perfpilot_state_unusable_total";
/// Changelog partitions whose restore waited for a transaction on them to be committed
/// or aborted before it could end (labels: stage).
pub const RESTORE_WAITS: &str = "perfpilot_state_restore_waits_total";
/// State records written to the changelog, tombstones included (labels: stage).
pub const STATE_WRITES: &str = "perfpilot_state_writes_total";
/// Transactions aborted in exactly-once mode; their inputs are re-read (labels: stage).
pub const TXN_ABORTS: &str = "perfpilot_transactions_aborted_total";

/// Outputs per target, by record type (labels: stage, record, target; at most
/// [`MAX_TARGET_LABELS`] targets per stage, the rest counted as target="other").
pub const TARGET_OUTPUTS: &str = "perfpilot_target_outputs_total";
/// Decisions by verdict and the rule that gave it (labels: stage, verdict, rule).
pub const DECISIONS: &str = "perfpilot_decisions_total";

/// Targets a stage labels its per-target counts with; beyond them a target counts as
/// "other", so a fleet of many thousand targets cannot blow up the series count.
/// Counter: samples from Prometheus (remote-write or scrape), by `ingest` and `outcome`.
pub const INGEST_SAMPLES: &str = "perfpilot_ingest_samples_total";
/// Counter: remote-write requests answered, or scrapes made, by `ingest` and `status`.
pub const INGEST_REQUESTS: &str = "perfpilot_ingest_requests_total";

pub const MAX_TARGET_LABELS: usize = 1000;

/// Every exported metric with its help text (for the README and `/metrics` HELP lines).
pub const ALL: [(&str, &str); 27] = [
    (
        INGEST_SAMPLES,
        "samples received by `ingest prometheus` or `agent --scrape`, by outcome (published or why not)",
    ),
    (
        INGEST_REQUESTS,
        "remote-write requests and scrapes, by status",
    ),
    (
        TARGET_OUTPUTS,
        "anomalies, recommendations and decisions per target (the first 1000 targets; then target=\"other\")",
    ),
    (DECISIONS, "decisions by verdict and rule"),
    (
        BUILD_INFO,
        "always 1; the version label says which perfpilot runs",
    ),
    (
        CONSUMER_LAG,
        "records behind the high watermark per input partition (0 where another instance owns it)",
    ),
    (
        HEALTHY,
        "1 while deliveries move, 0 while they have waited over 10 s for the broker",
    ),
    (RECORDS_IN, "records consumed by a stage"),
    (
        RECORDS_TOO_LARGE,
        "records not written for exceeding --max-record-bytes",
    ),
    (RECORDS_OUT, "records produced by a stage"),
    (
        DEAD_LETTERED,
        "inputs sent to the dead-letter topic, by reason",
    ),
    (
        PROCESSING_SECONDS,
        "time the stage core spent on one record",
    ),
    (
        EVENT_TIME_LAG_SECONDS,
        "wall clock minus event time of the last record",
    ),
    (COMMIT_SECONDS, "time of one offset commit"),
    (
        COMMIT_FAILURES,
        "offset commits that failed (retried with the next batch)",
    ),
    (ACTIVE_SERIES, "series or keys with state in memory"),
    (REBALANCES, "partition assignments and revocations"),
    (
        PARTITIONS_REFETCHED,
        "owned partitions never fetched (librdkafka #5586), assigned again",
    ),
    (BATCHES, "batches processed"),
    (
        CORE_EVENTS,
        "counters of the stage core (late, duplicate, refused ...)",
    ),
    (
        BACKPRESSURE_WAITS,
        "times the producer queue was full and the stage waited",
    ),
    (
        RESTORE_SECONDS,
        "time to restore assigned partitions from the state changelog",
    ),
    (RESTORED_KEYS, "keys restored from the state changelog"),
    (
        RESTORE_UNUSABLE,
        "changelog records that could not be restored (the key started cold)",
    ),
    (
        RESTORE_WAITS,
        "changelog partitions whose restore waited for an undecided transaction",
    ),
    (
        STATE_WRITES,
        "state records written to the changelog, tombstones included",
    ),
    (
        TXN_ABORTS,
        "transactions aborted in exactly-once mode (their inputs are re-read)",
    ),
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Sets up logging from `RUST_LOG` (default `default_filter`, e.g. `info`), to stderr.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, not in files, pipes or log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first.
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// The Prometheus exporter as every perfpilot process configures it.
fn prometheus() -> Result<metrics_exporter_prometheus::PrometheusBuilder, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        // Per record: microseconds.
        .set_buckets_for_metric(
            Matcher::Full(PROCESSING_SECONDS.to_string()),
            &[
                0.000_001,
                0.000_002_5,
                0.000_005,
                0.000_01,
                0.000_025,
                0.000_05,
                0.000_1,
                0.000_25,
                0.000_5,
                0.001,
                0.01,
                0.1,
            ],
        )
        .and_then(|b| {
            // A broker round trip; up to the commit timeouts while the broker is away.
            b.set_buckets_for_metric(
                Matcher::Full(COMMIT_SECONDS.to_string()),
                &[
                    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
            )
        })
        .and_then(|b| {
            // Seconds to minutes (--restore-timeout is 5 min by default).
            b.set_buckets_for_metric(
                Matcher::Full(RESTORE_SECONDS.to_string()),
                &[
                    0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ],
            )
        })
        .map_err(|e| e.to_string())
}

fn describe_all() {
    for (name, help) in ALL {
        metrics::describe_counter!(name, help);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Serves Prometheus `/metrics` on `addr` (must be called inside a tokio runtime).
pub fn serve_metrics(addr: SocketAddr) -> Result<(), MetricsError> {
    let err = |message: String| MetricsError { addr, message };
    prometheus()
        .map_err(err)?
        .with_http_listener(addr)
        .install()
        .map_err(|e| err(e.to_string()))?;
    describe_all();
    Ok(())
}

/// Records metrics as `serve_metrics` does, without an endpoint: the benches measure
/// stages that pay for their telemetry as a production instance does. `false` if a
/// recorder was installed already.
pub fn record_without_endpoint() -> bool {
    let installed = prometheus()
        .ok()
        .and_then(|b| b.install_recorder().ok())
        .is_some();
    describe_all();
    installed
}

/// The per-record metrics of one stage, registered once. Looking a metric up by name and
/// labels on every record cost 0.6–0.9 µs per event with the Prometheus recorder
/// installed (a quarter of the detector's CPU per event); a handle is an atomic add.
#[derive(Clone)]
pub struct RecordMetrics {
    records_in: metrics::Counter,
    event_time_lag: metrics::Gauge,
    processing: metrics::Histogram,
}

impl RecordMetrics {
    /// Registers the metrics of `stage` with the installed recorder (none: no-ops).
    /// The stage's counters of rare events (failed commits, aborted transactions,
    /// producer backpressure, outputs) start at 0, so a query or a dashboard panel
    /// finds them before the first one happens.
    pub fn new(stage: &'static str) -> Self {
        for rare in [RECORDS_OUT, COMMIT_FAILURES, TXN_ABORTS, BACKPRESSURE_WAITS] {
            counter!(rare, "stage" => stage).increment(0);
        }
        RecordMetrics {
            records_in: counter!(RECORDS_IN, "stage" => stage),
            event_time_lag: gauge!(EVENT_TIME_LAG_SECONDS, "stage" => stage),
            processing: histogram!(PROCESSING_SECONDS, "stage" => stage),
        }
    }

    /// A record consumed.
    pub fn record_in(&self) {
        self.records_in.increment(1);
    }

    /// A record processed: its event-time lag and the core's time on it.
    pub fn processed(&self, lag_seconds: f64, processing_seconds: f64) {
        self.event_time_lag.set(lag_seconds);
        self.processing.record(processing_seconds);
    }
}

/// Counts an output of type `record` for `target` (when counted per target) and, for a
/// decision, by its verdict and rule.
pub fn output(
    stage: &'static str,
    record: &'static str,
    target: Option<&str>,
    verdict_and_rule: Option<(&'static str, &str)>,
) {
    if let Some(target) = target {
        let target = bounded_target(stage, target);
        counter!(TARGET_OUTPUTS, "stage" => stage, "record" => record, "target" => target)
            .increment(1);
    }
    if let Some((verdict, rule)) = verdict_and_rule {
        counter!(DECISIONS, "stage" => stage, "verdict" => verdict, "rule" => rule.to_string())
            .increment(1);
    }
}

/// `target`, or "other" once the stage has labelled [`MAX_TARGET_LABELS`] others.
fn bounded_target(stage: &'static str, target: &str) -> String {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<&'static str, HashSet<String>>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let targets = seen.entry(stage).or_default();
    if targets.contains(target) {
        return target.to_string();
    }
    if targets.len() < MAX_TARGET_LABELS {
        targets.insert(target.to_string());
        return target.to_string();
    }
    "other".to_string()
}

/// Counts produced records.
pub fn records_out(stage: &'static str, n: u64) {
    counter!(RECORDS_OUT, "stage" => stage).increment(n);
}

/// A dead-lettered record: counted by reason and logged.
pub fn dead_lettered(
    stage: &'static str,
    reason: &'static str,
    topic: &str,
    partition: i32,
    offset: i64,
    detail: &str,
) {
    counter!(DEAD_LETTERED, "stage" => stage, "reason" => reason).increment(1);
    tracing::warn!(
        stage,
        reason,
        topic,
        partition,
        offset,
        detail,
        "record dead-lettered"
    );
}

/// The stage's health (see [`HEALTHY`]).
pub fn healthy(stage: &'static str, ok: bool) {
    gauge!(HEALTHY, "stage" => stage).set(if ok { 1.0 } else { 0.0 });
}

/// A record that was not written for being larger than the record limit.
pub fn record_too_large(stage: &'static str, topic: &str) {
    counter!(RECORDS_TOO_LARGE, "stage" => stage, "topic" => topic.to_string()).increment(1);
}

/// A commit and its duration.
pub fn commit(stage: &'static str, seconds: f64, ok: bool) {
    histogram!(COMMIT_SECONDS, "stage" => stage).record(seconds);
    if !ok {
        counter!(COMMIT_FAILURES, "stage" => stage).increment(1);
    }
}

/// Active series gauge.
pub fn active_series(stage: &'static str, n: usize) {
    gauge!(ACTIVE_SERIES, "stage" => stage).set(n as f64);
}

/// Items as one comma-separated text (`0,1,2`): log fields stay plain strings in JSON
/// logs rather than Rust Debug renderings.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A rebalance event.
pub fn rebalance(stage: &'static str, kind: &'static str, partitions: &[i32]) {
    counter!(REBALANCES, "stage" => stage, "kind" => kind).increment(1);
    tracing::info!(stage, kind, partitions = %list(partitions), "partitions {kind}");
}

/// Stalled partitions were assigned again (see [`PARTITIONS_REFETCHED`]).
pub fn refetched(stage: &'static str, partitions: &[i32]) {
    counter!(PARTITIONS_REFETCHED, "stage" => stage).increment(partitions.len() as u64);
    tracing::warn!(
        stage,
        partitions = %list(partitions),
        "partitions owned but never fetched (librdkafka #5586) assigned again"
    );
}

/// A processed batch.
pub fn batch(stage: &'static str) {
    counter!(BATCHES, "stage" => stage).increment(1);
}

/// Core counters: the cores keep cumulative counts, exported as counters at that value.
pub fn core_counters(stage: &'static str, counters: &[(&'static str, u64)]) {
    for (name, value) in counters {
        counter!(CORE_EVENTS, "stage" => stage, "counter" => *name).absolute(*value);
    }
}

/// The consumer lag of one input partition (see [`CONSUMER_LAG`]).
pub fn consumer_lag(stage: &'static str, topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "stage" => stage, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// The producer queue was full.
pub fn backpressure(stage: &'static str) {
    counter!(BACKPRESSURE_WAITS, "stage" => stage).increment(1);
}

/// A restore from the state changelog.
pub fn restore(stage: &'static str, seconds: f64, restored: u64, unusable: u64, waits: u64) {
    histogram!(RESTORE_SECONDS, "stage" => stage).record(seconds);
    counter!(RESTORED_KEYS, "stage" => stage).increment(restored);
    counter!(RESTORE_UNUSABLE, "stage" => stage).increment(unusable);
    counter!(RESTORE_WAITS, "stage" => stage).increment(waits);
}

/// State records written to the changelog.
pub fn state_writes(stage: &'static str, n: u64) {
    counter!(STATE_WRITES, "stage" => stage).increment(n);
}

/// An aborted transaction.
pub fn transaction_aborted(stage: &'static str, error: &str) {
    counter!(TXN_ABORTS, "stage" => stage).increment(1);
    tracing::warn!(
        stage,
        error,
        "transaction failed; the stage stops reading, aborts it and rewinds to the last commit (retrying while the broker is away)"
    );
}

/// Serves `/metrics` if an address is given; a failure is reported, not fatal.
pub fn maybe_serve_metrics(addr: Option<std::net::SocketAddr>) {
    if let Some(addr) = addr {
        match serve_metrics(addr) {
            Ok(()) => tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics"),
            Err(e) => tracing::warn!(error = %e, "metrics endpoint not started"),
        }
    }
}
