//! Value novelty: has the series shown a value like this one in its recent history?
//!
//! The residual detectors judge a point against a prediction, which on irregular series
//! (bursty disk and network counters, CPU that idles and peaks) is poor, so they must be
//! gated hard. Novelty needs no prediction: the series' range is cut into [`BINS`] equal
//! bins, each remembers when it was last visited, and a point is novel when no bin
//! within [`NEAR`] of its own (4 % of the range either way) was visited in the last
//! [`MEMORY`] points, or when it lies more than that margin outside the range seen.
//! On the NAB development files, value novelty alone (prototyped) found 27 of 36 windows
//! with 18 false positives, but on heavy-tailed synthetic noise its tails are novel now
//! and then, so the detector uses it to confirm the residual detectors (see
//! [`super::detect`]): NAB standard 70.2 → 71.9 with the synthetic false-alarm rate
//! unchanged.
//!
//! State: the range (two `f64`) and one byte per bin, the coarse time of its last visit
//! (an epoch of [`EPOCH_POINTS`] points, 0 = not visited). When the range widens, the
//! bins are remapped onto the new range, keeping the most recent visit of the bins that
//! merge. Cost per point: one bin lookup and a scan of
//! 2 × [`NEAR`] + 1 bytes; every 512 points one pass over the bins forgets visits older
//! than the memory, so epoch numbers can cycle through a byte.

use serde::{Deserialize, Serialize};

/// Bins over the series' range.
pub const BINS: usize = 256;
/// Bins either side of a point's own that count as "a value like it" (4 % of the range).
pub const NEAR: usize = 10;
/// Points a visit is remembered for.
pub const MEMORY: u32 = 3000;
/// Points per epoch, the unit in which visits are timed.
pub const EPOCH_POINTS: u32 = 16;
/// Epochs in the memory.
const MEMORY_EPOCHS: u32 = MEMORY / EPOCH_POINTS;
/// Epoch numbers cycle through 1..=CYCLE (0 means "not visited").
const CYCLE: u32 = 255;
/// Epochs between passes that clear visits older than the memory. A visit must be
/// cleared before its age could wrap past [`CYCLE`] and look recent again.
const SWEEP_EPOCHS: u32 = 32;
const _: () = assert!(MEMORY_EPOCHS + SWEEP_EPOCHS < CYCLE);

/// The bin at fractional position `at` (in bins from the range's low end), clamped to
/// the table. `as` truncates (= floor for `at` ≥ 0) without a libm call; NaN and
/// negative positions map to 0.
fn bin_at(at: f64) -> usize {
    if at > 0.0 {
        (at as usize).min(BINS - 1)
    } else {
        0
    }
}

/// Per-series novelty state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueNovelty {
    lo: f64,
    hi: f64,
    /// Per bin, the epoch of its last visit (1..=255), 0 when not visited (or forgotten).
    /// Empty until the range opens (the series has shown two different values).
    seen: Vec<u8>,
    /// Points seen.
    points: u32,
}

impl Default for ValueNovelty {
    fn default() -> Self {
        ValueNovelty {
            lo: f64::NAN,
            hi: f64::NAN,
            seen: Vec::new(),
            points: 0,
        }
    }
}

impl ValueNovelty {
    /// Whether a restored state is usable: a finite, ordered range and a full bin table
    /// once the range is open.
    pub fn well_formed(&self) -> bool {
        if self.points == 0 {
            return true;
        }
        self.lo.is_finite()
            && self.hi.is_finite()
            && self.lo <= self.hi
            && (self.seen.is_empty() || self.seen.len() == BINS)
    }

    fn epoch(&self) -> u8 {
        // 1..=CYCLE, so 0 stays free for "not visited".
        ((self.points / EPOCH_POINTS) % CYCLE + 1) as u8
    }

    fn age(now: u8, then: u8) -> u32 {
        (u32::from(now) + CYCLE - u32::from(then)) % CYCLE
    }

    /// Whether a bin's visit lies within the memory.
    fn recent(now: u8, then: u8) -> bool {
        then != 0 && Self::age(now, then) <= MEMORY_EPOCHS
    }

    /// Width of the range of values seen (0 until the series has shown two values).
    pub fn span(&self) -> f64 {
        let w = self.hi - self.lo;
        if w.is_finite() {
            w
        } else {
            0.0
        }
    }

    fn bin(&self, value: f64) -> usize {
        let width = self.hi - self.lo;
        bin_at((value - self.lo) / width * BINS as f64)
    }

    /// Judges `value` (novel or not) and then learns it. Non-finite values are ignored
    /// and never novel.
    pub fn observe(&mut self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        self.points = self.points.saturating_add(1);
        if self.points == 1 || !self.lo.is_finite() {
            self.lo = value;
            self.hi = value;
            return false;
        }
        if self.points % (EPOCH_POINTS * SWEEP_EPOCHS) == 0 && !self.seen.is_empty() {
            self.forget_old();
        }
        let now = self.epoch();
        if self.seen.is_empty() {
            if value == self.lo {
                return false;
            }
            // The range opens: everything so far was the one earlier value.
            let earlier = self.lo;
            self.lo = self.lo.min(value);
            self.hi = self.hi.max(value);
            self.seen = vec![0; BINS];
            let (b0, b1) = (self.bin(earlier), self.bin(value));
            self.seen[b0] = now;
            self.seen[b1] = now;
            return false;
        }
        let margin = (self.hi - self.lo) * NEAR as f64 / BINS as f64;
        let novel = if value > self.hi + margin || value < self.lo - margin {
            true
        } else if value >= self.lo && value <= self.hi {
            let b = self.bin(value);
            let near = &self.seen[b.saturating_sub(NEAR)..(b + NEAR + 1).min(BINS)];
            near.iter().all(|&e| !Self::recent(now, e))
        } else {
            false
        };
        if value < self.lo || value > self.hi {
            // Exactly to the value: headroom (fewer remaps) coarsens the bins and cost
            // 2.3 NAB points when tried.
            self.widen(value.min(self.lo), value.max(self.hi));
        }
        let b = self.bin(value);
        self.seen[b] = now;
        novel
    }

