//! A compact history of slot means: the last [`SLOTS`] slots of a series (an hour each,
//! or the sampling step rounded to hours when that is coarser), for the forecasting
//! models that repeat or compare whole periods — a day, a week, or a period found in
//! the data (see `analytics::slots`).
//!
//! Values are stored as 16-bit codes over the ring's range (`lo + code × scale`), so a
//! week of hourly slots takes 340 bytes; the rounding error is below 1/65 000
//! of the range. A value outside the range re-encodes the ring over a wider one, and
//! once per ring length the range is tightened to what the ring holds (a spike that
//! has rolled out no longer costs precision).

use serde::{Deserialize, Serialize};

/// Slots kept: a week of hours and two more, so the value one week before the newest
/// slot is still there when that slot is scored.
pub const SLOTS: usize = 170;
/// The shortest slot: an hour.
pub const HOUR_MS: i64 = 3_600_000;
const CODES: f64 = 65_535.0;

/// The last [`SLOTS`] slot means of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotHistory {
    /// Slot width in ms; 0 until [`Self::start`].
    slot_ms: i64,
    /// Index (`ts / slot_ms`) of the newest slot.
    newest: i64,
    /// Ring position of the newest slot.
    head: u16,
    /// Slots filled (at most [`SLOTS`]).
    len: u16,
    /// Whether the newest slot is complete (has its expected points, or a later point
    /// has arrived).
    complete: bool,
    /// Points expected per slot at the series' step.
    expected: u16,
    open_points: u16,
    open_sum: f32,
    /// Running variance of points around their slot's mean: what a forecast of slot
    /// means leaves out when it is read at single points.
    within_var: f32,
    /// Completions since the range was last tightened.
    since_tighten: u16,
    lo: f32,
    scale: f32,
    #[serde(with = "codes_as_bytes")]
    codes: [u16; SLOTS],
}

impl Default for SlotHistory {
    fn default() -> Self {
        SlotHistory {
            slot_ms: 0,
            newest: 0,
            head: 0,
            len: 0,
            complete: false,
            expected: 1,
            open_points: 0,
            open_sum: 0.0,
            within_var: 0.0,
            since_tighten: 0,
            lo: 0.0,
            scale: 0.0,
            codes: [0; SLOTS],
        }
    }
}

/// The codes as 2 × [`SLOTS`] little-endian bytes: a varint format (postcard) would spend
/// 3 bytes on most of them, and a snapshot is written per changed series.
mod codes_as_bytes {
    use super::SLOTS;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(codes: &[u16; SLOTS], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = [0u8; 2 * SLOTS];
        for (pair, code) in bytes.chunks_exact_mut(2).zip(codes) {
            pair.copy_from_slice(&code.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }

    struct Codes;

    impl<'de> Visitor<'de> for Codes {
        type Value = [u16; SLOTS];

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "{} bytes", 2 * SLOTS)
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
            if bytes.len() != 2 * SLOTS {
                return Err(E::invalid_length(bytes.len(), &self));
            }
            let mut codes = [0u16; SLOTS];
            for (code, pair) in codes.iter_mut().zip(bytes.chunks_exact(2)) {
                *code = u16::from_le_bytes([pair[0], pair[1]]);
            }
            Ok(codes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut bytes = Vec::with_capacity(2 * SLOTS);
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            self.visit_bytes(&bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u16; SLOTS], D::Error> {
        d.deserialize_bytes(Codes)
    }
}

/// What one point did to the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slotted {
    /// The point went into a slot that is still filling (or already complete).
    Open,
    /// A slot became complete: the newest complete slot is now age 0.
    Completed,
    /// Older than the newest slot, or the history has not started: ignored.
    Ignored,
}

impl SlotHistory {
    /// Starts the history for a series sampled every `step_ms` (the slot is an hour, or
    /// the step rounded to whole hours when coarser). Does nothing once started.
    pub fn start(&mut self, step_ms: f64) {
        if self.slot_ms > 0 || step_ms.is_nan() || step_ms <= 0.0 {
            return;
        }
        let hours = (step_ms / HOUR_MS as f64).round().max(1.0);
        self.slot_ms = HOUR_MS * hours.min(24.0 * 7.0) as i64;
        self.expected = (self.slot_ms as f64 / step_ms).round().clamp(1.0, 60_000.0) as u16;
    }

    /// Whether a restored history is in range.
    pub fn well_formed(&self) -> bool {
        usize::from(self.head) < SLOTS
            && usize::from(self.len) <= SLOTS
            && (0..=HOUR_MS * 24 * 7).contains(&self.slot_ms)
            && self.expected >= 1
            && self.scale.is_finite()
            && self.lo.is_finite()
            && self.within_var.is_finite()
    }

    /// Variance of single points around their slot's mean (0 with one point a slot).
    pub fn within_var(&self) -> f64 {
        f64::from(self.within_var)
    }

    /// Slot width in ms (0 before the start).
    pub fn slot_ms(&self) -> i64 {
        self.slot_ms
    }

    /// The slot holding `ts`.
    pub fn slot_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.slot_ms.max(1))
    }

