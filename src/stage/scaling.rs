//! What the targets' own capacity did, as the detector learns it from their capacity
//! metrics (`replicas`): a change of level that follows a change of capacity, in the
//! direction the change explains, is the action's effect, not an incident. After a
//! scale-out a service's utilization and latency fall; after a scale-in they rise. Such a
//! change is counted as explained rather than reported as an anomaly, so the pipeline
//! does not alarm on — and react to — its own decisions.
//!
//! A change the other way (latency up right after a scale-out) is not explained: it is
//! reported as usual.

use crate::event::Direction;
use std::collections::HashMap;

/// The last capacity change of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Capacity {
    partition: i32,
    /// The newest capacity value seen, and its event time.
    value: f64,
    seen_ms: i64,
    /// The newest change: its event time and +1 (added) or −1 (removed).
    changed: Option<(i64, i8)>,
}

/// Per target, its last capacity change; at most `max_targets` of them.
#[derive(Debug)]
pub struct ScalingLog {
    targets: HashMap<String, Capacity>,
    max_targets: usize,
    /// How long after a change a level change it explains is taken as its effect.
    window_ms: i64,
}

impl ScalingLog {
    /// A log of up to `max_targets` targets whose changes explain what follows within
    /// `window_ms` (0: nothing is explained).
    pub fn new(max_targets: usize, window_ms: i64) -> Self {
        ScalingLog {
            targets: HashMap::new(),
            max_targets: max_targets.max(1),
            window_ms,
        }
    }

    /// A capacity point of `target`: notes a change of value.
    pub fn observe(&mut self, target: &str, partition: i32, ts: i64, value: f64) {
        if self.window_ms <= 0 || !value.is_finite() {
            return;
        }
        if let Some(c) = self.targets.get_mut(target) {
            if ts < c.seen_ms {
                return;
            }
            if (value - c.value).abs() > 1e-9 {
                let direction = if value > c.value { 1 } else { -1 };
                c.changed = Some((ts, direction));
            }
            c.value = value;
            c.seen_ms = ts;
            c.partition = partition;
            return;
        }
        if self.targets.len() >= self.max_targets {
            // Full: targets not heard of for longer than the window hold nothing useful.
            let horizon = ts - self.window_ms;
            self.targets.retain(|_, c| c.seen_ms >= horizon);
            if self.targets.len() >= self.max_targets {
                return;
            }
        }
        self.targets.insert(
            target.to_string(),
            Capacity {
                partition,
                value,
                seen_ms: ts,
                changed: None,
            },
        );
    }

    /// Whether a level change of `target` at `ts` going `direction` is the effect of
    /// its latest capacity change: within the window after it, and the way more
    /// capacity moves load metrics (down after a scale-out, up after a scale-in).
    pub fn explains(&self, target: &str, ts: i64, direction: Direction) -> bool {
        let Some((at, sign)) = self.targets.get(target).and_then(|c| c.changed) else {
            return false;
        };
        let after = ts - at;
        let expected = if sign > 0 {
            Direction::Down
        } else {
            Direction::Up
        };
        (0..=self.window_ms).contains(&after) && direction == expected
    }

    /// Drops the targets of revoked partitions.
    pub fn drop_partitions(&mut self, partitions: &[i32]) {
        self.targets
            .retain(|_, c| !partitions.contains(&c.partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_change_explains_the_effect_it_should_have_within_the_window_only() {
        let mut log = ScalingLog::new(10, 15 * MIN);
        for m in 0..10 {
            log.observe("checkout", 0, m * MIN, 4.0);
        }
        assert!(
            !log.explains("checkout", 9 * MIN, Direction::Down),
            "no change yet"
        );
        log.observe("checkout", 0, 10 * MIN, 6.0); // scale-out
        assert!(log.explains("checkout", 13 * MIN, Direction::Down));
        assert!(
            !log.explains("checkout", 13 * MIN, Direction::Up),
            "latency up after a scale-out is not its effect"
        );
        assert!(
            !log.explains("checkout", 26 * MIN, Direction::Down),
            "past the window"
        );
        assert!(
            !log.explains("search", 13 * MIN, Direction::Down),
            "another target"
        );
        log.observe("checkout", 0, 30 * MIN, 5.0); // scale-in
        assert!(log.explains("checkout", 31 * MIN, Direction::Up));
        assert!(!log.explains("checkout", 31 * MIN, Direction::Down));
        log.drop_partitions(&[0]);
        assert!(!log.explains("checkout", 31 * MIN, Direction::Up));
    }

    #[test]
    fn bounded_and_switched_off_by_a_zero_window() {
        let mut log = ScalingLog::new(2, 15 * MIN);
        log.observe("a", 0, 0, 1.0);
        log.observe("b", 0, 0, 1.0);
        log.observe("c", 0, MIN, 1.0);
        assert_eq!(log.targets.len(), 2, "full, and nobody is old enough to go");
        log.observe("c", 0, 20 * MIN, 1.0);
        assert_eq!(log.targets.len(), 1, "a and b aged out to make room");
        let mut off = ScalingLog::new(10, 0);
        off.observe("a", 0, 0, 1.0);
        off.observe("a", 0, MIN, 2.0);
        assert!(!off.explains("a", MIN, Direction::Down));
    }
}
