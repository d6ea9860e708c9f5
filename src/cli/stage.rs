//! `perfpilot run <stage>`.

use super::{maybe_serve_metrics, parse_duration, KafkaArgs, RegistryArgs, StageKind};
use crate::config::Config;
use crate::pipeline::run_kind;
use crate::runtime::{Guarantee, Shutdown};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The stage to run.
    #[arg(value_enum)]
    stage: StageKind,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Configuration file (TOML): target policies and stage settings. See the README.
    #[arg(long, env = "PERFPILOT_CONFIG")]
    config: Option<PathBuf>,
    /// Consumer group (default: <topic-prefix><stage>). Instances with the same group share the work.
    #[arg(long)]
    group_id: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, default_value = "127.0.0.1:9464", env = "PERFPILOT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Most records per batch; bounds in-flight work.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Time allowed on SIGINT/SIGTERM to finish in-flight work, flush and commit. A stage
    /// still running 20 s after that (a broker away while it leaves the group) exits 1.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Metric events further than this in the future are dead-lettered.
    #[arg(long, default_value = "1day", value_parser = parse_duration)]
    max_future: Duration,
    /// at-least-once: nothing lost, a crash may repeat the outputs since the last commit.
    /// exactly-once: outputs, state and offsets commit in one Kafka transaction; read the
    /// outputs with isolation.level=read_committed.
    #[arg(long, value_enum, default_value_t = Guarantee::AtLeastOnce, env = "PERFPILOT_PROCESSING_GUARANTEE")]
    processing_guarantee: Guarantee,
    /// Time between commits and state checkpoints [default: 5s at-least-once, 100ms
    /// exactly-once]. Longer: fewer state writes, more to re-read after a crash (and,
    /// exactly-once, later visibility of outputs).
    #[arg(long, value_parser = parse_duration)]
    commit_interval: Option<Duration>,
    /// A stable name for this instance (a StatefulSet pod name, say). Exactly-once uses
    /// it in the transactional id, so a restarted instance fences its predecessor at once.
    /// Default: <hostname>-<pid>. Two live instances must not share it.
    #[arg(long, env = "PERFPILOT_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Longest the restore of newly assigned partitions from the state changelog may take
    /// before the stage goes on with what it read.
    #[arg(long, default_value = "5min", value_parser = parse_duration)]
    restore_timeout: Duration,
    /// Largest record (key + value) the stage writes: set it to the smallest
    /// max.message.bytes of the topics it writes. A dead letter above it keeps its
    /// metadata and the first bytes of the original, with the original's size and hash.
    #[arg(long, default_value_t = crate::runtime::runner::DEFAULT_MAX_RECORD_BYTES)]
    max_record_bytes: usize,
}

/// How long past `--shutdown-timeout` a stopping stage may take before it is ended.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(20);

pub(super) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let topics = args.kafka.topics();
    let kafka = args.kafka.options();
    let mut runner = args.stage.runner_config(&topics, args.group_id.clone());
    runner.max_batch = args.max_batch.max(1);
    runner.shutdown_deadline = args.shutdown_timeout;
    runner.limits.max_future_ms = args.max_future.as_millis() as i64;
    runner.guarantee = args.processing_guarantee;
    runner.commit_interval = args
        .commit_interval
        .unwrap_or_else(|| args.processing_guarantee.default_commit_interval());
    if let Some(id) = args.instance_id {
        anyhow::ensure!(!id.trim().is_empty(), "--instance-id must not be empty");
        runner.instance_id = id;
    }
    runner.restore_timeout = args.restore_timeout;
    anyhow::ensure!(
        args.max_record_bytes >= 4096,
        "--max-record-bytes must be at least 4096 (a dead letter's metadata must fit)"
    );
    runner.max_record_bytes = args.max_record_bytes;
    // As `key=value` text (secrets masked), not a Debug dump: JSON logs get a plain string.
    let properties: Vec<String> = kafka
        .redacted_properties()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!(properties = %properties.join(" "), count = properties.len(), "kafka client properties");
    maybe_serve_metrics(args.metrics_addr);
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    // The runner keeps to --shutdown-timeout; the margin covers leaving the group and
    // closing the clients, which librdkafka does not bound while the broker is away.
    if let Some(registry) = args.registry.client(args.stage.input_record())? {
        tracing::info!(
            url = registry.url(),
            "registering perfpilot's schemas with the schema registry"
        );
        registry
            .register_all(&topics, shutdown.wait())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        runner.registry = Some(std::sync::Arc::new(registry));
    }
    shutdown.exit_after(args.shutdown_timeout + SHUTDOWN_MARGIN);
    let report = run_kind(args.stage, &config, &kafka, runner, shutdown).await?;
    eprintln!(
        "{}: consumed {}, processed {}, dead-lettered {}, produced {}, commits {}, state writes {}, keys restored {}, unusable state records {}, aborts {}",
        args.stage.as_str(),
        report.consumed,
        report.processed,
        report.dead_lettered,
        report.produced,
        report.commits,
        report.state_writes,
        report.restored_keys,
        report.restore_unusable,
        report.aborts
    );
    Ok(if report.clean_shutdown {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
