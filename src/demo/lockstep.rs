//! The demo's lockstep: the pipeline works through one simulated minute completely
//! before the agents publish the next, so a run depends on its seed alone, not on how
//! fast the machine or the broker is.
//!
//! Three things used to depend on timing, and each is pinned here:
//! - **the stages' clock** is simulated time ([`Clock::Manual`]), moved one tick at a
//!   time, and each stage's timer has run on the new time before the tick's events go
//!   out (the coordinator's idle flush closes the same windows in every run);
//! - **the closed loop**: a decision reaches the agents before the next tick, always;
//! - **the recommender's input order**: the detector's gate holds its input until the
//!   forecaster's outputs for the tick have been read, so per target a tick's forecasts
//!   come before its anomalies.
//!
//! "Worked through" is read off the stages' live counters ([`Progress`]): every record
//! published was read, every output acknowledged and read by the next stage, and the
//! demo's watcher has seen every output and dead letter.

use crate::runtime::{Clock, Gate, Progress, Shutdown};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the pipeline may stand still before the demo gives up on it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// How often the stages' timers run, so a tick's handshake takes milliseconds.
pub(super) const TICK_INTERVAL: Duration = Duration::from_millis(5);

/// The handles the demo keeps on its four stages.
pub(super) struct Lockstep {
    clock: Arc<AtomicI64>,
    /// The clock the stages are given.
    pub(super) stage_clock: Clock,
    /// The detector's gate.
    pub(super) detector_gate: Arc<Gate>,
    /// Detector, forecaster, recommender, coordinator (pipeline order).
    pub(super) progress: [Arc<Progress>; 4],
    /// Records the watcher has taken in (outputs of every stage, and dead letters).
    pub(super) watched: Arc<AtomicU64>,
    signals: Shutdown,
}

/// What the pipeline had done when it stalled.
fn describe(p: &[Arc<Progress>; 4], published: u64, watched: u64) -> String {
    let [d, f, r, c] = p;
    format!(
        "published {published}; detector read {}, forecaster read {}, recommender read {} of {}, coordinator read {} of {}; watcher saw {watched}; in flight {}/{}/{}/{}",
        d.consumed(),
        f.consumed(),
        r.consumed(),
        d.produced() + f.produced(),
        c.consumed(),
        r.produced(),
        d.in_flight(),
        f.in_flight(),
        r.in_flight(),
        c.in_flight(),
    )
}

impl Lockstep {
    /// Handles for a run whose simulated time starts at `start_ms`.
    pub(super) fn new(start_ms: i64, signals: Shutdown) -> Self {
        let (stage_clock, clock) = Clock::manual(start_ms);
        Lockstep {
            clock,
            stage_clock,
            detector_gate: Arc::new(Gate::default()),
            progress: Default::default(),
            watched: Arc::new(AtomicU64::new(0)),
            signals,
        }
    }

    /// Whether the stages downstream of the metrics have worked through everything
    /// (with `detector` false, everything but the detector's share).
    fn settled(&self, published: u64, detector: bool) -> bool {
        let [d, f, r, c] = &self.progress;
        // Each stage: every input read (reading the count first), nothing in flight;
        // only then are its output counts final for the next stage's check.
        let upstream = |p: &Progress, inputs: u64| p.consumed() == inputs && p.in_flight() == 0;
        if !upstream(f, published) || (detector && !upstream(d, published)) {
            return false;
        }
        let anomalies = d.produced();
        if !upstream(r, anomalies + f.produced()) || !upstream(c, r.produced()) {
            return false;
        }
        let dead: u64 = self.progress.iter().map(|p| p.dead_lettered()).sum();
        let outputs: u64 = self.progress.iter().map(|p| p.produced()).sum();
        // A held detector may still owe dead letters for what it has not read: the
        // watcher's count is only checked once the detector has worked through too.
        !detector || self.watched.load(Ordering::Acquire) == outputs + dead
    }

    /// Waits until [`Lockstep::settled`]; fails on a stall or a signal.
    async fn wait_settled(&self, published: u64, detector: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        while !self.settled(published, detector) {
            if self.signals.is_triggered() {
                anyhow::bail!("interrupted");
            }
            if started.elapsed() > STALL_LIMIT {
                anyhow::bail!(
                    "the pipeline did not work through a simulated minute in {} s: {}",
                    STALL_LIMIT.as_secs(),
                    describe(
                        &self.progress,
                        published,
                        self.watched.load(Ordering::Acquire)
                    )
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Moves simulated time to `ms` and returns once every stage's timer has run on it
    /// and what the timers emitted has been worked through.
    pub(super) async fn advance(&self, ms: i64, published: u64) -> anyhow::Result<()> {
        self.clock.store(ms, Ordering::Release);
        // Two runs each: the second surely started after the clock moved.
        let due: Vec<u64> = self.progress.iter().map(|p| p.ticks() + 2).collect();
        let started = Instant::now();
        while self.progress.iter().zip(&due).any(|(p, d)| p.ticks() < *d) {
            if self.signals.is_triggered() {
                anyhow::bail!("interrupted");
            }
            if started.elapsed() > STALL_LIMIT {
                anyhow::bail!(
                    "a stage's timer did not run for {} s",
                    STALL_LIMIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.wait_settled(published, true).await
    }

    /// Holds the detector back while a tick's events are published.
    pub(super) fn hold_detector(&self) {
        self.detector_gate.close();
    }

    /// Once the tick's `published` records have gone through the forecaster and on,
    /// lets the detector read them, and waits until everything is worked through.
    pub(super) async fn work_through(&self, published: u64) -> anyhow::Result<()> {
        let held = self.wait_settled(published, false).await;
        self.detector_gate.open();
        held?;
        self.wait_settled(published, true).await
    }
}