    /// Complete slots held.
    pub fn complete_len(&self) -> usize {
        usize::from(self.len) - usize::from(self.len > 0 && !self.complete)
    }

    /// Index of the newest complete slot.
    pub fn newest_complete(&self) -> i64 {
        self.newest - i64::from(!self.complete)
    }

    /// The mean of the complete slot `age` slots before the newest complete one
    /// (0 = newest). `None` beyond what is held.
    pub fn get(&self, age: usize) -> Option<f64> {
        let age = age + usize::from(!self.complete);
        if age >= usize::from(self.len) {
            return None;
        }
        Some(self.decode(self.codes[(usize::from(self.head) + SLOTS - age) % SLOTS]))
    }

    /// The mean of the slot holding `ts` (complete or filling), interpolated between
    /// slot centres; `None` if it is not held.
    pub fn at(&self, ts: i64) -> Option<f64> {
        if self.slot_ms <= 0 || self.len == 0 {
            return None;
        }
        let centred = ts - self.slot_ms / 2;
        let slot = centred.div_euclid(self.slot_ms);
        let w = (centred - slot * self.slot_ms) as f64 / self.slot_ms as f64;
        let read = |s: i64| -> Option<f64> {
            let age = self.newest.checked_sub(s)?;
            if age < 0 || age >= i64::from(self.len) {
                return None;
            }
            let i = (usize::from(self.head) + SLOTS - age as usize) % SLOTS;
            Some(self.decode(self.codes[i]))
        };
        match (read(slot), read(slot + 1)) {
            (Some(a), Some(b)) => Some(a + w * (b - a)),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (None, None) => None,
        }
    }

    fn decode(&self, code: u16) -> f64 {
        f64::from(self.lo) + f64::from(code) * f64::from(self.scale)
    }

    fn encode(&self, value: f64) -> u16 {
        if self.scale <= 0.0 {
            return 0;
        }
        ((value - f64::from(self.lo)) / f64::from(self.scale))
            .round()
            .clamp(0.0, CODES) as u16
    }

    fn in_range(&self, value: f64) -> bool {
        let lo = f64::from(self.lo);
        value >= lo && value <= lo + CODES * f64::from(self.scale) && self.scale > 0.0
    }

