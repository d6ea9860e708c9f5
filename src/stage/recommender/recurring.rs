//! Recurring peaks: the demand a target had at each time of day, so that a peak that
//! comes back every day (a nightly batch, a morning sync) is prepared for before it
//! arrives — what AWS calls predictive scaling.
//!
//! Demand is in replicas at 100 % utilization (utilization × replicas). The day is cut
//! into 5-minute bins; each visit of a bin records the highest demand seen in it. A bin
//! speaks once two days have been seen, with the lower of the last two days: a peak
//! must have come on both to count as recurring (a one-off burst yesterday does not),
//! and a pattern that stops is forgotten within two days.

use serde::{Deserialize, Serialize};

const BIN_MS: i64 = 5 * 60_000;
const BINS: usize = (86_400_000 / BIN_MS) as usize;
/// Days a bin must have seen before it is trusted.
pub const MIN_DAYS: u8 = 2;

/// Demand by time of day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyDemand {
    /// Highest demand of the last visit of each bin, and of the visit before.
    #[serde(with = "crate::stage::snapshot::f32s")]
    last: Vec<f32>,
    #[serde(with = "crate::stage::snapshot::f32s")]
    previous: Vec<f32>,
    #[serde(with = "crate::stage::snapshot::bytes")]
    seen: Vec<u8>,
    visit_bin: usize,
    visit_max: f32,
    visiting: bool,
}

impl DailyDemand {
    /// Whether a restored state has one value per bin and visits a bin that exists.
    pub fn well_formed(&self) -> bool {
        [self.last.len(), self.previous.len(), self.seen.len()] == [BINS; 3]
            && self.visit_bin < BINS
    }
}

impl Default for DailyDemand {
    fn default() -> Self {
        DailyDemand {
            last: vec![0.0; BINS],
            previous: vec![0.0; BINS],
            seen: vec![0; BINS],
            visit_bin: 0,
            visit_max: 0.0,
            visiting: false,
        }
    }
}

fn bin_of(ts: i64) -> usize {
    (ts.rem_euclid(86_400_000) / BIN_MS) as usize % BINS
}

impl DailyDemand {
    /// The demand observed at `ts`.
    pub fn observe(&mut self, ts: i64, demand: f64) {
        if !demand.is_finite() || demand < 0.0 {
            return;
        }
        let bin = bin_of(ts);
        if self.visiting && bin != self.visit_bin {
            let b = self.visit_bin;
            self.previous[b] = self.last[b];
            self.last[b] = self.visit_max;
            self.seen[b] = self.seen[b].saturating_add(1);
            self.visit_max = 0.0;
        }
        self.visiting = true;
        self.visit_bin = bin;
        self.visit_max = self.visit_max.max(demand as f32);
    }

    /// The highest trusted demand of the bins from `ts` to `ts + lead_ms`, with the
    /// time of day it comes at (ms after midnight) and the days it was seen.
    pub fn ahead(&self, ts: i64, lead_ms: i64) -> Option<(f64, i64, u8)> {
        let first = bin_of(ts);
        let count = (lead_ms / BIN_MS).max(1) as usize;
        (1..=count)
            .map(|k| (first + k) % BINS)
            .filter(|&b| self.seen[b] >= MIN_DAYS)
            .map(|b| {
                let demand = self.last[b].min(self.previous[b]);
                (f64::from(demand), b as i64 * BIN_MS, self.seen[b])
            })
            // The earliest of equal peaks: when it starts.
            .fold(None, |best: Option<(f64, i64, u8)>, x| match best {
                Some(b) if b.0 >= x.0 => Some(b),
                _ => Some(x),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_peak_is_announced_ahead_once_seen_twice() {
        let mut d = DailyDemand::default();
        let day = 86_400_000;
        let minute = 60_000;
        let demand = |t: i64| {
            let m = t.rem_euclid(day) / minute;
            if (120..210).contains(&m) {
                10.0
            } else {
                4.0
            }
        };
        for m in 0..(2 * 1440 + 100) {
            d.observe(m * minute, demand(m * minute));
        }
        // Day 2, 01:40: the 02:00 peak is within 30 minutes.
        let now = 2 * day + 100 * minute;
        let (peak, at, days) = d.ahead(now, 30 * minute).unwrap();
        assert_eq!((peak, at, days), (10.0, 120 * minute, 2));
        // Only 10 minutes of lead: not yet.
        assert!(d.ahead(now, 10 * minute).unwrap().0 < 5.0);

        // A burst on one day only is not recurring.
        let mut burst = d.clone();
        for m in (2 * 1440 + 100)..(3 * 1440 + 100) {
            let extra = if m == 2 * 1440 + 600 { 30.0 } else { 0.0 };
            burst.observe(m * minute, demand(m * minute) + extra);
        }
        let (p, _, _) = burst.ahead(3 * day + 590 * minute, 30 * minute).unwrap();
        assert_eq!(p, 4.0);

        // Seen on one day only: nothing is trusted.
        let mut once = DailyDemand::default();
        for m in 0..(1440 + 100) {
            once.observe(m * minute, demand(m * minute));
        }
        assert!(once.ahead(day + 100 * minute, 30 * minute).is_none());
    }
}
