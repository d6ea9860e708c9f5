//! The two replay runs: a score per input row, or a forecast of each series' last H points.

use super::input::{Layout, Row, RowError};
use super::plot::{PlotCollector, PlotPoint};
use crate::analytics::forecast::{SeriesForecaster, MODELS};
use crate::analytics::stats::z_for_level;
use crate::eval::m4::{naive2, seasonal_naive, Accuracy};
use crate::event::MetricEvent;
use crate::stage::detector::{Detector, DetectorConfig, Scored};
use crate::stage::forecaster::ForecasterConfig;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};

/// What a replay did, for the closing paragraph.
#[derive(Debug, Default)]
pub struct Summary {
    /// Data rows read (good and bad).
    pub rows: u64,
    /// Rows skipped, with their line and reason (the first 20), and how many in all.
    pub bad: Vec<RowError>,
    /// Bad rows in all.
    pub bad_count: u64,
    /// Series seen.
    pub series: usize,
    /// Anomalies (new episodes) per series.
    pub anomalies: BTreeMap<String, u64>,
    /// Rows dropped by the detector as duplicates or too late.
    pub dropped: u64,
    /// Horizon mode: forecast points written, their mean absolute error, the share of
    /// actuals inside the interval, and the models chosen per series.
    pub forecast_points: u64,
    /// Mean absolute error of the forecasts.
    pub forecast_mae: f64,
    /// Share of actual values inside the intervals.
    pub coverage: f64,
    /// Series per chosen model.
    pub models: BTreeMap<&'static str, u64>,
    /// Whether the input had many series.
    pub long: bool,
    /// Horizon mode: M4 accuracy of the forecaster, seasonal naive and Naive2 over the
    /// same series, and the seasonal period they were scaled by.
    pub accuracy: Option<HorizonAccuracy>,
}

/// M4 metrics of a horizon replay (see [`crate::eval::m4`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HorizonAccuracy {
    /// The seasonal period (points) of MASE, seasonal naive and Naive2.
    pub period: usize,
    /// The forecaster.
    pub model: Accuracy,
    /// The last period repeated.
    pub seasonal_naive: Accuracy,
    /// M4's Naive2.
    pub naive2: Accuracy,
}

/// Errors that stop a replay (bad rows do not).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading or writing CSV failed.
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config_error::ConfigError),
    /// The input holds no data row.
    #[error("the input holds no usable row")]
    Empty,
}

/// Reads rows, calling `each` with every good one and `progress` with the byte offset.
fn read_rows(
    input: impl Read,
    summary: &mut Summary,
    progress: &mut dyn FnMut(u64),
    mut each: impl FnMut(Row, Layout, &Columns) -> Result<(), ReplayError>,
) -> Result<Layout, ReplayError> {
    let mut columns = Columns::default();
    let mut reader = super::input::csv_reader(input);
    let mut layout = None;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        progress(record.position().map_or(0, |p| p.byte()));
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let l = match layout {
            Some(l) => l,
            None => {
                if let Some(l) = Layout::from_header(&fields) {
                    columns = Columns::of(l, &fields);
                    layout = Some(l);
                    summary.long = l.is_long();
                    continue;
                }
                let l = Layout::from_width(fields.len());
                layout = Some(l);
                summary.long = l.is_long();
                l
            }
        };
        summary.rows += 1;
        match l.row(line, &fields) {
            Ok(row) => each(row, l, &columns)?,
            Err(e) => {
                summary.bad_count += 1;
                if summary.bad.len() < 20 {
                    summary.bad.push(e);
                }
            }
        }
    }
    layout.ok_or(ReplayError::Empty)
}

/// Series by name, each its (time ms, value) points in input order.
pub type SeriesPoints = BTreeMap<String, Vec<(i64, f64)>>;

/// Reads every good row into series, for drivers that need whole series
/// (`simulate --trace`); bad rows are in the summary.
pub fn read_series(
    input: impl Read,
    progress: &mut dyn FnMut(u64),
) -> Result<(SeriesPoints, Summary), ReplayError> {
    let mut summary = Summary::default();
    let mut series = SeriesPoints::new();
    read_rows(input, &mut summary, progress, |row, _, _| {
        series
            .entry(row.series)
            .or_default()
            .push((row.ts_ms, row.value));
        Ok(())
    })?;
    summary.series = series.len();
    Ok((series, summary))
}

/// The names of the input's columns, as its header gives them (`timestamp`, `series`,
/// `value` without one), so the output speaks the input's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The timestamp column.
    pub ts: String,
    /// The series column (long format).
    pub series: String,
    /// The value column.
    pub value: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            ts: "timestamp".into(),
            series: "series".into(),
            value: "value".into(),
        }
    }
}

