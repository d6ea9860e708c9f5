//! `perfpilot replay`: the detector and forecaster cores over a CSV file, no Kafka.

use crate::config::Config;
use crate::replay::plot::{draw, PlotCollector};
use crate::replay::{replay_corpus, replay_horizon, replay_scores, Backtest};
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
    /// With --labels: also print, per file, the windows found, the false positives and
    /// the points of the standard score it loses (most first).
    #[arg(long, requires = "labels")]
    per_file: bool,
    /// Where to write the CSV result (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Forecast mode: for each series, learn from all but its last H points and write
    /// `series,timestamp,forecast,lower,upper,actual` for those H points.
    /// Also prints sMAPE, MASE and OWA (relative to M4's Naive2) of the forecasts, beside
    /// seasonal naive and Naive2 on the same series. An M4 file (one series per row,
    /// header `"V1","V2",...`) is read as hourly series.
    #[arg(long, value_name = "H")]
    horizon: Option<usize>,
    /// Seasonal period (points) for MASE, seasonal naive and Naive2 (default: the points
    /// in a day at the data's median step, e.g. 24 for hourly data).
    #[arg(long, value_name = "POINTS", requires = "horizon")]
    season: Option<usize>,
    /// Rolling-origin backtest: forecast from K origins, H points apart, the last one H
    /// points before the end; each origin has learnt every point before it. Metrics are
    /// over all K × H points.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "horizon",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    origins: u16,
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

/// An M4 competition file (header `"V1","V2",...`; each row a series id then its values,
/// padded with empty cells) as long-format rows `timestamp,series,value`, hourly from the
/// epoch. Any other input passes through unchanged.
/// The bad rows skipped (the first 20 with their line), on stderr.
pub(super) fn print_bad_rows(summary: &crate::replay::run::Summary) {
    for e in &summary.bad {
        eprintln!("{e}; skipped");
    }
    if summary.bad_count > summary.bad.len() as u64 {
        eprintln!(
            "... and {} more bad rows",
            summary.bad_count - summary.bad.len() as u64
        );
    }
}

pub(super) fn m4_as_long(mut input: Box<dyn Read>) -> anyhow::Result<Box<dyn Read>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let n = input.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = head[..got].to_vec();
    let is_m4 = head.starts_with(b"\"V1\"") || head.starts_with(b"V1,");
    let rest = std::io::Cursor::new(head).chain(input);
    if !is_m4 {
        return Ok(Box::new(rest));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(rest);
    let mut out = String::from("timestamp,series,value\n");
    for record in reader.records() {
        let record = record?;
        let mut fields = record.iter();
        let Some(id) = fields.next() else { continue };
        for (i, v) in fields.filter(|v| !v.trim().is_empty()).enumerate() {
            out.push_str(&format!("{},{id},{}\n", i as u64 * 3600, v.trim()));
        }
    }
    Ok(Box::new(std::io::Cursor::new(out.into_bytes())))
}

pub(super) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    if let Some(labels) = &args.labels {
        let report = replay_corpus(&args.input, labels, &config.detector)?;
        print!("{}", report.table());
        if args.per_file {
            print!("{}", report.per_file_table());
        }
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
            m4_as_long(input)?,
            output,
            &config.forecaster,
            Backtest {
                horizon: h,
                origins: usize::from(args.origins),
                season: args.season,
            },
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
            Some(h) if args.origins > 1 => format!(
                "{name}: {} × {h} points forecast, each from the points before",
                args.origins
            ),
            Some(h) => format!("{name}: last {h} points forecast from the rest"),
            None => format!("{name}: values, expected range and anomalies"),
        };
        anyhow::ensure!(
            !c.points.is_empty(),
            "cannot draw the plot: {}",
            c.nothing_to_plot()
        );
        draw(path, &title, &c.points)?;
        let note = if c.left_out > 0 {
            format!(" ({} later points left out)", c.left_out)
        } else {
            String::new()
        };
        eprintln!("plot of {name} written to {}{note}", path.display());
    }
    print_bad_rows(&summary);
    eprintln!("{}", summary.paragraph());
    if let Some(acc) = &summary.accuracy {
        eprint!("{}", acc.table());
    }
    Ok(if summary.bad_count > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
