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
    // Measured at the time of writing: 77.01 / 71.99 / 80.93 (before an idle spell a
    // fifth longer than any before was a flatline: 75.07 / 70.50 / 78.72; before a
    // growing nightly job was routine: 74.47 / 69.29 / 78.31; before the persistent
    // detectors' routine: 74.05 / 68.20 / 78.04; before the daily routine
    // and the burst rule: 71.94 / 63.98 / 76.62; before value novelty and the spike
    // and flatline fixes: 64.25 / 56.27 / 69.64; classic scoring: 3.51 / 0.00 / 29.88).
    let floors = [76.8, 71.8, 80.7];
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
