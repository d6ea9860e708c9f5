//! `perfpilot tail <topic>`: any perfpilot topic as JSON lines or compact text.

use super::tail_format::{to_json, to_text, Origin, TailFormat};
use super::{parse_duration, KafkaArgs, RegistryArgs};
use crate::event::AnyRecord;
use clap::Args;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topic: metrics, anomalies, forecasts, recommendations, decisions, deadletter, or a full name.
    topic: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Start at the oldest record instead of only new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when no record arrived for this long (e.g. 5s); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// json: one JSON object per record. text: one line per record —
    /// `topic/partition@offset key=… Type field=value …`. Either way, keys are text when
    /// UTF-8 and bytes are base64 (`key_base64`, `payload_base64`).
    #[arg(long, value_enum, default_value_t = TailFormat::Json)]
    format: TailFormat,
}

pub(super) async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let topic = args.kafka.topics().resolve(&args.topic);
    let group = format!(
        "perfpilot-tail-{}-{}",
        std::process::id(),
        crate::runtime::now_ms()
    );
    let mut cfg = args.kafka.options().consumer_config(&group);
    cfg.set(
        "auto.offset.reset",
        if args.from_beginning {
            "earliest"
        } else {
            "latest"
        },
    );
    let registry = args.registry.client(None)?;
    let consumer: StreamConsumer = cfg.create()?;
    consumer.subscribe(&[&topic])?;
    let shutdown = crate::runtime::Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let mut stdout = std::io::stdout().lock();
    let mut n = 0u64;
    let idle = args
        .idle_timeout
        .unwrap_or(Duration::from_secs(u64::MAX / 4));
    while args.max.is_none_or(|max| n < max) {
        let m = tokio::select! {
            _ = shutdown.wait() => break,
            r = tokio::time::timeout(idle, consumer.recv()) => match r {
                Ok(m) => m?,
                Err(_) => break,
            },
        };
        n += 1;
        let payload = m.payload().unwrap_or(&[]);
        let decoded = match &registry {
            Some(r) => read_confluent(r, payload, &shutdown).await,
            None => AnyRecord::decode(payload).map_err(|e| e.to_string()),
        };
        match decoded {
            Ok(record) => {
                let value = to_json(&record)?;
                match args.format {
                    TailFormat::Json => serde_json::to_writer(&mut stdout, &value)?,
                    TailFormat::Text => {
                        let origin = Origin {
                            topic: &topic,
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key(),
                        };
                        write!(stdout, "{}", to_text(&origin, &value))?;
                    }
                }
                writeln!(stdout)?;
            }
            Err(e) => eprintln!("{topic}/{}@{}: {e}", m.partition(), m.offset()),
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A record in either framing, the Confluent one through the registry.
async fn read_confluent(
    registry: &crate::runtime::registry::SchemaRegistry,
    payload: &[u8],
    shutdown: &crate::runtime::Shutdown,
) -> Result<AnyRecord, String> {
    use crate::event::confluent::{confluent_schema_id, CONFLUENT_HEADER_LEN};
    use crate::runtime::registry::Lookup;
    let Some(id) = confluent_schema_id(payload) else {
        return AnyRecord::decode(payload).map_err(|e| e.to_string());
    };
    registry.ensure(id, shutdown.wait()).await;
    match registry.lookup(id) {
        None => Err(format!(
            "schema id {id}: the schema registry at {} did not answer",
            registry.url()
        )),
        Some(Lookup::Refused { detail, .. }) => Err(detail),
        Some(Lookup::Schema(writer)) => writer
            .to_single_object(&payload[CONFLUENT_HEADER_LEN..])
            .map_err(|e| e.to_string())
            .and_then(|single| AnyRecord::decode(&single).map_err(|e| e.to_string())),
    }
}
