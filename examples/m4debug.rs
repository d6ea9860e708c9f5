use perfpilot::analytics::forecast::{SeriesForecaster, MODELS};
use perfpilot::stage::forecaster::ForecasterConfig;
fn main() {
    let text = std::fs::read_to_string("/work/shared/data/m4-hourly/Hourly-train.csv").unwrap();
    let p = ForecasterConfig::default().params();
    for (i, line) in text.lines().skip(1).enumerate() {
        let vals: Vec<f64> = line.split(',').skip(1).filter_map(|c| c.trim_matches('"').parse().ok()).collect();
        let n = vals.len() - 48;
        let mut f = SeriesForecaster::default();
        for (k, v) in vals[..n].iter().enumerate() { f.observe(k as i64 * 3_600_000, *v, &p); }
        let (m, _) = f.forecast(48, &p);
        if m < 3 || std::env::var("ALL").is_ok() {
            println!("{i} n={n} {} errs={:?} found={}", MODELS[m], f.slot_models().errors(), f.slot_models().found_period());
        }
    }
}
