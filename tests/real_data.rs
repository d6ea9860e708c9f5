//! Quality on real, labelled public series (`../shared/data`, see its README): the
//! Numenta Anomaly Benchmark's development files scored by NAB's own rules through
//! `perfpilot replay --labels`. The floors are what the detector reached; never lower
//! them. And the M4 Hourly training series backtested through `perfpilot replay --horizon
//! 48` (M4's own metrics, against Naive2 and seasonal naive on the same series). Without
//! the data the tests say SKIPPED (CI always has it).

use perfpilot::replay::replay_corpus;
use perfpilot::stage::detector::DetectorConfig;
use std::path::PathBuf;

fn nab_dev() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nab-dev");
    if dir.join("windows.json").is_file() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: no NAB development data at {}", dir.display());
        None
    }
}

#[test]
fn the_detector_holds_its_nab_floors_on_the_development_files() {
    let Some(dir) = nab_dev() else { return };
    let report =
        replay_corpus(&dir, &dir.join("windows.json"), &DetectorConfig::default()).unwrap();
    eprint!("{}", report.table());
    assert_eq!(report.files, 28);
    assert_eq!(
        report.label_count,
        Some(37),
        "normalised as NAB's runner does"
    );
    assert!(report.unmatched_windows.is_empty());
    // (profile, floor) on what the stage emits, threshold optimised over their scores.
    // Measured at the time of writing: 77.16 / 72.29 / 81.04 (77.01 / 71.99 / 80.93
    // before the residual scale's floor was capped by the range; before an idle spell a
    // fifth longer than any before was a flatline: 75.07 / 70.50 / 78.72; before a
    // growing nightly job was routine: 74.47 / 69.29 / 78.31; before the persistent
    // detectors' routine: 74.05 / 68.20 / 78.04; before the daily routine
    // and the burst rule: 71.94 / 63.98 / 76.62; before value novelty and the spike
    // and flatline fixes: 64.25 / 56.27 / 69.64; classic scoring: 3.51 / 0.00 / 29.88).
    let floors = [77.0, 72.1, 80.9];
    for (score, floor) in report.emitted_scored.iter().zip(floors) {
        assert!(
            score.normalized >= floor,
            "{}: {:.2} < {floor}",
            score.profile.name,
            score.normalized
        );
    }
    // The point score is not pinned through episodes: the graded column scores too
    // (measured: 62.14).
    assert!(
        report.graded[0].normalized >= 61.9,
        "{:?}",
        report.graded[0]
    );
    // Measured: 147 anomalies on the 28 files (143 before idle spells a fifth longer
    // than any before were flatlines, 149 before a growing nightly job was routine, 147 → 148 before the persistent detectors'
    // routine, 182 before bursts stopped escalating; classic
    // scoring: 914).
    assert!(report.anomalies <= 150, "{}", report.anomalies);
}

/// A change to one NAB file's rows `(timestamp, value)`, given its windows (start, end).
type RowsChange = dyn Fn(Vec<(String, f64)>, &[(String, String)]) -> Vec<(String, f64)>;

/// Every value passed through `f(value, lowest, highest of its file)`.
fn each_value(f: impl Fn(f64, f64, f64) -> f64 + 'static) -> Box<RowsChange> {
    Box::new(move |rows, _| {
        let lo = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
        let hi = rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
        rows.into_iter().map(|(ts, v)| (ts, f(v, lo, hi))).collect()
    })
}

/// The mean of every `k` rows, stamped with the first's time: a coarser collector.
fn averaged(k: usize) -> Box<RowsChange> {
    Box::new(move |rows, _| {
        rows.chunks(k)
            .map(|c| {
                (
                    c[0].0.clone(),
                    c.iter().map(|r| r.1).sum::<f64>() / c.len() as f64,
                )
            })
            .collect()
    })
}

