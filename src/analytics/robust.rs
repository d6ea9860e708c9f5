//! An event-time sliding window with robust location and scale (median and MAD).
//!
//! Points are kept sorted by event time, bounded both by a time span and by a count.
//! Points that arrive out of order within the allowed lateness are inserted in place;
//! later ones and duplicate timestamps are refused, so gaps and disorder never corrupt
//! the window.

use std::collections::VecDeque;

/// What happened to a point offered to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Inserted (possibly out of order, within the lateness bound).
    Accepted,
    /// Same timestamp as a point already in the window: dropped.
    Duplicate,
    /// Older than the newest point minus the allowed lateness: dropped.
    TooLate,
}

/// A time- and count-bounded window of `(timestamp_ms, value)` points.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EventTimeWindow {
    points: VecDeque<(i64, f64)>,
}

impl EventTimeWindow {
    /// Number of points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Newest event time held.
    pub fn newest(&self) -> Option<i64> {
        self.points.back().map(|p| p.0)
    }

    /// Values in time order.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.1)
    }

    /// Offers a point; evicts what falls out of `span_ms` or beyond `max_points`.
    pub fn admit(
        &mut self,
        ts: i64,
        value: f64,
        span_ms: i64,
        max_points: usize,
        lateness_ms: i64,
    ) -> Admit {
        match self.points.back() {
            None => self.points.push_back((ts, value)),
            Some(&(last, _)) if ts > last => self.points.push_back((ts, value)),
            Some(&(last, _)) => {
                if ts < last.saturating_sub(lateness_ms) {
                    return Admit::TooLate;
                }
                // Binary search on the sorted timestamps.
                match self.points.binary_search_by_key(&ts, |p| p.0) {
                    Ok(_) => return Admit::Duplicate,
                    Err(i) => self.points.insert(i, (ts, value)),
                }
            }
        }
        let newest = self.points.back().map_or(ts, |p| p.0);
        while let Some(&(oldest, _)) = self.points.front() {
            if oldest < newest.saturating_sub(span_ms) || self.points.len() > max_points {
                self.points.pop_front();
            } else {
                break;
            }
        }
        Admit::Accepted
    }

    /// Median and MAD of the values, using `scratch` to avoid allocating per call.
    /// `None` when the window is empty.
    pub fn median_mad(&self, scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
        if self.points.is_empty() {
            return None;
        }
        scratch.clear();
        scratch.extend(self.values());
        let med = median_in_place(scratch);
        for v in scratch.iter_mut() {
            *v = (*v - med).abs();
        }
        let mad = median_in_place(scratch);
        Some((med, mad))
    }
}

/// Median of a non-empty slice, reordering it.
fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if n % 2 == 1 {
        upper
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        let mut w = EventTimeWindow::default();
        for (i, v) in [1.0, 2.0, 3.0, 4.0, 100.0].into_iter().enumerate() {
            w.admit(i as i64, v, 1_000, 100, 0);
        }
        let (med, mad) = w.median_mad(&mut Vec::new()).unwrap();
        assert_eq!(med, 3.0);
        assert_eq!(mad, 1.0);
    }

    #[test]
    fn out_of_order_within_lateness_is_placed_in_order() {
        let mut w = EventTimeWindow::default();
        assert_eq!(w.admit(10, 1.0, 1_000, 100, 5), Admit::Accepted);
        assert_eq!(w.admit(20, 2.0, 1_000, 100, 5), Admit::Accepted);
        assert_eq!(w.admit(17, 3.0, 1_000, 100, 5), Admit::Accepted);
        assert_eq!(w.admit(14, 3.0, 1_000, 100, 5), Admit::TooLate);
        assert_eq!(w.admit(17, 9.0, 1_000, 100, 5), Admit::Duplicate);
        assert_eq!(w.values().collect::<Vec<_>>(), vec![1.0, 3.0, 2.0]);
    }

    #[test]
    fn bounded_by_span_and_count() {
        let mut w = EventTimeWindow::default();
        for i in 0..50 {
            w.admit(i * 10, i as f64, 100, 1_000, 0);
        }
        assert_eq!(w.len(), 11); // 390..=490
        for i in 50..100 {
            w.admit(i * 10, i as f64, 1_000_000, 8, 0);
        }
        assert_eq!(w.len(), 8);
    }
}
