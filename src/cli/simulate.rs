//! `perfpilot simulate`: perfpilot against an HPA-style reactive policy and static peak
//! provisioning, in a closed loop without Kafka, on built-in services or on recorded
//! demand (`--trace`).

use crate::config::Config;
use crate::simulate::recorded::{self, TraceOptions};
use crate::simulate::{print_table, Comparison};
use anyhow::Context;
use clap::Args;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Days of load to simulate (one step per minute).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Seed of the load traces (bursts, noise); the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// perfpilot's configuration (default: the built-in one shown by --show-config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the built-in configuration and exit.
    #[arg(long)]
    show_config: bool,
    /// Cost of one replica for one hour, for the cost column.
    #[arg(long, default_value_t = 1.0)]
    cost_per_replica_hour: f64,
    /// Replay recorded demand instead of the built-in services: a CSV in replay's
    /// formats (`timestamp,series,value`, one series per service; or an M4 file, read as
    /// hourly series), each value the service's requests per second. Demand is linear
    /// between points; gaps and bad rows are reported (bad rows by line, and skipped).
    #[arg(long, value_name = "FILE.csv")]
    trace: Option<PathBuf>,
    /// With --trace: the values are utilization (a ratio, 1 = a replica's full capacity)
    /// at the replicas in this column of the header, e.g.
    /// `timestamp,series,value,replicas` with --replicas-column replicas. Demand is
    /// utilization × replicas (× --capacity-per-replica), and the recorded replicas run
    /// as a policy of their own beside the others.
    #[arg(long, value_name = "NAME", requires = "trace")]
    replicas_column: Option<String>,
    /// With --trace: requests per second one replica serves at 100 % utilization.
    /// Default: per service, so that its median demand needs 4 replicas at the
    /// utilization goal.
    #[arg(long, value_name = "RPS", requires = "trace")]
    capacity_per_replica: Option<f64>,
    /// With --trace: how long a new replica takes to serve.
    #[arg(long, default_value = "2m", value_parser = crate::time::parse_duration, requires = "trace")]
    startup: std::time::Duration,
    /// With --trace: latency of a service with no queueing, ms (its SLO is 4× it).
    #[arg(long, default_value_t = 100.0, requires = "trace")]
    base_latency_ms: f64,
    /// With --trace: only the points at or after this time (as replay reads timestamps).
    #[arg(long, value_parser = crate::time::parse_timestamp, requires = "trace")]
    from: Option<i64>,
    /// With --trace: only the points before this time.
    #[arg(long, value_parser = crate::time::parse_timestamp, requires = "trace")]
    to: Option<i64>,
    /// Draw an SVG of one service: the replicas its load needs at the utilization goal,
    /// the replicas each policy gave it, and each policy's SLO-violation minutes over time.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The service to plot (default: the first).
    #[arg(long, value_name = "NAME", requires = "plot")]
    plot_service: Option<String>,
    /// Also write the table per service to this CSV: one row per service and policy
    /// (`service,policy,slo_violation_minutes,avg_slack,cost,changes,flip_flops`), to see
    /// which services a policy wins or loses.
    #[arg(long, value_name = "FILE.csv")]
    per_service: Option<PathBuf>,
}

/// The utilization goal the policies share.
fn goal(config: &Option<Config>) -> anyhow::Result<f64> {
    Ok(match config {
        Some(c) => c.policies.defaults().utilization_goal,
        None => {
            Comparison::new(1, 1, None)?
                .config
                .policies
                .defaults()
                .utilization_goal
        }
    })
}

fn opts(args: &SimulateArgs, goal: f64) -> TraceOptions {
    TraceOptions {
        capacity_per_replica: args.capacity_per_replica,
        goal,
        base_latency_ms: args.base_latency_ms,
        startup_ms: args.startup.as_millis() as i64,
        from_ms: args.from,
        to_ms: args.to,
    }
}

/// A trace of utilization with a replicas column (named in its header): the series
/// with (time, utilization, replicas), and the rows skipped with their lines.
fn read_utilization(
    input: impl Read,
    column: &str,
) -> anyhow::Result<(recorded::UtilizationPoints, crate::replay::run::Summary)> {
    use crate::replay::input::{Layout, RowError};
    let mut reader = crate::replay::input::csv_reader(input);
    let mut summary = crate::replay::run::Summary::default();
    let mut series = recorded::UtilizationPoints::new();
    let mut layout: Option<(Layout, usize)> = None;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let Some((l, replicas_at)) = layout else {
            let header = Layout::from_header(&fields).filter(Layout::is_long);
            let at = fields.iter().position(|f| f.eq_ignore_ascii_case(column));
            match (header, at) {
                (Some(l), Some(at)) => layout = Some((l, at)),
                _ => anyhow::bail!(
                    "--replicas-column {column}: the first line must be a header of timestamp, series, value and {column} columns; it is {:?}",
                    fields.join(",")
                ),
            }
            continue;
        };
        summary.rows += 1;
        let parsed = l.row(line, &fields).and_then(|row| {
            let raw = fields.get(replicas_at).copied().unwrap_or("");
            match raw.parse::<u32>() {
                Ok(r) if r > 0 => Ok((row, r)),
                _ => Err(RowError {
                    line,
                    reason: format!("{column} {raw:?} is not a whole number of replicas above 0"),
                }),
            }
        });
        match parsed {
            Ok((row, r)) => series
                .entry(row.series)
                .or_default()
                .push((row.ts_ms, row.value, r)),
            Err(e) => {
                summary.bad_count += 1;
                if summary.bad.len() < 20 {
                    summary.bad.push(e);
                }
            }
        }
    }
    summary.series = series.len();
    Ok((series, summary))
}

