//! A recommendation in the making: what a recommender decided, before it gets its id,
//! pool and expiry.

use crate::event::{ActionKind, Evidence, Recommendation};
use crate::hash::stable_hash;
use crate::policy::TargetPolicy;

/// What one recommender proposes for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Kind of action.
    pub kind: ActionKind,
    /// What changes.
    pub resource: String,
    /// Unit of `current` and `proposed`.
    pub unit: String,
    /// Value believed current.
    pub current: f64,
    /// Value proposed.
    pub proposed: f64,
    /// The recommender's name.
    pub recommender: &'static str,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Urgency 0..=100.
    pub priority: i32,
    /// Why.
    pub reason: String,
    /// What it should achieve.
    pub expected_effect: String,
    /// Benefit per hour in cost units.
    pub expected_benefit: f64,
    /// Change of cost per hour.
    pub cost_delta_per_hour: f64,
    /// The inputs behind it.
    pub evidence: Vec<Evidence>,
    /// Event time of the newest evidence.
    pub created_ms: i64,
}

impl Draft {
    /// A draft of `kind` on `resource` by `recommender`, its other fields empty (to be
    /// filled with struct update syntax).
    pub fn blank(kind: ActionKind, resource: &str, unit: &str, recommender: &'static str) -> Self {
        Draft {
            kind,
            resource: resource.to_string(),
            unit: unit.to_string(),
            current: 0.0,
            proposed: 0.0,
            recommender,
            confidence: 0.0,
            priority: 0,
            reason: String::new(),
            expected_effect: String::new(),
            expected_benefit: 0.0,
            cost_delta_per_hour: 0.0,
            evidence: Vec::new(),
            created_ms: 0,
        }
    }

    /// The recommendation, with a stable id: the same inputs always give the same id.
    pub fn finish(self, target: &str, pool: String, policy: &TargetPolicy) -> Recommendation {
        let refs: Vec<&[u8]> = self.evidence.iter().map(|e| e.ref_id.as_bytes()).collect();
        let created = self.created_ms.to_le_bytes();
        let proposed = self.proposed.to_bits().to_le_bytes();
        let mut parts: Vec<&[u8]> = vec![
            target.as_bytes(),
            self.kind.as_str().as_bytes(),
            self.resource.as_bytes(),
            self.recommender.as_bytes(),
            &proposed,
            &created,
        ];
        parts.extend(refs);
        let id = format!("rec-{:016x}", stable_hash(&parts));
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        Recommendation {
            id,
            target: target.to_string(),
            pool,
            kind: self.kind,
            resource: self.resource,
            unit: self.unit,
            current: finite(self.current),
            proposed: finite(self.proposed),
            recommender: self.recommender.to_string(),
            confidence: finite(self.confidence).clamp(0.0, 1.0),
            priority: self.priority.clamp(0, 100),
            reason: self.reason,
            expected_effect: self.expected_effect,
            expected_benefit: finite(self.expected_benefit).max(0.0),
            cost_delta_per_hour: finite(self.cost_delta_per_hour),
            evidence: self.evidence,
            created_ms: self.created_ms,
            expires_ms: self.created_ms + (policy.recommendation_ttl_secs * 1000) as i64,
        }
    }
}
