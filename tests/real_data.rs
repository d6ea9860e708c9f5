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

/// A change to every value: `(value, range of its file) -> new value`.
type ValueChange = dyn Fn(f64, f64) -> f64;

/// Copies the NAB files under `dir` to `out` with every value passed through `f(value,
/// range of its file)`, and the windows file as it is.
fn transformed_copy(dir: &std::path::Path, out: &std::path::Path, f: &ValueChange) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(dir.join("windows.json"), out.join("windows.json")).unwrap();
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
            let rows: Vec<(&str, f64)> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (ts, v) = l.split_once(',').unwrap();
                    (ts, v.parse().unwrap())
                })
                .collect();
            let lo = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            let hi = rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
            let mut csv = format!("{header}\n");
            for (ts, v) in rows {
                csv.push_str(&format!("{ts},{}\n", f(v, hi - lo)));
            }
            std::fs::write(target.join(file.file_name().unwrap()), csv).unwrap();
        }
    }
}

#[test]
fn the_detector_scores_alike_when_the_values_are_scaled_or_moved_far_from_zero() {
    // The same series in other units (×1000) or far from zero (moved up by 1 000 times
    // its range: memory in bytes, a temperature in kelvin) hold the same anomalies.
    // Measured: 78.09 and 77.26 against 77.16 as they are (values near the best
    // threshold move by a few thousandths when the arithmetic does); moved: 69.95 before
    // the residual scale's floor was capped by the range.
    let Some(dir) = nab_dev() else { return };
    let cases: [(&str, &ValueChange, f64); 2] = [
        ("scaled", &|v, _| v * 1000.0, 76.5),
        ("moved", &|v, range| v + 1000.0 * range, 75.5),
    ];
    for (name, f, floor) in cases {
        let out = std::env::temp_dir().join(format!("perfpilot-nab-{name}-{}", std::process::id()));
        transformed_copy(&dir, &out, f);
        let report =
            replay_corpus(&out, &out.join("windows.json"), &DetectorConfig::default()).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        eprintln!("{name}: {}", report.emitted_scored[0].normalized);
        assert_eq!(report.files, 28);
        assert!(
            report.emitted_scored[0].normalized >= floor,
            "{name}: standard {:.2} < {floor}",
            report.emitted_scored[0].normalized
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
