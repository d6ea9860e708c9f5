//! Detection and forecasting quality on labelled synthetic series of five shapes with
//! six anomaly types. The floors are what the cores must keep; the printed table (run
//! with `--nocapture`, or `perfpilot evaluate`) is the one in the README.

use perfpilot::eval::generator::{generate, Injected, Labelled, INJECTED, SHAPES};
use perfpilot::eval::scoring::detect_all;
use perfpilot::stage::detector::DetectorConfig;

fn corpus() -> Vec<Labelled> {
    let mut v = Vec::new();
    for seed in 0..8 {
        for shape in SHAPES {
            v.push(generate(shape, None, 14, seed));
            for kind in INJECTED {
                v.push(generate(shape, Some(kind), 14, seed));
            }
        }
    }
    v
}

#[test]
fn detection_floors_per_anomaly_type() {
    let corpus = corpus();
    let counts = detect_all(corpus.iter(), &DetectorConfig::default());
    eprintln!(
        "{:<16} {:>8} {:>9} {:>6} {:>6}",
        "injected", "recall", "precision", "F1", "FP/10k"
    );
    for (kind, c) in &counts {
        eprintln!(
            "{:<16} {:>8.2} {:>9.2} {:>6.2} {:>6.2}",
            kind.map_or("none (clean)", Injected::as_str),
            c.recall(),
            c.precision(),
            c.f1(),
            c.false_rate()
        );
    }
    // (type, recall floor, F1 floor). Measured at the time of writing (8 seeds × 5
    // shapes): spike 1.00/0.77, dip 0.80/0.65 (a dip in low counts cannot go below 0),
    // level shift 1.00/0.69, trend change (0.1σ per point) 0.75/0.64, variance change
    // 1.00/0.93, flatline 1.00/0.73.
    let floors = [
        (Injected::Spike, 0.9, 0.7),
        (Injected::Dip, 0.7, 0.55),
        (Injected::LevelShift, 0.9, 0.6),
        (Injected::TrendChange, 0.6, 0.5),
        (Injected::VarianceChange, 0.85, 0.75),
        (Injected::Flatline, 0.9, 0.6),
    ];
    for (kind, recall, f1) in floors {
        let c = counts[&Some(kind)];
        assert!(
            c.recall() >= recall,
            "{}: recall {:.2} < {recall}",
            kind.as_str(),
            c.recall()
        );
        assert!(c.f1() >= f1, "{}: F1 {:.2} < {f1}", kind.as_str(), c.f1());
    }
    let clean = counts[&None];
    assert!(
        clean.false_rate() <= 2.5,
        "{:.2} false alarms per 10 000 points on clean series",
        clean.false_rate()
    );
}

#[test]
fn forecasts_beat_seasonal_naive_on_seasonal_data_and_intervals_cover() {
    use perfpilot::eval::generator::Shape;
    use perfpilot::eval::scoring::forecast;
    eprintln!(
        "{:<10} {:>8} {:>10} {:>9}",
        "shape", "MAE", "naive MAE", "coverage"
    );
    let mut seasonal = Vec::new();
    for shape in SHAPES {
        let (mut mae, mut naive, mut cov) = (0.0, 0.0, 0.0);
        for seed in 0..3 {
            let s = generate(shape, None, 14, seed);
            // Two hours ahead (24 points), from an origin every hour of the last 4 days.
            let r = forecast(&s, 24, 12, 4, 0.9);
            mae += r.mae / 3.0;
            naive += r.naive_mae / 3.0;
            cov += r.coverage / 3.0;
        }
        eprintln!("{:<10} {mae:>8.3} {naive:>10.3} {cov:>9.3}", shape.as_str());
        if shape == Shape::Seasonal {
            seasonal = vec![mae, naive, cov];
        }
        assert!(
            (0.8..=0.99).contains(&cov),
            "{}: 90% intervals cover {cov:.3}",
            shape.as_str()
        );
    }
    assert!(
        seasonal[0] < seasonal[1],
        "seasonal data: MAE {:.3} is not below seasonal naive {:.3}",
        seasonal[0],
        seasonal[1]
    );
}
