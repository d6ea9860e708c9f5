//! A changelog record damaged on the way (bits flipped) is refused or restored into a
//! state the stage goes on working with; it never panics the stage. (The recommender's
//! own test is in `stage::recommender::tests`.)

use perfpilot::agent::synthetic::SyntheticFleet;
use perfpilot::event::MetricEvent;
use perfpilot::stage::detector::{Detector, DetectorConfig};
use perfpilot::stage::forecaster::{Forecaster, ForecasterConfig};
use perfpilot::stage::Stage;
use proptest::prelude::*;
use std::sync::OnceLock;

/// 300 ticks of the demo fleet: the first 250 to learn, the rest after the restore.
fn events() -> &'static Vec<MetricEvent> {
    static EVENTS: OnceLock<Vec<MetricEvent>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let mut fleet = SyntheticFleet::demo(0, 60_000, 300, 0, 5);
        (0..300).flat_map(|_| fleet.next_tick()).collect()
    })
}

fn learnt<S: Stage>(mut core: S, observe: impl Fn(&mut S, &MetricEvent)) -> Vec<(String, Vec<u8>)> {
    let evs = events();
    for e in &evs[..evs.len() * 5 / 6] {
        observe(&mut core, e);
    }
    core.state().unwrap().snapshot(0)
}

fn detector_snapshot() -> &'static Vec<(String, Vec<u8>)> {
    static SNAP: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SNAP.get_or_init(|| {
        learnt(Detector::new(DetectorConfig::default()).unwrap(), |d, e| {
            d.observe(e, 0);
        })
    })
}

fn forecaster_snapshot() -> &'static Vec<(String, Vec<u8>)> {
    static SNAP: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SNAP.get_or_init(|| {
        learnt(
            Forecaster::new(ForecasterConfig::default()).unwrap(),
            |f, e| {
                f.observe(e, 0);
            },
        )
    })
}

fn damage(bytes: &[u8], flips: &[(usize, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (at, bit) in flips {
        let i = at % out.len();
        out[i] ^= 1 << bit;
    }
    out
}

/// Restores every key, each damaged, then runs the rest of the stream.
fn survives<S: Stage>(
    mut core: S,
    snapshot: &[(String, Vec<u8>)],
    flips: &[(usize, u8)],
    observe: impl Fn(&mut S, &MetricEvent),
) {
    for (key, bytes) in snapshot {
        let _ = core.state().unwrap().restore(0, key, &damage(bytes, flips));
    }
    let evs = events();
    for e in &evs[evs.len() * 5 / 6..] {
        observe(&mut core, e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_damaged_detector_state_never_panics(flips in proptest::collection::vec((0usize..1000, 0u8..8), 1..4)) {
        let snapshot = detector_snapshot();
        prop_assert!(snapshot.len() > 10);
        survives(Detector::new(DetectorConfig::default()).unwrap(), snapshot, &flips, |d, e| {
            d.observe(e, 0);
        });
    }

    #[test]
    fn a_damaged_forecaster_state_never_panics(flips in proptest::collection::vec((0usize..1000, 0u8..8), 1..4)) {
        let snapshot = forecaster_snapshot();
        prop_assert!(snapshot.len() > 10);
        survives(Forecaster::new(ForecasterConfig::default()).unwrap(), snapshot, &flips, |f, e| {
            f.observe(e, 0);
        });
    }
}