impl Columns {
    fn of(layout: Layout, header: &[&str]) -> Columns {
        let name = |i: usize, default: &str| {
            header
                .get(i)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        let d = Columns::default();
        match layout {
            Layout::Single { ts, value } => Columns {
                ts: name(ts, &d.ts),
                value: name(value, &d.value),
                ..d
            },
            Layout::Long { ts, series, value } => Columns {
                ts: name(ts, &d.ts),
                series: name(series, &d.series),
                value: name(value, &d.value),
            },
        }
    }
}

/// A computed number for the CSV output: six significant digits (the input's own values
/// are written as read), `-0` as `0`.
pub fn short(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".into();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-4..15).contains(&magnitude) {
        return format!("{x:.5e}");
    }
    let decimals = (5 - magnitude).clamp(0, 17) as usize;
    let text = format!("{x:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

fn event(row: &Row) -> MetricEvent {
    let target = if row.series.is_empty() {
        "series"
    } else {
        row.series.as_str()
    };
    MetricEvent::sample("replay", target, "value", row.ts_ms, row.value)
}

/// Scores every row, in input order:
/// `timestamp,[series,]value,anomaly_score,anomaly,expected,lower,upper`. `anomaly` is 1
/// exactly where the detector stage would emit an Anomaly record (an episode opens or
/// escalates). The score is 0 (and the bounds empty) while a series warms up.
pub fn replay_scores(
    input: impl Read,
    output: impl Write,
    cfg: &DetectorConfig,
    progress: &mut dyn FnMut(u64),
    mut plot: Option<&mut PlotCollector>,
) -> Result<Summary, ReplayError> {
    let mut out = csv::Writer::from_writer(output);
    let mut header_written = false;
    let summary = detect_rows(input, cfg, progress, |row, layout, columns, scored| {
        if !header_written {
            let mut header = vec![
                columns.ts.as_str(),
                columns.series.as_str(),
                columns.value.as_str(),
                "anomaly_score",
            ];
            header.extend(["anomaly", "expected", "lower", "upper"]);
            if !layout.is_long() {
                header.remove(1);
            }
            out.write_record(&header)?;
            header_written = true;
        }
        if let Some(c) = plot.as_deref_mut() {
            if c.wants(&row.series) {
                let (expected, lower, upper, score) =
                    scored
                        .point
                        .map_or((f64::NAN, f64::NAN, f64::NAN, 0.0), |p| {
                            (
                                p.expected,
                                p.expected - p.band,
                                p.expected + p.band,
                                p.score,
                            )
                        });
                c.push(PlotPoint {
                    ts_ms: row.ts_ms,
                    value: row.value,
                    expected,
                    lower,
                    upper,
                    score,
                    forecast: false,
                });
            }
        }
        let (score, expected, lower, upper) = match scored.point {
            Some(p) => (
                format!("{:.4}", p.score),
                short(p.expected),
                short(p.expected - p.band),
                short(p.expected + p.band),
            ),
            None => ("0".into(), String::new(), String::new(), String::new()),
        };
        let value = format!("{}", row.value);
        let flag = if scored.anomaly.is_some() { "1" } else { "0" };
        let mut record = vec![row.ts_text.as_str(), row.series.as_str(), &value, &score];
        record.extend([flag, &expected, &lower, &upper]);
        if !layout.is_long() {
            record.remove(1);
        }
        out.write_record(&record)?;
        Ok(())
    })?;
    out.flush()?;
    Ok(summary)
}

/// Runs the detector stage's core over every good row, in input order, calling `each`
/// with the row and what the stage made of it. One detector serves every series of the
/// input, as one stage instance does.
pub fn detect_rows(
    input: impl Read,
    cfg: &DetectorConfig,
    progress: &mut dyn FnMut(u64),
    mut each: impl FnMut(&Row, Layout, &Columns, &Scored) -> Result<(), ReplayError>,
) -> Result<Summary, ReplayError> {
    let mut detector = Detector::new(cfg.clone())?;
    let mut summary = Summary::default();
    let mut series = std::collections::HashSet::new();
    let mut anomalies: BTreeMap<String, u64> = BTreeMap::new();
    read_rows(input, &mut summary, progress, |row, layout, columns| {
        let scored = detector.score(&event(&row), 0);
        if scored.anomaly.is_some() {
            *anomalies.entry(row.series.clone()).or_default() += 1;
        }
        if !series.contains(&row.series) {
            series.insert(row.series.clone());
        }
        each(&row, layout, columns, &scored)
    })?;
    summary.anomalies = anomalies;
    let c = detector.detector_counters();
    summary.dropped = c.duplicates + c.late;
    summary.series = series.len();
    Ok(summary)
}

/// What a horizon replay backtests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backtest {
    /// Points forecast from each origin.
    pub horizon: usize,
    /// Origins, `horizon` points apart, the last one `horizon` points before the end.
    pub origins: usize,
    /// Seasonal period (points) of MASE and the baselines; `None`: points per day.
    pub season: Option<usize>,
}

impl Backtest {
    /// The last `horizon` points forecast from the rest.
    pub fn last(horizon: usize) -> Self {
        Backtest {
            horizon,
            origins: 1,
            season: None,
        }
    }
}

/// For each series, learns from all but its last `horizon × origins` points; then, from
/// each origin in turn, forecasts the next `horizon` points, scores them and learns
/// them: `series,timestamp,forecast,lower,upper,actual`. The held points wait in a
/// per-series buffer, so a forecast never sees the points it is scored on.
pub fn replay_horizon(
    input: impl Read,
    output: impl Write,
    cfg: &ForecasterConfig,
    test: Backtest,
    progress: &mut dyn FnMut(u64),
    mut plot: Option<&mut PlotCollector>,
) -> Result<Summary, ReplayError> {
    let params = cfg.params();
    let z = z_for_level(cfg.interval_level);
    let mut models: HashMap<String, (SeriesForecaster, VecDeque<Row>)> = HashMap::new();
    // Each series' learnt values (for MASE's scale and the baselines) and its steps.
    let mut history: HashMap<String, Vec<f64>> = HashMap::new();
    let mut steps: Vec<i64> = Vec::new();
    let mut summary = Summary::default();
    let mut order: Vec<String> = Vec::new();
    let horizon = test.horizon.max(1);
    let held_back = horizon * test.origins.max(1);
    let mut dropped = 0;
    // Learns one row (in order; a row not newer than the last is dropped).
    let learn = |model: &mut SeriesForecaster,
                 history: &mut HashMap<String, Vec<f64>>,
                 steps: &mut Vec<i64>,
                 row: &Row| {
        if model.count() == 0 || row.ts_ms > model.last_ts() {
            if model.count() > 0 && steps.len() < 10_000 {
                steps.push(row.ts_ms - model.last_ts());
            }
            model.observe(row.ts_ms, row.value, &params);
            history
                .entry(row.series.clone())
                .or_default()
                .push(row.value);
            false
        } else {
            true
        }
    };
    read_rows(input, &mut summary, progress, |row, _, _| {
        let entry = models.entry(row.series.clone()).or_insert_with(|| {
            order.push(row.series.clone());
            (
                SeriesForecaster::default(),
                VecDeque::with_capacity(held_back + 1),
            )
        });
        entry.1.push_back(row);
        if entry.1.len() > held_back {
            if let Some(old) = entry.1.pop_front() {
                if let Some(c) = plot.as_deref_mut() {
                    if c.wants(&old.series) {
                        c.push(PlotPoint::learnt(old.ts_ms, old.value));
                    }
                }
                dropped += u64::from(learn(&mut entry.0, &mut history, &mut steps, &old));
            }
        }
        Ok(())
    })?;
    let mut out = csv::Writer::from_writer(output);
    out.write_record([
        "series",
        "timestamp",
        "forecast",
        "lower",
        "upper",
        "actual",
    ])?;
    let (mut abs, mut inside) = (0.0, 0u64);
    let period = test
        .season
        .unwrap_or_else(|| points_per_day(&mut steps))
        .max(1);
    let mut acc = HorizonAccuracy {
        period,
        ..HorizonAccuracy::default()
    };
    for name in &order {
        let Some((model, held)) = models.get_mut(name) else {
            continue;
        };
        let held: Vec<Row> = held.drain(..).collect();
        for chunk in held.chunks(horizon) {
            if model.count() < 2 {
                for row in chunk {
                    dropped += u64::from(learn(model, &mut history, &mut steps, row));
                }
                continue;
            }
            let (chosen, predicted) = model.forecast(chunk.len() as u32, &params);
            if let Some(past) = history.get(name) {
                let actual: Vec<f64> = chunk.iter().map(|r| r.value).collect();
                let values: Vec<f64> = predicted.iter().map(|p| p.value).collect();
                acc.model.add(past, &actual, &values, period);
                let sn = seasonal_naive(past, period, actual.len());
                acc.seasonal_naive.add(past, &actual, &sn, period);
                let n2 = naive2(past, period, actual.len());
                acc.naive2.add(past, &actual, &n2, period);
            }
            *summary.models.entry(MODELS[chosen]).or_default() += 1;
            for (p, actual) in predicted.iter().zip(chunk) {
                let (lower, upper) = p.interval(z);
                out.write_record([
                    name.as_str(),
                    &actual.ts_text,
                    &short(p.value),
                    &short(lower),
                    &short(upper),
                    &format!("{}", actual.value),
                ])?;
                if let Some(c) = plot.as_deref_mut() {
                    if c.wants(name) {
                        c.push(PlotPoint {
                            ts_ms: actual.ts_ms,
                            value: actual.value,
                            expected: p.value,
                            lower,
                            upper,
                            score: 0.0,
                            forecast: true,
                        });
                    }
                }
                abs += (p.value - actual.value).abs();
                inside += u64::from((lower..=upper).contains(&actual.value));
                summary.forecast_points += 1;
            }
            // The next origin has seen these.
            for row in chunk {
                dropped += u64::from(learn(model, &mut history, &mut steps, row));
            }
        }
    }
    out.flush()?;
    summary.dropped = dropped;
    let n = summary.forecast_points.max(1) as f64;
    summary.forecast_mae = abs / n;
    summary.coverage = inside as f64 / n;
    summary.series = order.len();
    summary.accuracy = Some(acc);
    Ok(summary)
}

/// The number of points in a day at the median step, when that is a whole number of at
/// least 2 (hourly data: 24); otherwise 1 (no seasonal period).
fn points_per_day(steps: &mut [i64]) -> usize {
    if steps.is_empty() {
        return 1;
    }
    steps.sort_unstable();
    let step = steps[steps.len() / 2];
    if step <= 0 || 86_400_000 % step != 0 {
        return 1;
    }
    let n = (86_400_000 / step) as usize;
    if n >= 2 {
        n
    } else {
        1
    }
}

impl HorizonAccuracy {
    /// The table printed after a horizon replay.
    pub fn table(&self) -> String {
        let mut s = format!(
            "M4 metrics over {} forecasts (seasonal period {} points; OWA relative to Naive2)\n",
            self.model.series, self.period
        );
        s.push_str(&format!(
            "{:<16} {:>8} {:>8} {:>8}\n",
            "method", "sMAPE", "MASE", "OWA"
        ));
        for (name, a) in [
            ("perfpilot", &self.model),
            ("seasonal naive", &self.seasonal_naive),
            ("Naive2", &self.naive2),
        ] {
            s.push_str(&format!(
                "{:<16} {:>8.3} {:>8.3} {:>8.3}\n",
                name,
                a.smape(),
                a.mase(),
                a.owa(&self.naive2)
            ));
        }
        s
    }
}

impl Summary {
    /// The closing paragraph.
    pub fn paragraph(&self) -> String {
        let mut s = format!(
            "Read {} of {} series{}; {} skipped",
            plural(self.rows, "row", "rows"),
            self.series,
            if self.long { " (long format)" } else { "" },
            plural(self.bad_count, "bad row", "bad rows")
        );
        if self.dropped > 0 {
            s.push_str(&format!(
                ", {} out-of-order or duplicate rows not used",
                self.dropped
            ));
        }
        if self.forecast_points > 0 {
            let models: Vec<String> = self
                .models
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            s.push_str(&format!(
                ". Forecast {} points: mean absolute error {:.4}, {:.1}% of actuals inside the intervals; models chosen: {}.",
                self.forecast_points,
                self.forecast_mae,
                self.coverage * 100.0,
                models.join(", ")
            ));
        } else {
            let total: u64 = self.anomalies.values().sum();
            let mut top: Vec<(&String, &u64)> = self.anomalies.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = top
                .iter()
                .take(3)
                .map(|(k, v)| format!("{k} ({v})"))
                .collect();
            s.push_str(&format!(". {}", plural(total, "anomaly", "anomalies")));
            // One series (the two-column format) has no name to tell it apart by.
            if self.long && !top.is_empty() {
                s.push_str(&format!(", most in {}", top.join(", ")));
            }
            s.push('.');
        }
        s
    }
}

/// `n` and the noun in the number it takes: "1 anomaly", "2 anomalies".
fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_numbers_print_short() {
        let cases = [
            (6.060887393032258, "6.06089"),
            (385_991_000.0, "385991000"),
            (0.000_123_456_789, "0.000123457"),
            (-0.0, "0"),
            (-2.5, "-2.5"),
            (100.0, "100"),
            (1.234_567_8e-9, "1.23457e-9"),
            (f64::NAN, "NaN"),
        ];
        for (x, want) in cases {
            assert_eq!(short(x), want, "{x}");
        }
    }