/// The comparison on a recorded trace; prints what was read. The flag: bad rows.
fn traced(args: &SimulateArgs, config: Option<Config>) -> anyhow::Result<(Comparison, bool)> {
    let path = args.trace.as_deref().unwrap_or(std::path::Path::new("-"));
    let file =
        File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let input: Box<dyn Read> = Box::new(BufReader::new(file));
    let (t, summary) = match &args.replicas_column {
        Some(column) => {
            let (series, summary) = read_utilization(input, column)?;
            super::replay::print_bad_rows(&summary);
            (
                recorded::services_from_utilization(series, &opts(args, goal(&config)?))?,
                summary,
            )
        }
        None => {
            let input = super::replay::m4_as_long(input)?;
            let (series, summary) = crate::replay::run::read_series(input, &mut |_| {})?;
            super::replay::print_bad_rows(&summary);
            (
                recorded::services(series, &opts(args, goal(&config)?))?,
                summary,
            )
        }
    };
    for g in &t.gaps {
        eprintln!(
            "series {}: no point from {} to {}; demand interpolated across",
            g.series,
            crate::time::format_timestamp(g.between.0),
            crate::time::format_timestamp(g.between.1)
        );
    }
    println!(
        "{} services from {} ({} rows, {} bad), {} to {} ({} minutes), one step per minute",
        t.specs.len(),
        path.display(),
        summary.rows,
        summary.bad_count,
        crate::time::format_timestamp(t.span.start_ms),
        crate::time::format_timestamp(t.span.start_ms + (t.span.minutes - 1) * 60_000),
        t.span.minutes
    );
    for s in &t.specs {
        let sizing = if t.sized_by_mean.contains(&s.name) {
            " (idle most of the time: sized for its mean demand, not its median)"
        } else {
            ""
        };
        println!(
            "  {}: {} requests/s per replica{sizing}, starts with {} replicas, SLO p99 {:.0} ms",
            s.name,
            significant(s.capacity),
            s.initial,
            s.slo_ms
        );
    }
    Ok((
        Comparison::recorded(t.specs, t.span, config)?,
        summary.bad_count > 0,
    ))
}

/// A rate with three significant digits, however small or large.
fn significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

pub(super) fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.show_config {
        print!("{}", crate::simulate::SIM_CONFIG.trim_start());
        return Ok(ExitCode::SUCCESS);
    }
    if args.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    let config = args
        .config
        .as_deref()
        .map(|p| Config::load(Some(p)))
        .transpose()?;
    let started = std::time::Instant::now();
    let (comparison, bad_rows) = if args.trace.is_some() {
        traced(&args, config)?
    } else {
        println!(
            "{} days, 3 services (web: daily cycle and bursts; api: growth and short bursts; worker: weekly pattern and long bursts), one step per minute, seed {}",
            args.days, args.seed
        );
        (Comparison::new(args.days, args.seed, config)?, false)
    };
    // A bar in simulated minutes, on stderr, drawn only on a terminal.
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("simulating {bar:40} {percent}% {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let outcomes = comparison.run_with_progress(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if let Some(path) = &args.plot {
        let names: Vec<&str> = comparison.specs.iter().map(|s| s.name.as_str()).collect();
        let spec = match &args.plot_service {
            Some(n) => comparison
                .specs
                .iter()
                .find(|s| &s.name == n)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no service {n:?} to plot; the services are: {}",
                        names.join(", ")
                    )
                })?,
            None => comparison
                .specs
                .first()
                .ok_or_else(|| anyhow::anyhow!("no service to plot"))?,
        };
        let goal = comparison.config.policies.defaults().utilization_goal;
        crate::simulate::plot::draw(path, spec, comparison.span, goal, &outcomes)?;
        eprintln!("plot of {} written to {}", spec.name, path.display());
    }
    if let Some(path) = &args.per_service {
        let write = || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
            crate::simulate::per_service::write_csv(&outcomes, args.cost_per_replica_hour, &mut w)?;
            w.flush()
        };
        write().with_context(|| format!("writing the per-service table to {}", path.display()))?;
        eprintln!("per-service table written to {}", path.display());
    }
    println!();
    print_table(
        &outcomes,
        args.cost_per_replica_hour,
        &mut std::io::stdout(),
    )?;
    println!();
    for o in &outcomes {
        let per: Vec<String> = o
            .per_service
            .iter()
            .map(|(s, m)| format!("{s} {m}"))
            .collect();
        println!(
            "{}: SLO-violation minutes by service: {}",
            o.policy,
            if per.is_empty() {
                "none".to_string()
            } else {
                per.join(", ")
            }
        );
        for note in &o.notes {
            println!("{}: {note}", o.policy);
        }
    }
    println!(
        "\nSLO: p99 latency above 4× its unloaded value; slack: provisioned − used replicas, averaged over service-minutes; cost: replica-hours × {}; flip-flop: a change reversing the previous one within 15 min. Simulated in {:.1} s.",
        args.cost_per_replica_hour,
        started.elapsed().as_secs_f64()
    );
    // Like replay: the run is done, but some input was skipped.
    Ok(if bad_rows {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::significant;

    #[test]
    fn rates_show_three_significant_digits_at_any_size() {
        let cases = [
            (0.027_5, "0.0275"),
            (1.083, "1.08"),
            (14.44, "14.4"),
            (97_610.2, "97610"),
            (2_748_709.4, "2748709"),
            (0.0, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(significant(x), want, "{x}");
        }
    }
}
