//! The command line: argument types (clap) and one function per verb. `main.rs` only
//! parses and calls [`run`]; errors become exit codes here, at the binary's edge.

mod agent;
mod bench;
mod demo;
mod ingest;
pub mod produce;
mod replay;
mod simulate;
mod stage;
mod tail;
pub mod tail_format;
mod values;

use crate::runtime::kafka::parse_property;
use crate::runtime::{KafkaOptions, Topics};
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

/// perfpilot — a performance autopilot over Apache Kafka.
///
/// Agents publish metric events; the detector and forecaster stages turn them into
/// anomalies and forecasts, the recommender proposes actions, the coordinator
/// arbitrates them into decisions. Start with `perfpilot demo`.
#[derive(Debug, Parser)]
#[command(name = "perfpilot", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=perfpilot=debug).
    #[arg(
        long,
        value_enum,
        default_value = "plain",
        global = true,
        env = "PERFPILOT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one pipeline stage against a Kafka cluster until SIGINT/SIGTERM.
    ///
    /// Start more instances with the same group id to scale out: partitions are
    /// shared among them. On shutdown the stage stops reading, finishes in-flight
    /// work, flushes, commits and leaves the group within --shutdown-timeout.
    Run(stage::RunArgs),
    /// Read metric events as JSON lines on stdin and publish them to the metrics topic.
    ///
    /// One object per line:
    /// {"target":"checkout","metric":"cpu_utilization","value":0.42,
    ///  "pool":"shop","labels":{"zone":"a"},"timestamp_ms":1700000000000,"unit":"ratio","source":"host-1"}
    /// target, metric and value are required; timestamp_ms defaults to now, source to
    /// --source. A bad line is reported with its number on stderr and skipped.
    /// Exit status: 0 all lines published, 1 some lines were bad, 2 error.
    Produce(produce::ProduceArgs),
    /// Print the records of a perfpilot topic as JSON lines on stdout.
    ///
    /// TOPIC is a logical name (metrics, anomalies, forecasts, recommendations,
    /// decisions, deadletter) to which --topic-prefix is added, or a full topic name.
    /// Records that do not decode are reported on stderr with their offset.
    Tail(tail::TailArgs),
    /// Publish metrics to a cluster: scraped from Prometheus endpoints, or from the
    /// synthetic services (the demo's workload).
    ///
    /// --scrape URL...: every --interval, each endpoint is scraped (text format or
    /// OpenMetrics) and its samples published by the label rules of --config's [ingest]
    /// table. --synthetic: with a live clock by default (one sample per --step);
    /// approved decisions on the decisions topic change the services' replicas,
    /// closing the loop.
    Agent(agent::AgentArgs),
    /// Take metrics from where they already are and publish them to the metrics topic.
    ///
    /// `ingest prometheus` receives Prometheus remote-write. (To scrape endpoints
    /// yourself, see `agent --scrape`.)
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    /// Run the detector and forecaster cores over historical CSV data (backtesting).
    ///
    /// Default: one output row per input row, in input order, with the anomaly score in
    /// [0,1] and the expected value and bounds. With --horizon H: each series' last H
    /// points are forecast from the rest. Bad rows are reported with their line numbers
    /// and skipped; the exit status is 1 when there were any.
    Replay(replay::ReplayArgs),
    /// Compare perfpilot with an HPA-style reactive policy and static peak provisioning
    /// on simulated services (closed loop, no Kafka), built-in or from your recorded load.
    ///
    /// Services respond to load and replicas (new replicas start after a delay); a
    /// built-in load trace with daily cycles, weekends, bursts and slow growth drives
    /// them, or with --trace FILE.csv your services' recorded demand. Prints
    /// SLO-violation minutes, average slack, cost, changes and flip-flops per policy.
    Simulate(simulate::SimulateArgs),
    /// Measure on a Kafka cluster: throughput of the metric stages against a no-op relay
    /// (`bench throughput`), end-to-end latency at a fixed load (`bench latency`), and
    /// memory per series of the cores (`bench memory`).
    Bench(bench::BenchArgs),
    /// Manage perfpilot's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Run the whole pipeline with synthetic agents on an embedded broker and watch.
    ///
    /// Starts librdkafka's mock cluster in-process (or uses --bootstrap-servers),
    /// creates the topics, runs five synthetic services in two pools with injected
    /// incidents, all four stages, and prints anomalies, forecasts, recommendations
    /// and decisions as they happen; ends with a summary.
    Demo(demo::DemoArgs),
}