/// A day of rows (288 five-minute points) missing right after the probation (the first
/// 15 %), except inside windows: an agent down for a day.
fn paused() -> Box<RowsChange> {
    Box::new(|rows, windows| {
        let start = rows.len() * 15 / 100;
        let in_window = |ts: &str| {
            windows
                .iter()
                .any(|(a, b)| a[..19] <= ts[..19] && ts[..19] <= b[..19])
        };
        rows.into_iter()
            .enumerate()
            .filter(|(i, r)| !(start..start + 288).contains(i) || in_window(&r.0))
            .map(|(_, r)| r)
            .collect()
    })
}

/// The newest of `stamps` (sorted) at or before `ts` (NAB's timestamps sort as text).
fn snapped<'a>(ts: &str, stamps: &'a [String]) -> &'a str {
    let at = &ts[..19.min(ts.len())];
    let i = stamps.partition_point(|s| s.as_str() <= at);
    &stamps[i.saturating_sub(1)]
}

/// Copies the NAB corpus under `dir` to `out` with each file's rows changed. The window
/// edges and labels move to the newest timestamp at or before them that the changed
/// file still has (NAB scores only windows whose edges are timestamps of their file).
fn transformed_copy(dir: &std::path::Path, out: &std::path::Path, change: &RowsChange) {
    let read_json = |name: &str| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let (mut windows, mut labels) = (read_json("windows.json"), read_json("labels.json"));
    for category in std::fs::read_dir(dir).unwrap() {
        let category = category.unwrap().path();
        if !category.is_dir() {
            continue;
        }
        let target = out.join(category.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(&category).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|e| e != "csv") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let mut lines = text.lines();
            let header = lines.next().unwrap();
            let rows: Vec<(String, f64)> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (ts, v) = l.split_once(',').unwrap();
                    (ts.to_string(), v.parse().unwrap())
                })
                .collect();
            let key = format!(
                "{}/{}",
                category.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            );
            let spans: Vec<(String, String)> = match windows.get(&key) {
                Some(serde_json::Value::Array(ws)) => ws
                    .iter()
                    .map(|w| (w[0].as_str().unwrap().into(), w[1].as_str().unwrap().into()))
                    .collect(),
                _ => Vec::new(),
            };
            let rows = change(rows, &spans);
            let mut csv = format!("{header}\n");
            for (ts, v) in &rows {
                csv.push_str(&format!("{ts},{v}\n"));
            }
            std::fs::write(target.join(file.file_name().unwrap()), csv).unwrap();
            let stamps: Vec<String> = rows.into_iter().map(|r| r.0).collect();
            if let Some(serde_json::Value::Array(ws)) = windows.get_mut(&key) {
                for edge in ws.iter_mut().flat_map(|w| w.as_array_mut().unwrap()) {
                    let at = snapped(edge.as_str().unwrap(), &stamps);
                    *edge = format!("{at}.000000").into();
                }
            }
            if let Some(serde_json::Value::Array(ls)) = labels.get_mut(&key) {
                for label in ls.iter_mut() {
                    *label = snapped(label.as_str().unwrap(), &stamps).into();
                }
            }
        }
    }
    let write_json = |name: &str, map: serde_json::Map<String, serde_json::Value>| {
        std::fs::write(out.join(name), serde_json::Value::Object(map).to_string()).unwrap();
    };
    write_json("windows.json", windows);
    write_json("labels.json", labels);
}

