//! `replay --plot`: a readable SVG of one series — the values, the expected band,
//! the anomalies, and in horizon mode the forecast with its interval.

use plotters::prelude::*;
use std::path::Path;

/// One point of the plotted series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotPoint {
    /// Event time, ms.
    pub ts_ms: i64,
    /// The observed value (NaN: none, for forecast-only points).
    pub value: f64,
    /// Expected value or forecast, and its bounds (NaN while unknown).
    pub expected: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Anomaly score (0 in horizon mode).
    pub score: f64,
    /// True for a forecast point (horizon mode).
    pub forecast: bool,
}

impl PlotPoint {
    /// A point the model learnt from, with no expectation drawn.
    pub fn learnt(ts_ms: i64, value: f64) -> Self {
        PlotPoint {
            ts_ms,
            value,
            expected: f64::NAN,
            lower: f64::NAN,
            upper: f64::NAN,
            score: 0.0,
            forecast: false,
        }
    }
}

/// Collects the points of one series during a replay, bounded.
#[derive(Debug, Default)]
pub struct PlotCollector {
    /// The series to plot; `None`: the first one seen.
    pub series: Option<String>,
    /// The points collected (at most [`PlotCollector::MAX_POINTS`]; later ones are
    /// left out and counted).
    pub points: Vec<PlotPoint>,
    /// Points left out beyond the cap.
    pub left_out: u64,
    /// The other series of the input (the first [`PlotCollector::MAX_NAMED`]), to name
    /// when the one asked for is not there.
    pub others: std::collections::BTreeSet<String>,
    /// How many other series there were beyond those.
    pub others_left_out: u64,
}

impl PlotCollector {
    /// Most points kept for a plot (a readable SVG has far fewer pixels).
    pub const MAX_POINTS: usize = 50_000;
    /// Most other series names kept.
    pub const MAX_NAMED: usize = 20;

    /// A collector for `series` (or the first series seen).
    pub fn new(series: Option<String>) -> Self {
        PlotCollector {
            series,
            ..PlotCollector::default()
        }
    }

    /// Whether rows of `series` belong to the plot (fixing the series on first use).
    pub fn wants(&mut self, series: &str) -> bool {
        match &self.series {
            Some(s) if s == series => true,
            Some(_) => {
                if !self.others.contains(series) {
                    if self.others.len() < Self::MAX_NAMED {
                        self.others.insert(series.to_string());
                    } else {
                        self.others_left_out += 1;
                    }
                }
                false
            }
            None => {
                self.series = Some(series.to_string());
                true
            }
        }
    }

    /// Why nothing was collected, naming the series the input has.
    pub fn nothing_to_plot(&self) -> String {
        let asked = self.series.as_deref().unwrap_or("");
        if self.others.is_empty() {
            return "the input has no rows to plot".to_string();
        }
        let names: Vec<String> = self.others.iter().map(|n| format!("{n:?}")).collect();
        let more = if self.others_left_out > 0 {
            format!(" and {} more", self.others_left_out)
        } else {
            String::new()
        };
        format!(
            "no series {asked:?} in the input; --plot-series takes one of: {}{more}",
            names.join(", ")
        )
    }

    /// Adds a point, up to the cap.
    pub fn push(&mut self, p: PlotPoint) {
        if self.points.len() < Self::MAX_POINTS {
            self.points.push(p);
        } else {
            self.left_out += 1;
        }
    }
}

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Draws `points` (time-ordered) to an SVG file at `path`.
pub fn draw(path: &Path, title: &str, points: &[PlotPoint]) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError("no points to plot".into()));
    }
    let t0 = points[0].ts_ms;
    let hours = |ts: i64| (ts - t0) as f64 / 3_600_000.0;
    let x_max = hours(points[points.len() - 1].ts_ms).max(1e-9);
    let finite = points
        .iter()
        .flat_map(|p| [p.value, p.lower, p.upper, p.expected])
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
        .map_err(err)?;
    let span_ms = points[points.len() - 1].ts_ms - t0;
    let date =
        |h: &f64| crate::time::utc_tick_label(t0 + (h * 3_600_000.0).round() as i64, span_ms);
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&date)
        .x_desc("time (UTC)")
        .y_desc("value")
        .draw()
        .map_err(err)?;

    let band: Vec<(f64, f64, f64)> = points
        .iter()
        .filter(|p| p.lower.is_finite() && p.upper.is_finite())
        .map(|p| (hours(p.ts_ms), p.lower, p.upper))
        .collect();
    // The band as an area between lower and upper (drawn as a closed polygon).
    if !band.is_empty() {
        let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, l, _)| (x, l)).collect();
        poly.extend(band.iter().rev().map(|&(x, _, u)| (x, u)));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, BLUE.mix(0.15).filled())))
            .map_err(err)?
            .label("expected range / forecast interval")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], BLUE.mix(0.15).filled())
            });
    }
    chart
        .draw_series(LineSeries::new(
            points
                .iter()
                .filter(|p| p.value.is_finite())
                .map(|p| (hours(p.ts_ms), p.value)),
            BLACK.stroke_width(1),
        ))
        .map_err(err)?
        .label("value")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    chart
        .draw_series(LineSeries::new(
            points
                .iter()
                .filter(|p| p.expected.is_finite())
                .map(|p| (hours(p.ts_ms), p.expected)),
            BLUE.stroke_width(1),
        ))
        .map_err(err)?
        .label("expected / forecast")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(
            points
                .iter()
                .filter(|p| p.score >= 0.5 && p.value.is_finite())
                .map(|p| Circle::new((hours(p.ts_ms), p.value), 4, RED.filled())),
        )
        .map_err(err)?
        .label("anomaly (score ≥ 0.5)")
        .legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
    if let Some(first) = points.iter().find(|p| p.forecast) {
        let x = hours(first.ts_ms);
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(x, lo - pad), (x, hi + pad)],
                RED.mix(0.5).stroke_width(1),
            )))
            .map_err(err)?
            .label("forecast origin")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.mix(0.5)));
    }
    // Upper left: the forecast, and the newest points, are on the right.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
