//! Pool policies: what a pool (the budget unit) may spend and when it may change.

use crate::config_error::ConfigError;
use serde::{Deserialize, Serialize};

/// Limits of one pool (`[pools.NAME]`; `[pools."*"]` applies to pools without a
/// section). Every limit is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolPolicy {
    /// Most replicas all targets of the pool may run together.
    pub max_replicas_total: Option<i64>,
    /// Most cost per hour the pool's replicas may add up to (policy cost units).
    pub max_cost_per_hour: Option<f64>,
    /// Most changes in progress at once (a change is in progress for
    /// `[coordinator] change_duration_secs` after its approval). Default: the
    /// coordinator's `max_concurrent_changes`.
    pub max_concurrent_changes: Option<u32>,
    /// Report decisions for this pool but do not act. Default false.
    pub dry_run: bool,
    /// Periods in which nothing in the pool changes (decisions are DEFERRED).
    pub freeze: Vec<FreezeWindow>,
}

/// A freeze (maintenance) window: a fixed period (`from`/`to`, RFC 3339), or a daily
/// one (`daily = "22:00-06:00"`, UTC; it may wrap midnight).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreezeWindow {
    /// Start of a fixed window, e.g. `2026-12-24T00:00:00Z`.
    pub from: Option<String>,
    /// End of a fixed window (exclusive).
    pub to: Option<String>,
    /// A daily window `HH:MM-HH:MM` in UTC.
    pub daily: Option<String>,
    /// Shown in the decision's reason.
    pub note: Option<String>,
}

/// A freeze window checked once at load, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Freeze {
    /// `[from, to)` in ms since the epoch.
    Fixed(i64, i64),
    /// `[from, to)` in ms since midnight UTC; `from > to` wraps midnight.
    Daily(i64, i64),
}

impl Freeze {
    /// Whether `ms` (event time) falls inside the window.
    pub fn contains(&self, ms: i64) -> bool {
        match *self {
            Freeze::Fixed(a, b) => (a..b).contains(&ms),
            Freeze::Daily(a, b) => {
                let t = ms.rem_euclid(86_400_000);
                if a <= b {
                    (a..b).contains(&t)
                } else {
                    t >= a || t < b
                }
            }
        }
    }
}

fn hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h * 60 + m) * 60_000)
}

impl FreezeWindow {
    /// The window in milliseconds, or why it is not valid.
    pub fn parse(&self, pool: &str) -> Result<Freeze, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("pool {pool}: freeze window {m}"));
        match (&self.from, &self.to, &self.daily) {
            (Some(from), Some(to), None) => {
                let at = |s: &str| {
                    crate::time::parse_timestamp(s).map_err(|e| bad(format!("time {s:?}: {e}")))
                };
                let (a, b) = (at(from)?, at(to)?);
                if a >= b {
                    return Err(bad(format!("{from} is not before {to}")));
                }
                Ok(Freeze::Fixed(a, b))
            }
            (None, None, Some(daily)) => {
                let (a, b) = daily
                    .split_once('-')
                    .and_then(|(a, b)| Some((hhmm(a)?, hhmm(b)?)))
                    .ok_or_else(|| bad(format!("daily {daily:?} is not HH:MM-HH:MM")))?;
                Ok(Freeze::Daily(a, b))
            }
            _ => Err(bad(
                "needs either from and to (RFC 3339) or daily = \"HH:MM-HH:MM\"".into(),
            )),
        }
    }
}

/// A pool policy with its freeze windows parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPool {
    /// The policy as written.
    pub policy: PoolPolicy,
    /// Its freeze windows.
    pub freezes: Vec<(Freeze, String)>,
}

impl ResolvedPool {
    /// Checks and parses a pool policy.
    pub fn new(name: &str, policy: PoolPolicy) -> Result<Self, ConfigError> {
        if let Some(b) = policy.max_replicas_total {
            if b < 0 {
                return Err(ConfigError::Invalid(format!(
                    "pool {name}: max_replicas_total {b} must be ≥ 0"
                )));
            }
        }
        if let Some(c) = policy.max_cost_per_hour {
            if !(c >= 0.0 && c.is_finite()) {
                return Err(ConfigError::Invalid(format!(
                    "pool {name}: max_cost_per_hour {c} must be ≥ 0"
                )));
            }
        }
        let freezes = policy
            .freeze
            .iter()
            .map(|w| {
                let note = w.note.clone().unwrap_or_else(|| {
                    w.daily.clone().unwrap_or_else(|| {
                        format!(
                            "{} to {}",
                            w.from.as_deref().unwrap_or("?"),
                            w.to.as_deref().unwrap_or("?")
                        )
                    })
                });
                w.parse(name).map(|f| (f, note))
            })
            .collect::<Result<_, _>>()?;
        Ok(ResolvedPool { policy, freezes })
    }

    /// The freeze window covering `ms`, if any (its note).
    pub fn frozen_at(&self, ms: i64) -> Option<&str> {
        self.freezes
            .iter()
            .find(|(f, _)| f.contains(ms))
            .map(|(_, n)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_windows_fixed_and_daily_wrapping_midnight() {
        let w = |from: Option<&str>, to: Option<&str>, daily: Option<&str>| FreezeWindow {
            from: from.map(String::from),
            to: to.map(String::from),
            daily: daily.map(String::from),
            note: None,
        };
        let fixed = w(
            Some("2026-12-24T00:00:00Z"),
            Some("2026-12-25T00:00:00Z"),
            None,
        )
        .parse("p")
        .unwrap();
        let xmas = crate::time::parse_timestamp("2026-12-24T13:00:00Z").unwrap();
        assert!(fixed.contains(xmas) && !fixed.contains(xmas + 86_400_000));
        let night = w(None, None, Some("22:00-06:00")).parse("p").unwrap();
        let h = 3_600_000;
        assert!(night.contains(23 * h) && night.contains(5 * h) && !night.contains(12 * h));
        assert!(!night.contains(6 * h) && night.contains(22 * h));
        assert!(w(None, None, Some("25:00-01:00")).parse("p").is_err());
        assert!(w(
            Some("2026-01-02T00:00:00Z"),
            Some("2026-01-01T00:00:00Z"),
            None
        )
        .parse("p")
        .is_err());
        assert!(w(None, None, None).parse("p").is_err());
    }
}
