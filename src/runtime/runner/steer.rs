//! What a driver that hosts stages in its own process (the demo, tests, benches) reads
//! and steers of them: live counters, the clock the stage reads, and a gate that holds
//! its input. `perfpilot run` uses none of it: wall clock, no gate.
//!
//! Together they let the demo run the pipeline in lockstep — one simulated minute at a
//! time, each fully worked through before the next — so the same seed gives the same
//! run however fast the machine is.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Live counters of a running stage.
#[derive(Debug, Default)]
pub struct Progress {
    pub(super) consumed: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) produced: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) ticks: AtomicU64,
}

impl Progress {
    /// Records read and fully handled (processed or dead-lettered, and what they gave
    /// handed to the producer).
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Acquire)
    }
    /// Records dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Acquire)
    }
    /// Outputs acknowledged so far.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Acquire)
    }
    /// Records handed to the producer (outputs, dead letters, state) and not yet
    /// acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }
    /// Times the core's timer has run (each after reading the clock).
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }
}

/// The time a stage takes as "now": for the checks on event times (`--max-future`,
/// eviction bounds) and for the core's timer (the coordinator's idle flush).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The machine's wall clock.
    #[default]
    Wall,
    /// A time the driver sets (ms since the epoch): simulated time.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `ms`, and the handle that moves it.
    pub fn manual(ms: i64) -> (Clock, Arc<AtomicI64>) {
        let handle = Arc::new(AtomicI64::new(ms));
        (Clock::Manual(handle.clone()), handle)
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Wall => super::super::now_ms(),
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }
}

/// Holds a stage's input: while closed, the stage handles no record (one it has
/// already received waits). Open by default.
#[derive(Debug)]
pub struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: AtomicBool::new(true),
            opened: Notify::new(),
        }
    }
}

impl Gate {
    /// Lets records through.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Holds records back (after the one being handled, if any).
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// Whether records go through.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Returns once the gate is open.
    pub async fn wait_open(&self) {
        loop {
            let opened = self.opened.notified();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_manual_clock_reads_what_its_handle_set() {
        let (clock, handle) = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        handle.store(61_000, Ordering::Release);
        assert_eq!(clock.now_ms(), 61_000);
        assert!(Clock::Wall.now_ms() > 1_600_000_000_000);
    }

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened() {
        let gate = Arc::new(Gate::default());
        gate.wait_open().await; // open by default
        gate.close();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "passed a closed gate");
        gate.open();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("an opened gate lets the waiter through")
            .unwrap();
    }
}