    /// Re-encodes the held slots over a range that holds them (and `value`), with a
    /// quarter of the span to spare on each side. (In place: no allocation.)
    fn rescale(&mut self, value: Option<f64>) {
        let held = usize::from(self.len);
        let at = |age: usize| (usize::from(self.head) + SLOTS - age) % SLOTS;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in (0..held)
            .map(|age| self.decode(self.codes[at(age)]))
            .chain(value)
        {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() || !hi.is_finite() {
            return;
        }
        let old = (self.lo, self.scale);
        let span = (hi - lo).max(lo.abs().max(hi.abs()) * 1e-3).max(1e-9);
        self.lo = (lo - 0.25 * span) as f32;
        self.scale = (1.5 * span / CODES) as f32;
        for age in 0..held {
            let i = at(age);
            let v = f64::from(old.0) + f64::from(self.codes[i]) * f64::from(old.1);
            self.codes[i] = self.encode(v);
        }
    }

    fn write_newest(&mut self, value: f64) {
        if !self.in_range(value) {
            self.rescale(Some(value));
        }
        self.codes[usize::from(self.head)] = self.encode(value);
    }

    fn push(&mut self, value: f64) {
        self.head = ((usize::from(self.head) + 1) % SLOTS) as u16;
        self.len = (self.len + 1).min(SLOTS as u16);
        self.newest += 1;
        self.write_newest(value);
    }

    fn completed(&mut self) -> Slotted {
        self.complete = true;
        self.note_completion();
        Slotted::Completed
    }

    /// Counts a completed slot; once per ring length the range is rebuilt from the
    /// contents alone.
    fn note_completion(&mut self) {
        self.since_tighten += 1;
        if usize::from(self.since_tighten) >= SLOTS {
            self.since_tighten = 0;
            self.rescale(None);
        }
    }

    /// Adds one in-order point. A point in a later slot first completes the newest one
    /// (reported; the caller scores its models on it) and carries its value over any
    /// skipped slots; a gap longer than the ring starts it over.
    pub fn observe(&mut self, ts: i64, value: f64) -> Slotted {
        if self.slot_ms <= 0 || !value.is_finite() {
            return Slotted::Ignored;
        }
        let slot = self.slot_of(ts);
        if self.len == 0 || slot - self.newest >= SLOTS as i64 {
            *self = SlotHistory {
                slot_ms: self.slot_ms,
                expected: self.expected,
                within_var: self.within_var,
                ..SlotHistory::default()
            };
            self.newest = slot;
            self.len = 1;
            self.open_points = 1;
            self.open_sum = value as f32;
            self.write_newest(value);
            return self.settle();
        }
        if slot < self.newest {
            return Slotted::Ignored;
        }
        if slot > self.newest {
            let skipped = slot - self.newest - 1;
            let was_complete = self.complete;
            let last = self.decode(self.codes[usize::from(self.head)]);
            for _ in 0..skipped {
                self.push(last);
            }
            self.push(value);
            self.open_points = 1;
            self.open_sum = value as f32;
            self.complete = false;
            if self.settle() == Slotted::Completed {
                return Slotted::Completed;
            }
            if !was_complete && skipped == 0 {
                // The slot before this one ends now: it is the newest complete one.
                self.note_completion();
                return Slotted::Completed;
            }
            return Slotted::Open;
        }
        // The point against the mean of the slot's earlier points: n/(n+1) of its squared
        // deviation estimates the variance within a slot without bias.
        let n = f64::from(self.open_points);
        let dev = value - f64::from(self.open_sum) / n;
        let sample = (dev * dev * n / (n + 1.0)) as f32;
        self.within_var = if self.within_var > 0.0 {
            self.within_var + 0.02 * (sample - self.within_var)
        } else {
            sample
        };
        self.open_points = self.open_points.saturating_add(1);
        self.open_sum += value as f32;
        self.write_newest(f64::from(self.open_sum) / f64::from(self.open_points));
        if self.complete {
            return Slotted::Open;
        }
        self.settle()
    }

    /// A slot that has its expected points is complete.
    fn settle(&mut self) -> Slotted {
        if !self.complete && self.open_points >= self.expected {
            return self.completed();
        }
        Slotted::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_points_complete_their_slot_on_arrival() {
        let mut h = SlotHistory::default();
        h.start(HOUR_MS as f64);
        for i in 0..300 {
            assert_eq!(h.observe(i * HOUR_MS, i as f64), Slotted::Completed);
        }
        assert_eq!(h.complete_len(), SLOTS);
        assert!((h.get(0).unwrap() - 299.0).abs() < 0.01);
        assert!((h.get(24).unwrap() - 275.0).abs() < 0.01);
        assert_eq!(h.get(SLOTS), None);
    }

    #[test]
    fn sub_hour_points_are_averaged_per_hour() {
        let mut h = SlotHistory::default();
        let step = 5 * 60_000;
        h.start(step as f64);
        let mut completed = 0;
        for i in 0..(12 * 30) {
            let hour = i / 12;
            if h.observe(i * step, (hour * 10 + i % 2) as f64) == Slotted::Completed {
                completed += 1;
            }
        }
        assert_eq!(completed, 30);
        assert!((h.get(0).unwrap() - 290.5).abs() < 0.01, "{:?}", h.get(0));
        // Between the centres of hours 28 and 29.
        let mid = 29 * HOUR_MS;
        assert!((h.at(mid).unwrap() - 285.5).abs() < 0.01);
    }

    #[test]
    fn a_spike_widens_the_range_and_rolls_out() {
        let mut h = SlotHistory::default();
        h.start(HOUR_MS as f64);
        for i in 0..(3 * SLOTS as i64) {
            let v = if i == 10 {
                1e6
            } else {
                10.0 + (i % 24) as f64 * 0.01
            };
            h.observe(i * HOUR_MS, v);
        }
        // Long after the spike, the ring holds small values precisely.
        let v = h.get(0).unwrap();
        let expect = 10.0 + ((3 * SLOTS as i64 - 1) % 24) as f64 * 0.01;
        assert!((v - expect).abs() < 1e-4, "{v} vs {expect}");
    }

    #[test]
    fn a_gap_carries_the_last_value_and_a_long_one_restarts() {
        let mut h = SlotHistory::default();
        h.start(HOUR_MS as f64);
        for i in 0..10 {
            h.observe(i * HOUR_MS, 5.0);
        }
        h.observe(15 * HOUR_MS, 9.0);
        assert!((h.get(0).unwrap() - 9.0).abs() < 1e-3);
        assert!((h.get(1).unwrap() - 5.0).abs() < 1e-3);
        assert_eq!(h.complete_len(), 16);
        h.observe(1000 * HOUR_MS, 1.0);
        assert_eq!(h.complete_len(), 1);
    }
}