    /// Remaps the bins onto the range [lo, hi] (which contains the current one), keeping
    /// the most recent visit where several bins fall into one.
    fn widen(&mut self, lo: f64, hi: f64) {
        let now = self.epoch();
        let (old_lo, old_width) = (self.lo, self.hi - self.lo);
        if self.seen.len() != BINS {
            // Not a state this build wrote: start the bins afresh.
            self.seen = vec![0; BINS];
        }
        let mut old = [0u8; BINS];
        old.copy_from_slice(&self.seen);
        self.seen.fill(0);
        self.lo = lo;
        self.hi = hi;
        // Old bin i's centre lands in new bin offset + i × scale (the map is linear).
        let scale = old_width / (hi - lo);
        let offset = (old_lo - lo) / (hi - lo) * BINS as f64 + 0.5 * scale;
        // Early in a series' life, when the range widens most often, most bins are
        // unvisited: skip them eight at a time.
        for (c, chunk) in old.chunks_exact(8).enumerate() {
            if chunk.iter().all(|&e| e == 0) {
                continue;
            }
            for (k, &e) in chunk.iter().enumerate() {
                if e != 0 {
                    self.remap_visit(now, c * 8 + k, e, offset, scale);
                }
            }
        }
    }

    /// Moves the visit `e` of old bin `i` to the new bin its centre falls into.
    fn remap_visit(&mut self, now: u8, i: usize, e: u8, offset: f64, scale: f64) {
        let j = bin_at(offset + i as f64 * scale);
        let kept = self.seen[j];
        if kept == 0 || Self::age(now, e) < Self::age(now, kept) {
            self.seen[j] = e;
        }
    }

    /// Forgets visits older than the memory, so an epoch number is never mistaken for a
    /// recent one after it cycles.
    fn forget_old(&mut self) {
        let now = self.epoch();
        for e in self.seen.iter_mut() {
            if *e != 0 && Self::age(now, *e) > MEMORY_EPOCHS {
                *e = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(n: &mut ValueNovelty, values: impl IntoIterator<Item = f64>) -> usize {
        values.into_iter().filter(|v| n.observe(*v)).count()
    }

    #[test]
    fn a_series_that_repeats_its_values_is_never_novel() {
        let mut n = ValueNovelty::default();
        let wave = |i: i32| ((i % 50) as f64 / 50.0 * std::f64::consts::TAU).sin();
        // The first cycle explores the range (a detector gives novelty a warm-up for it);
        // after it, every value is one the series has shown.
        feed(&mut n, (0..50).map(wave));
        assert_eq!(feed(&mut n, (50..10_000).map(wave)), 0);
        assert!(n.well_formed());
    }

    #[test]
    fn a_new_extreme_and_a_move_to_unseen_values_are_novel() {
        let mut n = ValueNovelty::default();
        let low_high = (0..2000).map(|i| if i % 2 == 0 { 0.0 } else { 100.0 });
        assert_eq!(feed(&mut n, low_high), 0);
        assert!(n.observe(200.0), "far above the range");
        assert!(n.observe(50.0), "inside the range, where it never was");
        assert!(!n.observe(51.0), "next to a value just seen");
        assert!(!n.observe(100.0));
    }

    #[test]
    fn visits_are_forgotten_after_the_memory() {
        let mut n = ValueNovelty::default();
        feed(&mut n, [0.0, 100.0, 50.0]);
        // 0 and 100 keep being visited, 50 only long ago.
        let alternate = (0..(MEMORY as usize + 2 * EPOCH_POINTS as usize)).map(|i| {
            if i % 2 == 0 {
                0.0
            } else {
                100.0
            }
        });
        assert_eq!(feed(&mut n, alternate), 0);
        assert!(n.observe(50.0), "50 was seen more than MEMORY points ago");
        // Long after the epoch numbers cycled, a fresh visit is still recent.
        let long = (0..(CYCLE * EPOCH_POINTS * 3)).map(|i| if i % 2 == 0 { 0.0 } else { 100.0 });
        assert_eq!(feed(&mut n, long), 0);
        assert!(!n.observe(0.0));
        assert!(n.observe(50.0));
    }

    #[test]
    fn widening_keeps_where_the_series_has_been() {
        let mut n = ValueNovelty::default();
        feed(&mut n, (0..500).map(|i| (i % 10) as f64));
        // A jump to 1000 widens the range a hundredfold: the old values all fall into the
        // first bins and stay known.
        assert!(n.observe(1000.0));
        assert!(!n.observe(5.0));
        assert!(n.observe(500.0));
    }

    #[test]
    fn constant_and_non_finite_input_is_never_novel() {
        let mut n = ValueNovelty::default();
        assert_eq!(feed(&mut n, std::iter::repeat_n(7.0, 1000)), 0);
        assert!(!n.observe(f64::NAN));
        assert!(!n.observe(f64::INFINITY));
        assert!(n.well_formed());
    }
}
