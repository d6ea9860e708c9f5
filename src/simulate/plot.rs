//! `simulate --plot`: one service over the run — the replicas its load needs at the
//! utilization goal beside the replicas each policy gave it, and each policy's
//! SLO-violation minutes adding up below.

use super::world::ServiceSpec;
use super::{Outcome, Span};
use crate::time::utc_tick_label;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Most points drawn per line (long runs are sampled).
const MAX_POINTS: i64 = 2_000;

/// A colour per policy, in the table's order.
const COLOURS: [RGBColor; 3] = [BLUE, RGBColor(230, 120, 0), RGBColor(120, 120, 120)];

/// One line per policy (in the table's colours), and the legend, upper left.
fn policy_lines<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    outcomes: &[Outcome],
    lines: Vec<Vec<(f64, f64)>>,
) -> Result<(), PlotError> {
    for ((o, line), colour) in outcomes.iter().zip(lines).zip(COLOURS) {
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(err)?
            .label(o.policy.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Draws `spec`'s run under every policy of `outcomes` to an SVG at `path`.
pub fn draw(
    path: &Path,
    spec: &ServiceSpec,
    span: Span,
    goal: f64,
    outcomes: &[Outcome],
) -> Result<(), PlotError> {
    if span.minutes <= 0 {
        return Err(PlotError("nothing was simulated".into()));
    }
    let step = (span.minutes / MAX_POINTS).max(1);
    let hours = |t: i64| (t - span.start_ms) as f64 / 3_600_000.0;
    let end = span.start_ms + (span.minutes - 1) * 60_000;
    let x_max = hours(end).max(1e-9);
    let needed: Vec<(f64, f64)> = (0..span.minutes)
        .step_by(step as usize)
        .map(|m| {
            let t = span.start_ms + m * 60_000;
            (hours(t), spec.load.clean(t) / (spec.capacity * goal))
        })
        .collect();
    // Each policy's replicas as a step line: a point before and after every change.
    let steps: Vec<Vec<(f64, f64)>> = outcomes
        .iter()
        .map(|o| {
            let mut n = f64::from(spec.initial);
            let mut line = vec![(0.0, n)];
            for (t, _, r) in o.timeline.iter().filter(|c| c.1 == spec.name) {
                line.push((hours(*t), n));
                n = f64::from(*r);
                line.push((hours(*t), n));
            }
            line.push((x_max, n));
            line
        })
        .collect();
    let cumulative: Vec<Vec<(f64, f64)>> = outcomes
        .iter()
        .map(|o| {
            let mut line = vec![(0.0, 0.0)];
            let mut count = 0.0;
            for (t, _) in o.violations.iter().filter(|v| v.1 == spec.name) {
                line.push((hours(*t), count));
                count += 1.0;
                line.push((hours(*t), count));
            }
            line.push((x_max, count));
            line
        })
        .collect();
    let y_top = needed
        .iter()
        .map(|p| p.1)
        .chain(steps.iter().flatten().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.08;
    let v_top = cumulative
        .iter()
        .flat_map(|l| l.last().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.08;

    let root = SVGBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(460);
    let span_ms = end - span.start_ms;
    let date = |h: &f64| utc_tick_label(span.start_ms + (h * 3_600_000.0).round() as i64, span_ms);

    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!(
                "{}: replicas needed at the {:.0} % goal and given",
                spec.name,
                goal * 100.0
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&date)
        .y_desc("replicas")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(needed, BLACK.stroke_width(1)))
        .map_err(err)?
        .label("needed at the goal (demand / capacity / goal)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    policy_lines(&mut chart, outcomes, steps)?;

    let mut chart = ChartBuilder::on(&lower)
        .caption("SLO-violation minutes so far", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..v_top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&date)
        .x_desc("time (UTC)")
        .y_desc("minutes")
        .draw()
        .map_err(err)?;
    policy_lines(&mut chart, outcomes, cumulative)?;
    root.present().map_err(err)?;
    Ok(())
}