#[test]
fn the_detector_generalises_to_other_units_offsets_and_sampling_intervals() {
    // The same series in other units (×1000), far from zero (moved up by 1 000 times
    // its range: memory in bytes, a temperature in kelvin), mirrored (spikes become
    // dips: measured 77.13), with a day missing after
    // the probation (an agent down), and averaged to 30-minute and hourly points (the
    // 5-minute files' anomalies, as a coarser collector sees them). Measured: 77.02,
    // 76.24, 73.79, 66.59 and 61.16 against 77.16 as they are. Before the residual
    // scale's floor was capped by the range, moved: 69.95; before series were kept for
    // a week of silence (6 hours), paused: 72.56 with 65 false positives (38 now);
    // before the likelihood's runs kept their durations on coarser points, 30-minute
    // 51.28 and hourly 56.61.
    let Some(dir) = nab_dev() else { return };
    let cases: [(&str, Box<RowsChange>, f64); 6] = [
        ("scaled", each_value(|v, _, _| v * 1000.0), 76.5),
        (
            "moved",
            each_value(|v, lo, hi| v + 1000.0 * (hi - lo)),
            75.5,
        ),
        ("mirrored", each_value(|v, lo, hi| hi + lo - v), 76.5),
        ("paused", paused(), 73.3),
        ("half-hourly", averaged(6), 65.5),
        ("hourly", averaged(12), 60.0),
    ];
    for (name, change, floor) in cases {
        let out = std::env::temp_dir().join(format!("perfpilot-nab-{name}-{}", std::process::id()));
        transformed_copy(&dir, &out, &*change);
        let report =
            replay_corpus(&out, &out.join("windows.json"), &DetectorConfig::default()).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        let standard = report.emitted_scored[0].normalized;
        eprintln!("{name}: standard {standard:.2}");
        assert_eq!(report.files, 28);
        assert!(
            report.unmatched_windows.is_empty(),
            "{name}: {:?}",
            report.unmatched_windows
        );
        assert!(
            standard >= floor,
            "{name}: standard {standard:.2} < {floor}"
        );
    }
}

fn m4_hourly() -> Option<PathBuf> {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/m4-hourly/Hourly-train.csv");
    if file.is_file() {
        Some(file)
    } else {
        eprintln!("SKIPPED: no M4 Hourly data at {}", file.display());
        None
    }
}

/// `perfpilot replay FILE --horizon 48 --origins K`: (OWA, seasonal naive's OWA,
/// coverage %, the forecast CSV).
fn m4_backtest(file: &std::path::Path, origins: u32) -> (f64, f64, f64, String) {
    let out =
        std::env::temp_dir().join(format!("perfpilot-m4-{}-{origins}.csv", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .arg("replay")
        .arg(file)
        .args(["--horizon", "48", "--origins", &origins.to_string(), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{text}");
    eprint!("{text}");
    let owa_of = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {text}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let coverage: f64 = text
        .split("% of actuals inside")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no coverage in {text}"));
    let csv = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    (
        owa_of("perfpilot "),
        owa_of("seasonal naive "),
        coverage,
        csv,
    )
}

#[test]
fn the_forecaster_holds_its_m4_floors_on_the_hourly_training_series() {
    let Some(file) = m4_hourly() else { return };
    // Measured at the time of writing: last 48 held back, OWA 0.433 (seasonal naive 0.629),
    // 89.0 % of the actuals inside the 90 % intervals (before the slot models: OWA 0.902,
    // 95.6 %); three origins 48 h apart, each having learnt what came before it, OWA
    // 0.422 (seasonal naive 0.657), 89.8 %.
    for origins in [1, 3] {
        let (owa, naive_owa, coverage, csv) = m4_backtest(&file, origins);
        assert!(owa <= 0.45, "{origins} origin(s): OWA {owa}");
        assert!(
            owa <= 0.75 * naive_owa,
            "{origins} origin(s): OWA {owa} vs seasonal naive {naive_owa}"
        );
        assert!(
            (88.0..=92.0).contains(&coverage),
            "{origins} origin(s): coverage {coverage} %"
        );
        // Every M4 Hourly value is positive: no forecast and no bound may go below 0.
        let mut rows = 0;
        for line in csv.lines().skip(1) {
            let f: Vec<f64> = line
                .split(',')
                .skip(2)
                .map(|v| v.parse().unwrap())
                .collect();
            assert!(f[3] >= 0.0, "{line}");
            assert!(f[0] >= 0.0 && f[1] >= 0.0, "below 0: {line}");
            rows += 1;
        }
        assert_eq!(rows, 414 * 48 * origins as usize);
    }
}
