//! Label rules: how a Prometheus sample (name, labels, value, time) becomes a
//! [`MetricEvent`] — which labels make the target and the pool, which metrics are kept,
//! and how counters become per-second rates. Pure: no I/O, shared by the remote-write
//! receiver and the scraper.
//!
//! ```toml
//! [ingest]
//! target = ["{namespace}/{deployment}", "{instance}"]  # first template whose labels all exist
//! pool = ["{namespace}"]                                # none: each target is its own pool
//! keep = ["node_*", "up", "http_requests_total"]       # globs on the metric name; none: all
//! drop = ["go_*"]                                       # globs, applied after keep
//! drop_labels = ["job"]                                 # labels not carried on the events
//! counters = "rate"                                     # rate | raw | drop
//! ```

use crate::event::MetricEvent;
use crate::event::{validate_metric, MAX_FUTURE_MS_DEFAULT};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Most counter series whose last sample is remembered (for rates) by default.
pub const MAX_COUNTER_SERIES_DEFAULT: usize = 200_000;

/// A counter series not seen for this long is forgotten when room is needed.
const COUNTER_IDLE_MS: i64 = 15 * 60 * 1000;

/// What to do with counters (monotonic totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CounterMode {
    /// Publish the per-second rate between consecutive samples as `<name>_per_second`
    /// (`_total` removed); a counter reset counts from zero, as Prometheus' `rate()`.
    #[default]
    Rate,
    /// Publish the running total as it is.
    Raw,
    /// Do not publish counters.
    Drop,
}

/// The `[ingest]` table of the configuration file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// Templates for the target, tried in order: `{label}` is replaced by the label's
    /// value; the first template whose labels all exist (and are not empty) wins.
    pub target: Vec<String>,
    /// Templates for the pool, like `target`; no match means the target is its own pool.
    pub pool: Vec<String>,
    /// Metric names to keep (globs with `*`); empty keeps every metric.
    pub keep: Vec<String>,
    /// Metric names to leave out (globs), applied after `keep`.
    pub drop: Vec<String>,
    /// Labels not carried on the events (labels used by the target or pool are never
    /// carried).
    pub drop_labels: Vec<String>,
    /// What becomes of counters.
    pub counters: CounterMode,
    /// Name endings that mark a counter when the type is not known (remote-write
    /// without metadata).
    pub counter_suffixes: Vec<String>,
    /// Most counter series remembered for rates; beyond it new counters are skipped
    /// (counted as `series_limit`).
    pub max_counter_series: usize,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            target: [
                "{namespace}/{deployment}",
                "{namespace}/{statefulset}",
                "{namespace}/{pod}",
                "{instance}",
                "{job}",
            ]
            .map(String::from)
            .to_vec(),
            pool: Vec::new(),
            keep: Vec::new(),
            drop: Vec::new(),
            drop_labels: Vec::new(),
            counters: CounterMode::Rate,
            counter_suffixes: ["_total", "_count", "_sum", "_bucket"]
                .map(String::from)
                .to_vec(),
            max_counter_series: MAX_COUNTER_SERIES_DEFAULT,
        }
    }
}

/// Why a mapping cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    /// A template with an unbalanced brace or an empty label name.
    #[error("template {template:?}: {problem}")]
    Template {
        /// The template as written.
        template: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No target template at all.
    #[error("ingest.target needs at least one template, e.g. \"{{instance}}\"")]
    NoTarget,
}

/// What Prometheus says a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic total (also a histogram's or summary's `_bucket`, `_sum`, `_count`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Not said (remote-write without metadata, untyped exposition): the name decides.
    Unknown,
}

/// One sample as Prometheus has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample<'a> {
    /// The metric name (`__name__`).
    pub name: &'a str,
    /// The other labels.
    pub labels: &'a [(String, String)],
    /// The value; Prometheus' staleness marker is a NaN.
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Counter, gauge or unknown.
    pub kind: MetricKind,
}