    fn csv_single(n: usize, spike_at: usize) -> String {
        let mut s = String::from("timestamp,value\n");
        for i in 0..n {
            let v = if i == spike_at {
                500.0
            } else {
                100.0 + ((i * 7919 % 101) as f64 / 50.0 - 1.0)
            };
            s.push_str(&format!("{},{v}\n", 1_700_000_000 + i * 60));
        }
        s
    }

    #[test]
    fn one_output_row_per_input_row_in_order_with_bad_rows_reported() {
        let mut input = csv_single(200, 150);
        input.push_str("not-a-time,3\n1700099999,abc\n");
        let mut out = Vec::new();
        let s = replay_scores(
            input.as_bytes(),
            &mut out,
            &DetectorConfig::default(),
            &mut |_| {},
            None,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "timestamp,value,anomaly_score,anomaly,expected,lower,upper"
        );
        assert_eq!(lines.len(), 201);
        assert_eq!((s.rows, s.bad_count), (202, 2));
        assert_eq!(s.bad[0].line, 202);
        assert!(lines[1].starts_with("1700000000,"));
        let score = |l: &str| l.split(',').nth(2).unwrap().parse::<f64>().unwrap();
        assert_eq!(score(lines[1]), 0.0, "warm-up scores 0");
        assert!(score(lines[151]) > 0.9, "{}", lines[151]);
        assert!(lines[100..150].iter().all(|l| score(l) < 0.5));
        assert_eq!(s.anomalies.values().sum::<u64>(), 1);
    }