/// `perfpilot topics …`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every perfpilot topic (existing ones are left as they are).
    Create(TopicsCreateArgs),
    /// Print the intended topic layout: names, keys and settings. Needs no broker (see
    /// `describe` for what a cluster actually holds).
    List {
        /// Prefix of every topic name.
        #[arg(long, default_value = "perfpilot.", env = "PERFPILOT_TOPIC_PREFIX")]
        topic_prefix: String,
    },
    /// Describe the topics on a cluster: partitions, replication, records held, the
    /// settings the stages depend on, and each stage group's lag (records between its
    /// committed offsets and the end of the topics it reads).
    Describe(TopicsDescribeArgs),
}

/// Arguments of `topics describe`.
#[derive(Debug, Args)]
pub struct TopicsDescribeArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// More consumer groups whose lag to show on every topic a stage reads (stages run
    /// with --group-id, or your own subscribers); the stages' default groups are always
    /// shown.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
}

/// Arguments of `topics create`.
#[derive(Debug, Args)]
pub struct TopicsCreateArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Partitions per topic: the most instances a stage can usefully run.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Replication factor (3 for production clusters).
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
}

/// How to reach Kafka; shared by every verb that talks to it.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        env = "PERFPILOT_BOOTSTRAP_SERVERS"
    )]
    pub bootstrap_servers: String,
    /// Prefix of every topic name.
    #[arg(long, default_value = "perfpilot.", env = "PERFPILOT_TOPIC_PREFIX")]
    pub topic_prefix: String,
    /// Extra librdkafka property, key=value (repeatable), e.g. -X security.protocol=SASL_SSL.
    /// Secrets are better passed in the environment, out of `ps`: PERFPILOT_KAFKA_X_<KEY>
    /// with the key's dots as underscores (PERFPILOT_KAFKA_X_SASL_PASSWORD=… sets
    /// sasl.password); -X wins over the environment. Values of password and secret
    /// properties are never logged.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

/// The schema registry settings shared by the stages.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// A schema registry with Confluent's REST API (e.g. http://registry:8081, or
    /// Apicurio's http://apicurio:8080/apis/ccompat/v7). The stage then reads
    /// Confluent-framed records (magic byte 0 + schema id) by fetching and caching their
    /// writer schemas, registers perfpilot's six schemas under <topic>-value, and writes
    /// its outputs and dead letters in Confluent framing. Without it, Confluent-framed
    /// inputs are dead-lettered as confluent_framing.
    #[arg(
        long = "schema-registry",
        value_name = "URL",
        env = "PERFPILOT_SCHEMA_REGISTRY_URL"
    )]
    pub url: Option<String>,
    /// Basic-auth credentials for the registry as USER:PASSWORD (Confluent's
    /// basic.auth.user.info); better given in the environment.
    #[arg(
        long = "schema-registry-user-info",
        value_name = "USER:PASSWORD",
        env = "PERFPILOT_SCHEMA_REGISTRY_USER_INFO",
        hide_env_values = true
    )]
    pub user_info: Option<String>,
    /// How long a writer schema is fetched again while the registry is away, before the
    /// record is dead-lettered as schema_registry_unavailable.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub schema_registry_timeout: std::time::Duration,
    /// CA certificates (PEM) to verify an https:// registry with [default: the system's].
    #[arg(
        long,
        value_name = "FILE",
        env = "PERFPILOT_SCHEMA_REGISTRY_CA_LOCATION"
    )]
    pub schema_registry_ca_location: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a registry that asks for mutual TLS.
    #[arg(
        long,
        value_name = "FILE",
        env = "PERFPILOT_SCHEMA_REGISTRY_CERTIFICATE_LOCATION"
    )]
    pub schema_registry_certificate_location: Option<std::path::PathBuf>,
    /// Client private key (PEM) for a registry that asks for mutual TLS.
    #[arg(
        long,
        value_name = "FILE",
        env = "PERFPILOT_SCHEMA_REGISTRY_KEY_LOCATION"
    )]
    pub schema_registry_key_location: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    /// The client, when a registry is named.
    pub fn client(
        &self,
        expected: Option<&'static str>,
    ) -> anyhow::Result<Option<crate::runtime::registry::SchemaRegistry>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut options = crate::runtime::registry::RegistryOptions::new(url.clone());
        options.fetch_timeout = self.schema_registry_timeout;
        options.ca_location = self.schema_registry_ca_location.clone();
        options.certificate_location = self.schema_registry_certificate_location.clone();
        options.key_location = self.schema_registry_key_location.clone();
        if let Some(info) = &self.user_info {
            let (user, password) = info.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("--schema-registry-user-info must be USER:PASSWORD")
            })?;
            options.basic_auth = Some((user.to_string(), password.to_string()));
        }
        Ok(Some(crate::runtime::registry::SchemaRegistry::new(
            options, expected,
        )?))
    }
}

