//! The Prometheus text exposition format (0.0.4) and its OpenMetrics cousin, as served
//! on `/metrics` endpoints: sample lines with their `# TYPE`s. Pure: text in, samples
//! and line-numbered problems out.

use super::mapping::MetricKind;
use std::collections::HashMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    /// The metric name.
    pub name: String,
    /// The labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
    /// The sample's own timestamp in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    /// From the family's `# TYPE`.
    pub kind: MetricKind,
}

/// A line that is not a sample, a comment or blank.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The samples of a scraped body, and the lines that could not be read.
/// `openmetrics`: timestamps are seconds (OpenMetrics) rather than milliseconds.
pub fn parse(text: &str, openmetrics: bool) -> (Vec<ExposedSample>, Vec<BadLine>) {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut samples = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    types.insert(name, kind);
                }
            }
            continue;
        }
        match sample_line(line, openmetrics) {
            Ok((name, labels, value, timestamp_ms)) => {
                let kind = kind_of(&types, &name);
                // OpenMetrics' creation time of a counter is not a sample of it.
                if name.ends_with("_created") && kind == MetricKind::Counter {
                    continue;
                }
                samples.push(ExposedSample {
                    name,
                    labels,
                    value,
                    timestamp_ms,
                    kind,
                });
            }
            Err(problem) => bad.push(BadLine {
                line: i + 1,
                problem,
            }),
        }
    }
    (samples, bad)
}

/// A sample's kind from its family's `# TYPE`: counters, and the cumulative parts of
/// histograms and summaries, are counters; a summary's quantiles are gauges.
fn kind_of(types: &HashMap<&str, &str>, name: &str) -> MetricKind {
    let family = |suffix: &str| name.strip_suffix(suffix).and_then(|f| types.get(f));
    if let Some(kind) = types.get(name) {
        return match *kind {
            "counter" => MetricKind::Counter,
            "gauge" | "summary" | "histogram" => MetricKind::Gauge,
            _ => MetricKind::Unknown,
        };
    }
    if let Some(&kind) = family("_total").or_else(|| family("_created")) {
        if kind == "counter" {
            return MetricKind::Counter;
        }
    }
    for suffix in ["_bucket", "_sum", "_count", "_gcount", "_gsum"] {
        if let Some(&kind) = family(suffix) {
            return match kind {
                "histogram" | "summary" => MetricKind::Counter,
                "gaugehistogram" => MetricKind::Gauge,
                _ => MetricKind::Unknown,
            };
        }
    }
    MetricKind::Unknown
}

type Parsed = (String, Vec<(String, String)>, f64, Option<i64>);

fn sample_line(line: &str, openmetrics: bool) -> Result<Parsed, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a metric name without a value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value).ok_or_else(|| format!("{value:?} is not a number"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(ts) if openmetrics => Some(
            ts.parse::<f64>()
                .map(|s| (s * 1000.0).round() as i64)
                .map_err(|_| format!("timestamp {ts:?} is not a number"))?,
        ),
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("timestamp {ts:?} is not whole milliseconds"))?,
        ),
    };
    // OpenMetrics exemplars (`# {…} v`) may follow; anything else is an error.
    if let Some(extra) = fields.next() {
        if !extra.starts_with('#') {
            return Err(format!("unexpected {extra:?} after the value"));
        }
    }
    Ok((name.to_string(), labels, value, timestamp_ms))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `name="value",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = rest[..eq].trim();
        if !valid_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("a label value without its closing quote".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("a label value ends in a backslash".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 3.67e+06
node_cpu_seconds_total{cpu="0",mode="user"} 1234.5
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.42
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 3
http_request_duration_seconds_bucket{le="+Inf"} 5
http_request_duration_seconds_sum 0.9
http_request_duration_seconds_count 5
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.99"} 0.25
rpc_duration_seconds_count 10
untyped_thing{path="/a \"b\"\\c\nd"} -Inf 1700000000000
"#;

    #[test]
    fn reads_samples_labels_types_and_timestamps() {
        let (samples, bad) = parse(NODE, false);
        assert!(bad.is_empty(), "{bad:?}");
        let got: Vec<(&str, f64, MetricKind)> = samples
            .iter()
            .map(|s| (s.name.as_str(), s.value, s.kind))
            .collect();
        use MetricKind::*;
        assert_eq!(
            got,
            vec![
                ("node_cpu_seconds_total", 3.67e6, Counter),
                ("node_cpu_seconds_total", 1234.5, Counter),
                ("node_load1", 0.42, Gauge),
                ("http_request_duration_seconds_bucket", 3.0, Counter),
                ("http_request_duration_seconds_bucket", 5.0, Counter),
                ("http_request_duration_seconds_sum", 0.9, Counter),
                ("http_request_duration_seconds_count", 5.0, Counter),
                ("rpc_duration_seconds", 0.25, Gauge),
                ("rpc_duration_seconds_count", 10.0, Counter),
                ("untyped_thing", f64::NEG_INFINITY, Unknown),
            ]
        );
        assert_eq!(
            samples[0].labels,
            vec![
                ("cpu".to_string(), "0".to_string()),
                ("mode".to_string(), "idle".to_string())
            ]
        );
        assert_eq!(samples[4].labels[0].1, "+Inf");
        let last = samples.last().unwrap();
        assert_eq!(last.labels[0].1, "/a \"b\"\\c\nd");
        assert_eq!(last.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(samples[2].timestamp_ms, None);
    }

    #[test]
    fn openmetrics_counters_timestamps_and_exemplars() {
        let text = "# TYPE requests counter\n\
                    requests_total{code=\"200\"} 17 1700000000.5 # {trace_id=\"x\"} 1\n\
                    requests_created{code=\"200\"} 1699990000\n\
                    # EOF\n";
        let (samples, bad) = parse(text, true);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(samples.len(), 1, "the _created sample is not a value");
        assert_eq!(samples[0].kind, MetricKind::Counter);
        assert_eq!(samples[0].timestamp_ms, Some(1_700_000_000_500));
    }

    #[test]
    fn bad_lines_are_reported_by_number_and_the_rest_is_read() {
        let text = "ok 1\n\
                    9bad 1\n\
                    no_value\n\
                    x{a=\"1\" 2\n\
                    y{a=1} 2\n\
                    z one\n\
                    w 1 12.5\n\
                    fine{a=\"b\",} 3\n";
        let (samples, bad) = parse(text, false);
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["ok", "fine"]);
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(bad[5].problem.contains("whole milliseconds"), "{bad:?}");
    }
}
