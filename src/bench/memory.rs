//! Resident memory per active series of the detector and forecaster cores. Each
//! measurement runs in a fresh process (`perfpilot bench memory` starts one per core and
//! size), so memory freed by an earlier measurement cannot hide the next one's.

use super::process::rss_bytes;
use crate::event::MetricEvent;
use crate::stage::detector::{Detector, DetectorConfig};
use crate::stage::forecaster::{Forecaster, ForecasterConfig};

/// The cores measured.
pub const CORES: [&str; 2] = ["detector", "forecaster"];

fn event(i: usize, ts: i64) -> MetricEvent {
    let mut e = MetricEvent::sample(
        "bench",
        &format!("host-{:07}", i / 4),
        [
            "cpu_utilization",
            "latency_p99_ms",
            "requests_per_s",
            "errors",
        ][i % 4],
        ts,
        (i % 97) as f64,
    );
    e.labels.insert("zone".into(), format!("z{}", i % 3));
    e
}

/// Creates `series` series (two points each) in a fresh core and returns the RSS it
/// added, in bytes per series, and the RSS before it (the base). `None` if RSS cannot
/// be read here or `core` is unknown.
pub fn measure(core: &str, series: usize) -> Option<(f64, u64)> {
    let base = rss_bytes()?;
    let grown = match core {
        "detector" => {
            let mut d = Detector::new(DetectorConfig {
                max_series: series + 1,
                ..DetectorConfig::default()
            })
            .ok()?;
            for ts in [0, 60_000] {
                for i in 0..series {
                    d.observe(&event(i, ts), 0);
                }
            }
            let after = rss_bytes()?;
            std::hint::black_box(&d);
            after
        }
        "forecaster" => {
            let mut f = Forecaster::new(ForecasterConfig {
                max_series: series + 1,
                ..ForecasterConfig::default()
            })
            .ok()?;
            for ts in [0, 60_000] {
                for i in 0..series {
                    f.observe(&event(i, ts), 0);
                }
            }
            let after = rss_bytes()?;
            std::hint::black_box(&f);
            after
        }
        _ => return None,
    };
    Some((grown.saturating_sub(base) as f64 / series as f64, base))
}
