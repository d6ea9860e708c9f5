//! `perfpilot produce`: JSON lines on stdin → metric events on Kafka.

use super::KafkaArgs;
use crate::agent::publish::{MetricPublisher, PublishError};
use crate::event::{validate_metric, Labels, MetricEvent, MAX_FUTURE_MS_DEFAULT};
use crate::runtime::now_ms;
use clap::Args;
use serde::Deserialize;
use std::process::ExitCode;
use tokio::io::AsyncBufReadExt;

/// Arguments of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Agent id for lines that name no source.
    #[arg(long, default_value = "perfpilot-cli")]
    source: String,
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceLine {
    target: String,
    metric: String,
    value: f64,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    source: Option<String>,
}

/// Parses and checks one line into an event.
pub fn parse_line(line: &str, default_source: &str, now: i64) -> Result<MetricEvent, String> {
    let l: ProduceLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let event = MetricEvent {
        source: l.source.unwrap_or_else(|| default_source.to_string()),
        target: l.target,
        pool: l.pool,
        metric: l.metric,
        labels: l.labels,
        timestamp_ms: l.timestamp_ms.unwrap_or(now),
        value: l.value,
        unit: l.unit,
    };
    validate_metric(&event, now, MAX_FUTURE_MS_DEFAULT).map_err(|e| e.to_string())?;
    Ok(event)
}

pub(super) async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let topic = args.kafka.topics().metrics();
    let options = args.kafka.options();
    let mut publisher = MetricPublisher::new(&options, &topic)?;
    // Name the address and what to check: a bare "MessageTimedOut" says neither.
    let failed = |e: PublishError| -> anyhow::Error {
        match &e {
            PublishError::Kafka(k) => {
                let hint = crate::runtime::kafka::hint_for(k, "");
                anyhow::anyhow!(
                    "publishing to {topic} at {} failed: {k}{}{hint}",
                    options.bootstrap_servers,
                    if hint.is_empty() { "" } else { "; " }
                )
            }
            PublishError::Encode(_) => e.into(),
        }
    };
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let (mut n, mut bad) = (0u64, 0u64);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw).await? == 0 {
            break;
        }
        n += 1;
        // Bytes that are not UTF-8 make a bad line like any other, not the end of the run.
        let line = match std::str::from_utf8(&raw) {
            Ok(line) => line.trim_end_matches(['\n', '\r']),
            Err(e) => {
                bad += 1;
                eprintln!(
                    "line {n}: not UTF-8 (invalid byte at column {}); skipped",
                    e.valid_up_to() + 1
                );
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, &args.source, now_ms()) {
            Ok(event) => publisher.publish(&event).await.map_err(failed)?,
            Err(e) => {
                bad += 1;
                eprintln!("line {n}: {e}; skipped");
            }
        }
    }
    let sent = publisher.flush().await.map_err(failed)?;
    eprintln!("published {sent} events to {topic}; {bad} bad lines skipped");
    Ok(if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_table() {
        let now = 1_000_000;
        let ok = parse_line(r#"{"target":"a","metric":"m","value":1.5}"#, "cli", now).unwrap();
        assert_eq!(
            (ok.timestamp_ms, ok.source.as_str(), ok.pool),
            (now, "cli", None)
        );
        for (line, needle) in [
            (r#"{"target":"a","metric":"m"}"#, "value"),
            (r#"{"target":"","metric":"m","value":1}"#, "target"),
            (
                r#"{"target":"a","metric":"m","value":1,"colour":"red"}"#,
                "colour",
            ),
            (
                r#"{"target":"a","metric":"m","value":1,"timestamp_ms":99999999999999}"#,
                "future",
            ),
            ("not json", "expected"),
        ] {
            let e = parse_line(line, "cli", now).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