pub use crate::runtime::kafka::{properties_from_env, PROPERTY_ENV_PREFIX};

impl KafkaArgs {
    /// Client options.
    pub fn options(&self) -> KafkaOptions {
        // Environment first, so -X given on the command line overrides it.
        let mut properties = properties_from_env(std::env::vars());
        properties.extend(self.property.iter().cloned());
        KafkaOptions {
            bootstrap_servers: self.bootstrap_servers.clone(),
            properties,
            consumer_properties: Vec::new(),
            describes_configs: true,
        }
    }

    /// Topic names.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(self.topic_prefix.clone())
    }
}

pub use crate::pipeline::StageKind;
pub use crate::time::parse_duration;

pub use crate::telemetry::maybe_serve_metrics;

/// Runs a parsed command line. Must be called inside a tokio runtime.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The demo's show is its stdout: its logs default to warnings, so info lines do not
    // interleave with it (RUST_LOG=info brings them back).
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    crate::telemetry::init_logging(cli.log_format, default_filter);
    match cli.command {
        Command::Run(args) => stage::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Ingest(command) => ingest::run(command).await,
        Command::Replay(args) => replay::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Topics(TopicsCommand::Create(args)) => {
            let created = crate::runtime::topics::create_all(
                &args.kafka.options(),
                &args.kafka.topics(),
                args.partitions,
                args.replication_factor,
            )
            .await?;
            for (name, new) in created {
                println!("{name}: {}", if new { "created" } else { "exists" });
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Describe(args)) => {
            let topics = args.kafka.topics();
            let readers = StageKind::readers(&topics, &args.groups);
            let described =
                crate::runtime::describe::describe_all(&args.kafka.options(), &topics, readers)
                    .await?;
            print!("{}", crate::runtime::describe::render(&described));
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::List { topic_prefix }) => {
            for spec in Topics::with_prefix(topic_prefix).specs() {
                let cfg: Vec<String> = spec
                    .configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("{:<32} {:<58} {}", spec.name, spec.purpose, cfg.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            maybe_serve_metrics(args.metrics_addr);
            let summary = crate::demo::run_demo(args.into()).await?;
            summary.print(&mut std::io::stdout())?;
            Ok(if summary.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_come_from_the_environment_by_prefix() {
        let vars = [
            ("PERFPILOT_KAFKA_X_SASL_PASSWORD", "s3cret"),
            ("PERFPILOT_KAFKA_X_SECURITY_PROTOCOL", "SASL_SSL"),
            ("PERFPILOT_KAFKA_X_", "ignored: no key"),
            ("PERFPILOT_BOOTSTRAP_SERVERS", "ignored: not a property"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            properties_from_env(vars.into_iter()),
            vec![
                ("sasl.password".to_string(), "s3cret".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]
        );
    }
}