/// Why a sample was not published. Each is counted under its [`Skip::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The name is not in `keep`, or is in `drop`, or is a counter with `counters = "drop"`.
    NotKept,
    /// No target template matched the labels.
    NoTarget,
    /// A counter's first sample: a rate needs two.
    FirstCounterSample,
    /// A counter sample not after the last one of its series.
    OutOfOrder,
    /// Prometheus' staleness marker (the series ended).
    Stale,
    /// The event breaks a rule of the metrics topic (non-finite value, too many labels…).
    Invalid(&'static str),
    /// Too many counter series remembered.
    SeriesLimit,
}

impl Skip {
    /// Machine-readable reason, the `outcome` label of the ingest counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::NotKept => "not_kept",
            Skip::NoTarget => "no_target",
            Skip::FirstCounterSample => "first_counter_sample",
            Skip::OutOfOrder => "out_of_order",
            Skip::Stale => "stale",
            Skip::Invalid(reason) => reason,
            Skip::SeriesLimit => "series_limit",
        }
    }
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
}

/// A compiled `{label}` template.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Part>);

impl Template {
    fn parse(text: &str) -> Result<Self, MappingError> {
        let bad = |problem| MappingError::Template {
            template: text.to_string(),
            problem,
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(bad("a '}' without its '{'"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| bad("a '{' without its '}'"))?;
            let name = after[..close].trim();
            if name.is_empty() || name.contains('{') {
                return Err(bad("an empty or nested label name"));
            }
            parts.push(Part::Label(name.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Label(_))) {
            return Err(bad(
                "no {label} in it: every sample would get the same value",
            ));
        }
        Ok(Template(parts))
    }

    /// The filled template and the labels it used, when every label exists.
    fn fill<'a>(&'a self, labels: &[(String, String)]) -> Option<(String, Vec<&'a str>)> {
        let mut out = String::new();
        let mut used = Vec::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Label(name) => {
                    let value = labels
                        .iter()
                        .find(|(n, v)| n == name && !v.is_empty())
                        .map(|(_, v)| v)?;
                    out.push_str(value);
                    used.push(name.as_str());
                }
            }
        }
        Some((out, used))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The label rules, compiled, with the last sample of each counter series.
#[derive(Debug)]
pub struct Mapping {
    config: MappingConfig,
    target: Vec<Template>,
    pool: Vec<Template>,
    counters: HashMap<String, CounterPoint>,
    source: String,
}

impl Mapping {
    /// Compiles `config`; `source` is the events' `source` when a sample has no
    /// `instance` label.
    pub fn new(config: MappingConfig, source: impl Into<String>) -> Result<Self, MappingError> {
        if config.target.is_empty() {
            return Err(MappingError::NoTarget);
        }
        let compile = |list: &[String]| -> Result<Vec<Template>, MappingError> {
            list.iter().map(|t| Template::parse(t)).collect()
        };
        Ok(Mapping {
            target: compile(&config.target)?,
            pool: compile(&config.pool)?,
            config,
            counters: HashMap::new(),
            source: source.into(),
        })
    }

    /// The rules this mapping applies.
    pub fn config(&self) -> &MappingConfig {
        &self.config
    }

    /// Counter series remembered now.
    pub fn counter_series(&self) -> usize {
        self.counters.len()
    }

    fn kept(&self, name: &str) -> bool {
        (self.config.keep.is_empty() || self.config.keep.iter().any(|p| glob_matches(p, name)))
            && !self.config.drop.iter().any(|p| glob_matches(p, name))
    }

    fn is_counter(&self, s: &PromSample<'_>) -> bool {
        match s.kind {
            MetricKind::Counter => true,
            MetricKind::Gauge => false,
            MetricKind::Unknown => self
                .config
                .counter_suffixes
                .iter()
                .any(|suffix| s.name.ends_with(suffix.as_str())),
        }
    }

