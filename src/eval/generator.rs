//! Labelled synthetic series: five shapes, six anomaly types, seeded.

use crate::analytics::seasonal::DAY_MS;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The shape of a series without anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A constant level with Gaussian noise.
    Flat,
    /// A linear trend with Gaussian noise.
    Trending,
    /// Daily cycle, weekday/weekend difference, Gaussian noise.
    Seasonal,
    /// A constant level with heavy-tailed (Laplace) noise.
    Noisy,
    /// Low event counts (Poisson) whose rate follows a daily cycle.
    Bursty,
}

/// Every shape.
pub const SHAPES: [Shape; 5] = [
    Shape::Flat,
    Shape::Trending,
    Shape::Seasonal,
    Shape::Noisy,
    Shape::Bursty,
];

/// An injected anomaly type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Injected {
    /// One point 10σ above.
    Spike,
    /// One point 10σ below.
    Dip,
    /// The level moves by 6σ and stays.
    LevelShift,
    /// A slope of 0.1σ per point starts.
    TrendChange,
    /// The noise grows fivefold for 200 points.
    VarianceChange,
    /// The value sticks for 60 points.
    Flatline,
}

/// Every anomaly type.
pub const INJECTED: [Injected; 6] = [
    Injected::Spike,
    Injected::Dip,
    Injected::LevelShift,
    Injected::TrendChange,
    Injected::VarianceChange,
    Injected::Flatline,
];

impl Shape {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Flat => "flat",
            Shape::Trending => "trending",
            Shape::Seasonal => "seasonal",
            Shape::Noisy => "noisy",
            Shape::Bursty => "bursty",
        }
    }
}

impl Injected {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Injected::Spike => "spike",
            Injected::Dip => "dip",
            Injected::LevelShift => "level shift",
            Injected::TrendChange => "trend change",
            Injected::VarianceChange => "variance change",
            Injected::Flatline => "flatline",
        }
    }

    /// Points after the start in which a detection counts.
    pub fn window(self) -> usize {
        match self {
            Injected::Spike | Injected::Dip => 1,
            Injected::LevelShift => 12,
            Injected::TrendChange => 100,
            Injected::VarianceChange => 200,
            Injected::Flatline => 60,
        }
    }
}

/// A generated series with its label.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Its shape.
    pub shape: Shape,
    /// What was injected, if anything.
    pub injected: Option<Injected>,
    /// Spacing of the points.
    pub step_ms: i64,
    /// (timestamp ms, value).
    pub points: Vec<(i64, f64)>,
    /// Index range [start, end) of the anomaly.
    pub window: Option<(usize, usize)>,
    /// Noise scale σ of the shape.
    pub sigma: f64,
}

/// The clean value (without noise) of a shape at point `i`.
fn clean(shape: Shape, ts: i64, i: usize) -> f64 {
    let day_phase = 2.0 * std::f64::consts::PI * (ts % DAY_MS) as f64 / DAY_MS as f64;
    // 1970-01-01 was a Thursday: 0 is Monday, 5 and 6 the weekend.
    let weekday = (ts / DAY_MS + 3) % 7;
    match shape {
        Shape::Flat | Shape::Noisy => 100.0,
        Shape::Trending => 20.0 + 0.02 * i as f64,
        Shape::Seasonal => 100.0 + 20.0 * day_phase.sin() + if weekday >= 5 { -15.0 } else { 0.0 },
        Shape::Bursty => 5.0 + 4.0 * day_phase.sin(),
    }
}

fn gaussian(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn laplace(rng: &mut SmallRng) -> f64 {
    let u: f64 = rng.random::<f64>() - 0.5;
    -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
}

fn poisson(rng: &mut SmallRng, lambda: f64) -> f64 {
    // Knuth's method: fine for the small rates used here.
    let l = (-lambda.max(0.0)).exp();
    let (mut k, mut p) = (0.0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1.0;
    }
}

/// Generates `days` days at 5-minute spacing; the anomaly (if any) starts at a random
/// point in the last third (after every model has warmed up).
pub fn generate(shape: Shape, injected: Option<Injected>, days: u32, seed: u64) -> Labelled {
    let mut rng = SmallRng::seed_from_u64(
        seed ^ (shape as u64) << 8 ^ injected.map_or(99, |k| k as u64) << 16,
    );
    let step_ms = 5 * 60_000;
    let n = (i64::from(days) * DAY_MS / step_ms) as usize;
    let sigma = match shape {
        Shape::Flat | Shape::Trending => 1.0,
        Shape::Seasonal => 2.0,
        Shape::Noisy => 3.0 * std::f64::consts::SQRT_2,
        Shape::Bursty => 5.0f64.sqrt(),
    };
    let start = rng.random_range(2 * n / 3..(n - 220).max(2 * n / 3 + 1));
    let window = injected.map(|k| (start, start + k.window()));
    let mut points = Vec::with_capacity(n);
    let mut stuck = None;
    for i in 0..n {
        let ts = 1_700_006_400_000 + i as i64 * step_ms; // a Wednesday, 00:00 UTC
        let base = clean(shape, ts, i);
        let noise_scale = match injected {
            Some(Injected::VarianceChange) if (start..start + 200).contains(&i) => 5.0,
            _ => 1.0,
        };
        let mut v = match shape {
            Shape::Noisy => base + 3.0 * laplace(&mut rng) * noise_scale,
            Shape::Bursty => {
                let x = poisson(&mut rng, base);
                base + (x - base) * noise_scale
            }
            _ => base + sigma * gaussian(&mut rng) * noise_scale,
        };
        let since = i as f64 - start as f64;
        match injected {
            Some(Injected::Spike) if i == start => v += 10.0 * sigma,
            Some(Injected::Dip) if i == start => v -= 10.0 * sigma,
            Some(Injected::LevelShift) if i >= start => v += 6.0 * sigma,
            Some(Injected::TrendChange) if i >= start => v += 0.1 * sigma * since,
            Some(Injected::Flatline) if (start..start + 60).contains(&i) => {
                v = *stuck.get_or_insert(v);
            }
            _ => {}
        }
        if shape == Shape::Bursty {
            v = v.max(0.0).round();
        }
        points.push((ts, v));
    }
    Labelled {
        shape,
        injected,
        step_ms,
        points,
        window,
        sigma,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_data() {
        let s = generate(Shape::Flat, Some(Injected::Spike), 14, 1);
        let (start, end) = s.window.unwrap();
        assert_eq!(end - start, 1);
        assert!(s.points[start].1 > 105.0);
        assert!(start > s.points.len() / 2);
        let f = generate(Shape::Seasonal, Some(Injected::Flatline), 14, 1);
        let (start, _) = f.window.unwrap();
        assert!(f.points[start..start + 60]
            .windows(2)
            .all(|w| w[0].1 == w[1].1));
        let b = generate(Shape::Bursty, None, 3, 1);
        assert!(b.points.iter().all(|p| p.1 >= 0.0 && p.1.fract() == 0.0));
        assert_eq!(
            generate(Shape::Noisy, None, 3, 5).points,
            generate(Shape::Noisy, None, 3, 5).points
        );
    }
}
