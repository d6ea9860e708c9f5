//! `perfpilot replay`: the detector and forecaster cores over a CSV file, no Kafka.

use crate::config::Config;
use crate::replay::plot::{draw, PlotCollector};
use crate::replay::{replay_corpus, replay_horizon, replay_scores};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV input (`-` for stdin): `timestamp,value`, or `timestamp,series,value` for many
    /// series (told apart by the header, or by the column count). Timestamps: epoch
    /// seconds or milliseconds, ISO-8601 (`2024-05-01T12:00:00Z`, `+02:00`), or
    /// `YYYY-MM-DD HH:MM:SS` (UTC). With `--labels`, a directory of such files.
    input: PathBuf,
    /// A NAB-format windows file (`{"relative/path.csv": [["start", "end"], ...]}`): replay
    /// every file it names under the input directory, each on a fresh detector, and print
    /// the Numenta Anomaly Benchmark's standard, low-FP and low-FN scores of the emitted
    /// anomalies and of the `anomaly_score` column.
    #[arg(long, value_name = "windows.json", conflicts_with_all = ["horizon", "plot", "output"])]
    labels: Option<PathBuf>,
    /// Where to write the CSV result (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Forecast mode: for each series, learn from all but its last H points and write
    /// `series,timestamp,forecast,lower,upper,actual` for those H points.
    #[arg(long, value_name = "H")]
    horizon: Option<usize>,
    /// Draw an SVG of one series: values, expected band, anomalies, and in --horizon
    /// mode the forecast with its interval.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The series to plot (long format; default: the first series in the input).
    #[arg(long, value_name = "NAME", requires = "plot")]
    plot_series: Option<String>,
    /// Configuration file: its [detector] and [forecaster] sections apply.
    #[arg(long, env = "PERFPILOT_CONFIG")]
    config: Option<PathBuf>,
}

pub(super) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    if let Some(labels) = &args.labels {
        let report = replay_corpus(&args.input, labels, &config.detector)?;
        print!("{}", report.table());
        return Ok(ExitCode::SUCCESS);
    }
    let (input, size): (Box<dyn Read>, Option<u64>) = if args.input.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = File::open(&args.input)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", args.input.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(file)), size)
    };
    let output: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(BufWriter::new(File::create(p).map_err(|e| {
                anyhow::anyhow!("cannot create {}: {e}", p.display())
            })?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    // A bar by bytes read, on stderr, only for files (and only drawn on a terminal).
    let bar = match size {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::hidden(),
    };
    let mut progress = |b: u64| bar.set_position(b);
    let mut collector = args
        .plot
        .as_ref()
        .map(|_| PlotCollector::new(args.plot_series.clone()));
    let summary = match args.horizon {
        Some(h) => replay_horizon(
            input,
            output,
            &config.forecaster,
            h,
            &mut progress,
            collector.as_mut(),
        )?,
        None => replay_scores(
            input,
            output,
            &config.detector,
            &mut progress,
            collector.as_mut(),
        )?,
    };
    bar.finish_and_clear();
    if let (Some(path), Some(c)) = (&args.plot, &collector) {
        let name = c
            .series
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("series");
        let title = match args.horizon {
            Some(h) => format!("{name}: last {h} points forecast from the rest"),
            None => format!("{name}: values, expected range and anomalies"),
        };
        draw(path, &title, &c.points)?;
        let note = if c.left_out > 0 {
            format!(" ({} later points left out)", c.left_out)
        } else {
            String::new()
        };
        eprintln!("plot of {name} written to {}{note}", path.display());
    }
    for e in &summary.bad {
        eprintln!("{e}; skipped");
    }
    if summary.bad_count > summary.bad.len() as u64 {
        eprintln!(
            "... and {} more bad rows",
            summary.bad_count - summary.bad.len() as u64
        );
    }
    eprintln!("{}", summary.paragraph());
    Ok(if summary.bad_count > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