    /// The event for one sample, or why there is none. `now_ms` bounds timestamps in
    /// the future as the stages do.
    pub fn map(&mut self, s: &PromSample<'_>, now_ms: i64) -> Result<MetricEvent, Skip> {
        if !self.kept(s.name) {
            return Err(Skip::NotKept);
        }
        let counter = self.is_counter(s);
        if counter && self.config.counters == CounterMode::Drop {
            return Err(Skip::NotKept);
        }
        let (target, mut used) = self
            .target
            .iter()
            .find_map(|t| t.fill(s.labels))
            .ok_or(Skip::NoTarget)?;
        let pool = match self.pool.iter().find_map(|t| t.fill(s.labels)) {
            Some((pool, pool_used)) => {
                used.extend(pool_used);
                Some(pool)
            }
            None => None,
        };
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .filter(|(n, _)| {
                n != "__name__"
                    && !used.contains(&n.as_str())
                    && !self.config.drop_labels.contains(n)
            })
            .cloned()
            .collect();
        if s.value.to_bits() == STALE_NAN_BITS {
            if counter {
                self.counters.remove(&series_key(s.name, &target, &labels));
            }
            return Err(Skip::Stale);
        }
        let (metric, value, unit) = if counter && self.config.counters == CounterMode::Rate {
            let rate = self.rate(series_key(s.name, &target, &labels), s)?;
            let base = s.name.strip_suffix("_total").unwrap_or(s.name);
            (format!("{base}_per_second"), rate, "per_second".to_string())
        } else {
            (s.name.to_string(), s.value, unit_of(s.name).to_string())
        };
        let source = s
            .labels
            .iter()
            .find(|(n, _)| n == "instance")
            .map_or_else(|| self.source.clone(), |(_, v)| v.clone());
        let event = MetricEvent {
            source,
            target,
            pool,
            metric,
            labels,
            timestamp_ms: s.timestamp_ms,
            value,
            unit,
        };
        validate_metric(&event, now_ms, MAX_FUTURE_MS_DEFAULT)
            .map_err(|e| Skip::Invalid(e.reason()))?;
        Ok(event)
    }

