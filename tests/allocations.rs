//! Heap allocations on the per-event hot path, counted by a global allocator in this
//! test binary (per thread, so parallel tests do not mix their counts).
//!
//! The invariant: once a series is known, an event that yields no output allocates
//! nothing in the detector or forecaster core. Outputs (an anomaly, a forecast with its
//! points) allocate, and decoding a MetricEvent allocates its strings; those counts are
//! printed (`cargo test --release --test allocations -- --nocapture`) for the README.

use perfpilot::agent::synthetic::SyntheticFleet;
use perfpilot::event::{decode, encode, MetricEvent};
use perfpilot::stage::detector::{Detector, DetectorConfig};
use perfpilot::stage::forecaster::{Forecaster, ForecasterConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// const-initialised thread-local `Cell`, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// 200 series (the demo's services plus background) × 300 ticks.
fn events() -> Vec<MetricEvent> {
    let mut fleet = SyntheticFleet::demo(0, 60_000, 300, 200, 7);
    (0..300).flat_map(|_| fleet.next_tick()).collect()
}

/// Allocations over the second half of the stream (every series known by then).
#[derive(Debug, Default)]
struct Count {
    /// Events that yielded no output, and what they allocated.
    quiet: u64,
    quiet_allocations: u64,
    /// Every event, and what they allocated (outputs included).
    events: u64,
    allocations: u64,
}

fn count<T>(evs: &[MetricEvent], mut observe: impl FnMut(&MetricEvent) -> Option<T>) -> Count {
    let half = evs.len() / 2;
    for e in &evs[..half] {
        drop(observe(e));
    }
    let mut c = Count::default();
    for e in &evs[half..] {
        let before = allocations();
        let out = observe(e);
        let used = allocations() - before;
        c.events += 1;
        c.allocations += used;
        if out.is_none() {
            c.quiet += 1;
            c.quiet_allocations += used;
        }
    }
    c
}

fn per_event(c: &Count) -> f64 {
    c.allocations as f64 / c.events.max(1) as f64
}

#[test]
fn a_known_series_event_without_output_allocates_nothing() {
    let evs = events();
    let mut d = Detector::new(DetectorConfig::default()).unwrap();
    let det = count(&evs, |e| d.observe(e, 0));
    let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
    let fc = count(&evs, |e| f.observe(e, 0));
    let bytes: Vec<Vec<u8>> = evs.iter().map(|e| encode(e).unwrap()).collect();
    let mut i = 0;
    let dec = count(&evs, |_| {
        i += 1;
        decode::<MetricEvent>(&bytes[i - 1]).ok().map(drop)
    });
    eprintln!(
        "allocations per event: detector {:.2} ({} of {} events quiet), forecaster {:.2} \
         ({} of {} quiet), MetricEvent decode {:.2}",
        per_event(&det),
        det.quiet,
        det.events,
        per_event(&fc),
        fc.quiet,
        fc.events,
        per_event(&dec)
    );
    // The stream exercises both paths.
    assert!(
        det.quiet > det.events / 2 && fc.quiet > fc.events / 2,
        "{det:?} {fc:?}"
    );
    assert!(fc.quiet < fc.events, "forecasts are made: {fc:?}");
    assert_eq!(det.quiet_allocations, 0, "detector: {det:?}");
    assert_eq!(fc.quiet_allocations, 0, "forecaster: {fc:?}");
    // Decoding allocates the record's strings and no more than a handful.
    assert!(per_event(&dec) <= 8.0, "{dec:?}");
}
