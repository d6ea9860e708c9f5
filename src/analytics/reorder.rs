//! A small per-series reorder buffer: points are held until the allowed lateness has
//! passed them (in event time), so a point that arrives out of order but within the
//! lateness is fed to an order-dependent model in its right place.
//!
//! Bounded: at most [`REORDER_CAPACITY`] points wait; when more arrive, the oldest is
//! released early (it may then be followed by an even older late point, which the
//! caller counts as too late).

use serde::{Deserialize, Serialize};

/// Points a series may hold back.
pub const REORDER_CAPACITY: usize = 8;

/// Held points, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReorderBuffer {
    ts: [i64; REORDER_CAPACITY],
    value: [f64; REORDER_CAPACITY],
    len: u8,
}

/// What became of an offered point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Held in its place.
    Held,
    /// A point with the same timestamp is already held: dropped.
    Duplicate,
    /// No room (only when the caller did not release after the last offer): dropped.
    Full,
}

impl ReorderBuffer {
    /// Points held. (Bounded by the capacity even if a damaged restored state says
    /// more: every slice of the arrays goes through this.)
    pub fn len(&self) -> usize {
        usize::from(self.len).min(REORDER_CAPACITY)
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest timestamp held.
    pub fn newest(&self) -> Option<i64> {
        self.len().checked_sub(1).map(|i| self.ts[i])
    }

    /// Inserts a point in time order. The caller releases what is due right after (the
    /// buffer is never left full: see [`Self::release`]).
    pub fn offer(&mut self, ts: i64, value: f64) -> Offered {
        let n = self.len();
        let at = self.ts[..n].partition_point(|&t| t < ts);
        if at < n && self.ts[at] == ts {
            return Offered::Duplicate;
        }
        if n == REORDER_CAPACITY {
            return Offered::Full;
        }
        self.ts.copy_within(at..n, at + 1);
        self.value.copy_within(at..n, at + 1);
        self.ts[at] = ts;
        self.value[at] = value;
        self.len += 1;
        Offered::Held
    }

    /// Takes the oldest point when it is at or before `watermark`, or when the buffer
    /// is at capacity − 1 or more (room must stay for the next offer).
    pub fn release(&mut self, watermark: i64) -> Option<(i64, f64)> {
        let n = self.len();
        if n == 0 || (self.ts[0] > watermark && n < REORDER_CAPACITY - 1) {
            return None;
        }
        let out = (self.ts[0], self.value[0]);
        self.ts.copy_within(1..n, 0);
        self.value.copy_within(1..n, 0);
        self.len = (n - 1) as u8;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut ReorderBuffer, watermark: i64) -> Vec<i64> {
        std::iter::from_fn(|| b.release(watermark).map(|p| p.0)).collect()
    }

    #[test]
    fn releases_in_time_order_once_the_lateness_has_passed() {
        let mut b = ReorderBuffer::default();
        let mut out = Vec::new();
        for ts in [10, 30, 20, 40, 25, 70, 60, 100] {
            assert_eq!(b.offer(ts, ts as f64), Offered::Held);
            // Lateness 30: what is 30 older than the newest is due.
            let watermark = b.newest().unwrap() - 30;
            out.extend(drain(&mut b, watermark));
        }
        assert_eq!(out, vec![10, 20, 25, 30, 40, 60, 70]);
        assert_eq!(b.offer(100, 0.0), Offered::Duplicate);
        assert_eq!(drain(&mut b, i64::MAX), vec![100]);
    }

    #[test]
    fn stays_bounded_when_the_lateness_never_passes() {
        let mut b = ReorderBuffer::default();
        let mut released = 0;
        for ts in 0..100 {
            assert_eq!(b.offer(ts, 0.0), Offered::Held);
            released += drain(&mut b, i64::MIN).len();
            assert!(b.len() < REORDER_CAPACITY);
        }
        assert_eq!(released + b.len(), 100);
    }
}