    #[test]
    fn each_origin_learns_the_points_before_it_and_none_after() {
        // Flat at 10, then 100 from the first held-back point on.
        let mut input = String::from("time,series,value\n");
        for i in 0..400 {
            let v = if i < 370 { 10.0 } else { 100.0 };
            input.push_str(&format!("{},a,{v}\n", 1_700_000_000 + i * 60));
        }
        let mut out = Vec::new();
        let test = Backtest {
            horizon: 10,
            origins: 3,
            season: None,
        };
        let s = replay_horizon(
            input.as_bytes(),
            &mut out,
            &ForecasterConfig::default(),
            test,
            &mut |_| {},
            None,
        )
        .unwrap();
        assert_eq!(s.forecast_points, 30);
        let text = String::from_utf8(out).unwrap();
        let forecasts: Vec<f64> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect();
        // The first origin has seen only the flat part; the third has seen the jump.
        assert!(
            forecasts[..10].iter().all(|f| (f - 10.0).abs() < 1.0),
            "{forecasts:?}"
        );
        assert!(forecasts[20..].iter().all(|f| *f > 60.0), "{forecasts:?}");
        assert_eq!(s.accuracy.map(|a| a.model.series), Some(3));
    }

    #[test]
    fn long_format_and_horizon_never_sees_the_held_back_points() {
        let mut input = String::from("time,series,value\n");
        for i in 0..300 {
            input.push_str(&format!(
                "{},a,{}\n",
                1_700_000_000 + i * 60,
                10.0 + i as f64 * 0.1
            ));
            input.push_str(&format!("{},b,{}\n", 1_700_000_000 + i * 60, 50.0));
        }
        // The last 10 points of a jump to 1000: a forecast that saw them would say so.
        for i in 300..310 {
            input.push_str(&format!("{},a,1000\n", 1_700_000_000 + i * 60));
        }
        let mut out = Vec::new();
        let s = replay_horizon(
            input.as_bytes(),
            &mut out,
            &ForecasterConfig::default(),
            Backtest::last(10),
            &mut |_| {},
            None,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(rows.len(), 20);
        let a: Vec<f64> = rows
            .iter()
            .filter(|r| r[0] == "a")
            .map(|r| r[2].parse().unwrap())
            .collect();
        assert!(
            a.iter().all(|f| (*f - 40.0).abs() < 5.0),
            "forecasts of a: {a:?}"
        );
        assert_eq!(
            rows.iter()
                .filter(|r| r[0] == "a")
                .map(|r| r[5])
                .collect::<Vec<_>>(),
            vec!["1000"; 10]
        );
        assert_eq!(s.series, 2);
        assert!(s.paragraph().contains("Forecast 20 points"));
    }
}
