//! `perfpilot ingest prometheus`: the remote-write receiver.

use super::{maybe_serve_metrics, parse_duration, KafkaArgs};
use crate::config::Config;
use crate::ingest::mapping::Mapping;
use crate::ingest::receiver::{Receiver, WRITE_PATHS};
use crate::runtime::kafka::check_connection;
use crate::runtime::Shutdown;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `perfpilot ingest …`
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Receive Prometheus remote-write (1.0: protobuf + snappy) and publish the samples
    /// to the metrics topic.
    ///
    /// In prometheus.yml: `remote_write: [{url: "http://ADDR/api/v1/write"}]`.
    ///
    /// Samples become metric events by the label rules of the [ingest] table of
    /// --config (which labels make the target and the pool, which metrics to keep, how
    /// counters become rates; see the README). A request is answered 204 once Kafka has
    /// acknowledged all its events, 503 otherwise (Prometheus retries), 400 when it is
    /// not remote-write. Samples left out are counted by reason in
    /// perfpilot_ingest_samples_total on --metrics-addr.
    Prometheus(PrometheusArgs),
}

/// Arguments of `ingest prometheus`.
#[derive(Debug, Args)]
pub struct PrometheusArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Address to receive remote-write requests on (POST /api/v1/write; GET /health).
    #[arg(
        long,
        default_value = "127.0.0.1:9201",
        env = "PERFPILOT_INGEST_LISTEN"
    )]
    listen: SocketAddr,
    /// Configuration file (TOML) whose [ingest] table holds the label rules.
    #[arg(long, env = "PERFPILOT_CONFIG")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics about the receiver at http://ADDR/metrics.
    #[arg(long, default_value = "127.0.0.1:9465", env = "PERFPILOT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Longest wait for Kafka to acknowledge a request's events before answering 503.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    publish_timeout: Duration,
    /// Time allowed on SIGINT/SIGTERM for the requests being answered.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

pub(super) async fn run(command: IngestCommand) -> anyhow::Result<ExitCode> {
    let IngestCommand::Prometheus(args) = command;
    let config = Config::load(args.config.as_deref())?;
    let kafka = args.kafka.options();
    let topics = args.kafka.topics();
    let mapping = Mapping::new(config.ingest, "remote-write")?;
    let bootstrap = args.kafka.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || check_connection(&kafka, Duration::from_secs(10)))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot reach Kafka at {bootstrap}"))?;
    let kafka = args.kafka.options();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let receiver = Arc::new(Receiver::new(
        &kafka,
        topics.metrics(),
        mapping,
        args.publish_timeout,
    )?);
    maybe_serve_metrics(args.metrics_addr);
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = %topics.metrics(), "receiving Prometheus remote-write at http://{addr}{}", WRITE_PATHS[0]);
    receiver
        .serve(listener, shutdown, args.shutdown_timeout)
        .await;
    Ok(ExitCode::SUCCESS)
}
