//! `perfpilot run <stage>`.

use super::{maybe_serve_metrics, parse_duration, KafkaArgs, StageKind};
use crate::config::Config;
use crate::pipeline::run_kind;
use crate::runtime::Shutdown;
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
    /// Time allowed on SIGINT/SIGTERM to finish in-flight work, flush and commit.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Metric events further than this in the future are dead-lettered.
    #[arg(long, default_value = "1day", value_parser = parse_duration)]
    max_future: Duration,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let topics = args.kafka.topics();
    let kafka = args.kafka.options();
    let mut runner = args.stage.runner_config(&topics, args.group_id.clone());
    runner.max_batch = args.max_batch.max(1);
    runner.shutdown_deadline = args.shutdown_timeout;
    runner.limits.max_future_ms = args.max_future.as_millis() as i64;
    tracing::info!(properties = ?kafka.redacted_properties(), "kafka client properties");
    maybe_serve_metrics(args.metrics_addr);
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let report = run_kind(args.stage, &config, &kafka, runner, shutdown).await?;
    eprintln!(
        "{}: consumed {}, processed {}, dead-lettered {}, produced {}, commits {}",
        args.stage.as_str(),
        report.consumed,
        report.processed,
        report.dead_lettered,
        report.produced,
        report.commits
    );
    Ok(if report.clean_shutdown {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
