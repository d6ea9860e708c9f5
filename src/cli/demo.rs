//! `perfpilot demo`'s command line (the demo itself is `crate::demo`).

use crate::demo::DemoOptions;
use crate::time::parse_duration;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long the demo runs: the agents publish (this − 6 s) × --ticks-per-second
    /// simulated minutes, in lockstep with the pipeline (longer on a slow machine).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run against this Kafka cluster instead of the embedded broker (topics get a
    /// fresh prefix per run, so earlier runs do not interfere). Only this option picks a
    /// cluster: PERFPILOT_BOOTSTRAP_SERVERS, which the stages read, is ignored here.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// With --bootstrap-servers: extra librdkafka property, key=value (repeatable), e.g.
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-256. Secrets are better
    /// passed as PERFPILOT_KAFKA_X_<KEY> (see `run --help`); -X wins over them.
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        value_parser = crate::runtime::kafka::parse_property,
        requires = "bootstrap_servers"
    )]
    pub property: Vec<(String, String)>,
    /// Simulated minutes per second of wall time, at most (each is worked through by
    /// the pipeline before the next).
    #[arg(long, default_value_t = 10)]
    pub ticks_per_second: u32,
    /// Background hosts that each report one noisy seasonal metric (adds load).
    #[arg(long, default_value_t = 300)]
    pub fleet: usize,
    /// Malformed records to slip into the metrics stream (they must be dead-lettered).
    #[arg(long, default_value_t = 3)]
    pub poison: u32,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics while the demo runs.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: Option<SocketAddr>,
    /// Configuration file to use instead of the demo's built-in one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    pub quiet: bool,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        DemoOptions {
            duration: a.duration,
            bootstrap_servers: a.bootstrap_servers,
            property: a.property,
            ticks_per_second: a.ticks_per_second,
            fleet: a.fleet,
            poison: a.poison,
            seed: a.seed,
            metrics_addr: a.metrics_addr,
            config: a.config,
            quiet: a.quiet,
            partitions: a.partitions,
        }
    }
}