    fn rate(&mut self, key: String, s: &PromSample<'_>) -> Result<f64, Skip> {
        if !s.value.is_finite() {
            return Err(Skip::Invalid("non_finite_value"));
        }
        if !self.counters.contains_key(&key)
            && self.counters.len() >= self.config.max_counter_series
        {
            let horizon = s.timestamp_ms - COUNTER_IDLE_MS;
            self.counters.retain(|_, p| p.timestamp_ms >= horizon);
            if self.counters.len() >= self.config.max_counter_series {
                return Err(Skip::SeriesLimit);
            }
        }
        match self.counters.get_mut(&key) {
            None => {
                self.counters.insert(
                    key,
                    CounterPoint {
                        timestamp_ms: s.timestamp_ms,
                        value: s.value,
                        rate: None,
                    },
                );
                Err(Skip::FirstCounterSample)
            }
            // The same sample again (a request retried after a failed publish): the
            // same rate again, so a retry loses nothing.
            Some(last) if s.timestamp_ms == last.timestamp_ms && s.value == last.value => {
                last.rate.ok_or(Skip::FirstCounterSample)
            }
            Some(last) if s.timestamp_ms <= last.timestamp_ms => Err(Skip::OutOfOrder),
            Some(last) => {
                let seconds = (s.timestamp_ms - last.timestamp_ms) as f64 / 1000.0;
                // A total that went down was reset: it counted from zero since.
                let increase = if s.value >= last.value {
                    s.value - last.value
                } else {
                    s.value
                };
                let rate = increase / seconds;
                *last = CounterPoint {
                    timestamp_ms: s.timestamp_ms,
                    value: s.value,
                    rate: Some(rate),
                };
                Ok(rate)
            }
        }
    }
}

/// The last sample of a counter series, and the rate it gave.
#[derive(Debug, Clone, Copy)]
struct CounterPoint {
    timestamp_ms: i64,
    value: f64,
    rate: Option<f64>,
}

fn series_key(name: &str, target: &str, labels: &BTreeMap<String, String>) -> String {
    let mut key = format!("{target}\u{1f}{name}");
    for (n, v) in labels {
        key.push('\u{1f}');
        key.push_str(n);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// The unit Prometheus' naming conventions imply.
fn unit_of(name: &str) -> &'static str {
    [
        ("_seconds", "s"),
        ("_bytes", "bytes"),
        ("_ratio", "ratio"),
        ("_celsius", "celsius"),
        ("_percent", "percent"),
    ]
    .iter()
    .find(|(suffix, _)| name.ends_with(suffix))
    .map_or("", |(_, unit)| unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn sample<'a>(
        name: &'a str,
        labels: &'a [(String, String)],
        value: f64,
        t: i64,
    ) -> PromSample<'a> {
        PromSample {
            name,
            labels,
            value,
            timestamp_ms: t,
            kind: MetricKind::Unknown,
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn globs_match_like_shell_stars() {
        for (pattern, name, expected) in [
            ("node_*", "node_load1", true),
            ("node_*", "go_goroutines", false),
            ("*_total", "http_requests_total", true),
            ("*_total", "http_requests_total_x", false),
            ("up", "up", true),
            ("up", "upx", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("*", "", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn templates_are_checked_when_loaded() {
        for (bad, problem) in [
            ("{namespace", "a '{' without its '}'"),
            ("namespace}", "a '}' without its '{'"),
            ("{}", "an empty or nested label name"),
            (
                "fixed",
                "no {label} in it: every sample would get the same value",
            ),
        ] {
            let config = MappingConfig {
                target: vec![bad.to_string()],
                ..MappingConfig::default()
            };
            match Mapping::new(config, "x") {
                Err(MappingError::Template { problem: p, .. }) => assert_eq!(p, problem),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let none = MappingConfig {
            target: vec![],
            ..MappingConfig::default()
        };
        assert_eq!(Mapping::new(none, "x").err(), Some(MappingError::NoTarget));
    }

    #[test]
    fn the_first_template_whose_labels_exist_makes_the_target_and_its_labels_are_not_carried() {
        let mut m = Mapping::new(
            MappingConfig {
                pool: vec!["{namespace}".into()],
                drop_labels: vec!["job".into()],
                ..MappingConfig::default()
            },
            "ingest",
        )
        .unwrap();
        let pod = labels(&[
            ("namespace", "shop"),
            ("deployment", "checkout"),
            ("pod", "checkout-7d9"),
            ("job", "kubernetes-pods"),
            ("instance", "10.0.0.7:8080"),
        ]);
        let e = m
            .map(
                &sample("container_memory_working_set_bytes", &pod, 5e8, NOW),
                NOW,
            )
            .unwrap();
        assert_eq!(e.target, "shop/checkout");
        assert_eq!(e.pool.as_deref(), Some("shop"));
        assert_eq!(e.source, "10.0.0.7:8080");
        assert_eq!(e.unit, "bytes");
        assert_eq!(
            e.labels.into_iter().collect::<Vec<_>>(),
            labels(&[("instance", "10.0.0.7:8080"), ("pod", "checkout-7d9")])
        );
        // No namespace: falls through to {instance}; no pool template matches.
        let host = labels(&[("instance", "db-1:9100"), ("job", "node")]);
        let e = m.map(&sample("node_load1", &host, 0.5, NOW), NOW).unwrap();
        assert_eq!((e.target.as_str(), e.pool), ("db-1:9100", None));
        assert!(e.labels.is_empty());
        // Nothing matches at all.
        let bare = labels(&[("zone", "a")]);
        assert_eq!(
            m.map(&sample("x", &bare, 1.0, NOW), NOW),
            Err(Skip::NoTarget)
        );
    }

    #[test]
    fn keep_and_drop_select_metrics() {
        let mut m = Mapping::new(
            MappingConfig {
                keep: vec!["node_*".into(), "up".into()],
                drop: vec!["node_scrape_*".into()],
                ..MappingConfig::default()
            },
            "x",
        )
        .unwrap();
        let l = labels(&[("instance", "h:9100")]);
        for (name, kept) in [
            ("node_load1", true),
            ("up", true),
            ("go_goroutines", false),
            ("node_scrape_collector_success", false),
        ] {
            let got = m.map(&sample(name, &l, 1.0, NOW), NOW);
            assert_eq!(got.is_ok(), kept, "{name}: {got:?}");
            if !kept {
                assert_eq!(got, Err(Skip::NotKept));
            }
        }
    }

    #[test]
    fn counters_become_per_second_rates_and_a_reset_counts_from_zero() {
        let mut m = Mapping::new(MappingConfig::default(), "x").unwrap();
        let l = labels(&[("instance", "web:80"), ("code", "200")]);
        let at = |v: f64, s: i64| sample("http_requests_total", &l, v, NOW + s * 1000);
        assert_eq!(m.map(&at(100.0, 0), NOW), Err(Skip::FirstCounterSample));
        let e = m.map(&at(130.0, 15), NOW).unwrap();
        assert_eq!(e.metric, "http_requests_per_second");
        assert_eq!((e.value, e.unit.as_str()), (2.0, "per_second"));
        assert_eq!(e.labels.get("code").map(String::as_str), Some("200"));
        // The same sample again (a retried request) gives the same rate again.
        assert_eq!(m.map(&at(130.0, 15), NOW).unwrap().value, 2.0);
        assert_eq!(m.map(&at(120.0, 14), NOW), Err(Skip::OutOfOrder));
        // Reset: 130 → 30 in 10 s is 30 new requests, 3/s.
        assert_eq!(m.map(&at(30.0, 25), NOW).unwrap().value, 3.0);
        // A staleness marker forgets the series: the next sample starts again.
        let stale = f64::from_bits(STALE_NAN_BITS);
        assert_eq!(m.map(&at(stale, 30), NOW), Err(Skip::Stale));
        assert_eq!(m.map(&at(50.0, 40), NOW), Err(Skip::FirstCounterSample));
        // A typed gauge with a counter-like name stays a gauge.
        let g = PromSample {
            kind: MetricKind::Gauge,
            ..at(7.0, 50)
        };
        assert_eq!(m.map(&g, NOW).unwrap().value, 7.0);
    }

    #[test]
    fn counter_modes_raw_and_drop() {
        let l = labels(&[("instance", "web:80")]);
        let s = sample("requests_total", &l, 5.0, NOW);
        let mut raw = Mapping::new(
            MappingConfig {
                counters: CounterMode::Raw,
                ..MappingConfig::default()
            },
            "x",
        )
        .unwrap();
        let e = raw.map(&s, NOW).unwrap();
        assert_eq!((e.metric.as_str(), e.value), ("requests_total", 5.0));
        let mut drop = Mapping::new(
            MappingConfig {
                counters: CounterMode::Drop,
                ..MappingConfig::default()
            },
            "x",
        )
        .unwrap();
        assert_eq!(drop.map(&s, NOW), Err(Skip::NotKept));
    }

    #[test]
    fn counter_memory_is_bounded_and_idle_series_make_room() {
        let mut m = Mapping::new(
            MappingConfig {
                max_counter_series: 2,
                ..MappingConfig::default()
            },
            "x",
        )
        .unwrap();
        let a = labels(&[("instance", "a")]);
        let b = labels(&[("instance", "b")]);
        let c = labels(&[("instance", "c")]);
        m.map(&sample("r_total", &a, 1.0, NOW), NOW).unwrap_err();
        m.map(&sample("r_total", &b, 1.0, NOW), NOW).unwrap_err();
        assert_eq!(
            m.map(&sample("r_total", &c, 1.0, NOW + 1000), NOW),
            Err(Skip::SeriesLimit)
        );
        // 20 minutes later a and b are idle: c gets a place.
        let later = NOW + 20 * 60 * 1000;
        assert_eq!(
            m.map(&sample("r_total", &c, 1.0, later), later),
            Err(Skip::FirstCounterSample)
        );
        assert_eq!(m.counter_series(), 1);
    }

    #[test]
    fn events_that_break_the_topic_rules_are_skipped_with_the_stage_reason() {
        let mut m = Mapping::new(MappingConfig::default(), "x").unwrap();
        let l = labels(&[("instance", "h")]);
        assert_eq!(
            m.map(&sample("temp", &l, f64::INFINITY, NOW), NOW),
            Err(Skip::Invalid("non_finite_value"))
        );
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .chain(l.clone())
            .collect();
        assert_eq!(
            m.map(&sample("temp", &many, 1.0, NOW), NOW),
            Err(Skip::Invalid("too_many_labels"))
        );
    }
}
