//! Small numeric helpers shared by detectors, forecasters and the recommender.

/// Standard normal cumulative distribution function, Φ(x).
///
/// Uses the complementary error function approximation of Numerical Recipes (erfcc),
/// whose relative error is below 1.2e-7 everywhere: ample for confidences.
pub fn normal_cdf(x: f64) -> f64 {
    1.0 - normal_tail(x)
}

/// Upper tail of the standard normal, 1 − Φ(x), computed directly so that tiny tails
/// (1e-10 and below) keep their relative precision.
pub fn normal_tail(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z.abs());
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if z >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

/// Two-sided z value for a central interval of the given coverage (0.5 < level < 1),
/// by bisection on [`normal_cdf`]. Called once per configuration, not per event.
pub fn z_for_level(level: f64) -> f64 {
    let target = 0.5 + level.clamp(0.0, 0.999_999) / 2.0;
    let (mut lo, mut hi) = (0.0_f64, 10.0_f64);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

pub use crate::hash::stable_hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.644_854) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn z_for_level_inverts() {
        assert!((z_for_level(0.9) - 1.644_854).abs() < 1e-4);
        assert!((z_for_level(0.95) - 1.959_964).abs() < 1e-4);
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_eq!(stable_hash(&[b"x"]), stable_hash(&[b"x"]));
    }
}
