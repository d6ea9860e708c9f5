//! What the demo prints: one line per interesting record as it arrives, and the summary.

use crate::agent::synthetic::{Incident, IncidentKind};
use crate::config::Policies;
use crate::event::{show, ActionKind, AnyRecord, Verdict, REPLICAS};
use crate::pipeline::StageKind;
use crate::runtime::RunReport;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// Formats records as readable lines, released in event-time order: records of the
/// four stages arrive out of step (a decision trails its forecast by two hops), so each
/// line waits until events `hold_ms` newer have been seen.
pub(super) struct Printer {
    start_ms: i64,
    policies: Policies,
    quiet: bool,
    last_forecast_print: HashMap<String, i64>,
    hold_ms: i64,
    /// Lines not released yet, by event time, then pipeline order (forecasts,
    /// anomalies, recommendations, decisions, dead letters) and text, so a run prints
    /// the same lines in the same order whatever order its records arrived in.
    pending: BTreeMap<(i64, u8, String, u64), ()>,
    arrivals: u64,
    /// Newest event time seen on any record.
    newest: i64,
    /// Lines released, in order, for the caller to print.
    ready: Vec<String>,
}

fn clock(start_ms: i64, ts: i64) -> String {
    let minutes = (ts - start_ms).max(0) / 60_000;
    format!(
        "day {} {:02}:{:02}",
        minutes / 1440,
        (minutes / 60) % 24,
        minutes % 60
    )
}

impl Printer {
    pub(super) fn new(start_ms: i64, policies: Policies, quiet: bool, hold_ms: i64) -> Self {
        Printer {
            start_ms,
            policies,
            quiet,
            last_forecast_print: HashMap::new(),
            hold_ms,
            pending: BTreeMap::new(),
            arrivals: 0,
            newest: i64::MIN,
            ready: Vec::new(),
        }
    }

    /// Takes a record: its line, if it has one, is released once events `hold_ms` newer
    /// have been seen (see [`Printer::take_ready`]).
    pub(super) fn print(&mut self, record: &AnyRecord) {
        if self.quiet {
            return;
        }
        let ts = match record {
            AnyRecord::Anomaly(a) => Some(a.timestamp_ms),
            AnyRecord::Forecast(f) => Some(f.generated_at_ms),
            AnyRecord::Recommendation(r) => Some(r.created_ms),
            AnyRecord::Decision(d) => Some(d.decided_ms),
            AnyRecord::MetricEvent(e) => Some(e.timestamp_ms),
            // Shown when it was dead-lettered (simulated time in the demo).
            AnyRecord::DeadLetter(d) => Some(d.dead_lettered_ms),
        };
        if let Some(ts) = ts {
            self.newest = self.newest.max(ts);
        }
        if let Some(line) = self.line(record) {
            let at = ts.unwrap_or(self.newest);
            let rank = match record {
                AnyRecord::MetricEvent(_) => 0,
                AnyRecord::Forecast(_) => 1,
                AnyRecord::Anomaly(_) => 2,
                AnyRecord::Recommendation(_) => 3,
                AnyRecord::Decision(_) => 4,
                AnyRecord::DeadLetter(_) => 5,
            };
            self.arrivals += 1;
            self.pending.insert((at, rank, line, self.arrivals), ());
        }
        let due = self.newest.saturating_sub(self.hold_ms);
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > due {
                break;
            }
            self.ready.push(entry.remove_entry().0 .2);
        }
    }

    /// Releases every line still held (the end of the run).
    pub(super) fn flush(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.ready
            .extend(rest.into_keys().map(|(_, _, line, _)| line));
    }

    /// The lines released so far, in event-time order.
    pub(super) fn take_ready(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ready)
    }

    fn line(&mut self, record: &AnyRecord) -> Option<String> {
        let at = |ts| clock(self.start_ms, ts);
        let line = match record {
            AnyRecord::Anomaly(a) => format!(
                "{}  ANOMALY    {:<11} {} = {:.2} (expected {:.2}, normal {:.2}..{:.2}) score {:.2} {:?}",
                at(a.timestamp_ms),
                a.target,
                a.metric,
                a.value,
                a.expected,
                a.lower,
                a.upper,
                a.score,
                a.severity
            ),
            AnyRecord::Forecast(f) => {
                let policy = self.policies.get(&f.target);
                let peak = f.peak()?;
                let warn = peak.value > policy.utilization_goal * (1.0 + policy.tolerance) || f.warning.is_some();
                let last = self.last_forecast_print.get(&f.target).copied().unwrap_or(i64::MIN / 2);
                if f.metric != policy.utilization_metric || !warn || f.generated_at_ms - last < 15 * 60_000 {
                    return None;
                }
                self.last_forecast_print.insert(f.target.clone(), f.generated_at_ms);
                let early = f.warning.map_or(String::new(), |w| {
                    format!(
                        "; EARLY WARNING: crosses {:.0}% around {} (p {:.2})",
                        w.threshold * 100.0,
                        at(w.eta_ms),
                        w.probability
                    )
                });
                format!(
                    "{}  FORECAST   {:<11} {} peaks at {:.0}% (90% interval {:.0}..{:.0}%) at {}, goal {:.0}% [{}]{early}",
                    at(f.generated_at_ms),
                    f.target,
                    f.metric,
                    peak.value * 100.0,
                    peak.lower * 100.0,
                    peak.upper * 100.0,
                    at(peak.timestamp_ms),
                    policy.utilization_goal * 100.0,
                    f.model
                )
            }
            AnyRecord::Recommendation(r) => format!(
                "{}  RECOMMEND  {:<11} {} {} {} → {} (confidence {:.2}, priority {}): {}",
                at(r.created_ms),
                r.target,
                r.kind.as_str(),
                r.resource,
                show(r.current, ""),
                show(r.proposed, ""),
                r.confidence,
                r.priority,
                r.reason
            ),
            AnyRecord::Decision(d) => format!(
                "{}  DECISION   {:<11} {:<8} [{}] {}",
                at(d.decided_ms),
                d.target,
                d.verdict.as_str().to_uppercase(),
                d.rule,
                d.reason
            ),
            AnyRecord::DeadLetter(d) => format!(
                "               DEAD-LETTER {} rejected {}/{}@{}: {} ({})",
                d.stage, d.source_topic, d.source_partition, d.source_offset, d.reason, d.detail
            ),
            AnyRecord::MetricEvent(_) => return None,
        };
        Some(line)
    }
}

/// What the demo's watcher saw on the output topics.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// (target, metric, event time, score) of each anomaly.
    pub anomalies: Vec<(String, String, i64, f64)>,
    /// Forecasts seen.
    pub forecasts: u64,
    /// (target, kind, created) of each recommendation.
    pub recommendations: Vec<(String, ActionKind, i64)>,
    /// Decisions by verdict.
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Decisions by rule.
    pub rules: BTreeMap<String, u64>,
    /// Dead letters by (stage, reason).
    pub dead_letters: BTreeMap<(String, String), u64>,
    /// Approved replica changes: (target, decided, up).
    pub replica_changes: Vec<(String, i64, bool)>,
}

/// A replica change reversing the target's previous one within this long is a flip-flop
/// (the same rule as `simulate`'s).
const FLIP_FLOP_MS: i64 = 15 * 60_000;

impl Observed {
    /// Approved replica changes that reversed the target's previous change within
    /// `FLIP_FLOP_MS` (15 minutes).
    pub fn flip_flops(&self) -> u64 {
        let mut changes: Vec<&(String, i64, bool)> = self.replica_changes.iter().collect();
        changes.sort_by_key(|c| c.1);
        let mut last: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
        let mut flips = 0;
        for (target, at, up) in changes {
            if let Some((t, u)) = last.get(target.as_str()) {
                if u != up && at - t < FLIP_FLOP_MS {
                    flips += 1;
                }
            }
            last.insert(target.as_str(), (*at, *up));
        }
        flips
    }
}

impl Observed {
    pub(super) fn record(&mut self, r: AnyRecord) {
        match r {
            AnyRecord::Anomaly(a) => {
                self.anomalies
                    .push((a.target, a.metric, a.timestamp_ms, a.score))
            }
            AnyRecord::Forecast(_) => self.forecasts += 1,
            AnyRecord::Recommendation(r) => {
                self.recommendations.push((r.target, r.kind, r.created_ms))
            }
            AnyRecord::Decision(d) => {
                *self.verdicts.entry(d.verdict).or_default() += 1;
                *self.rules.entry(d.rule.clone()).or_default() += 1;
                if d.verdict == Verdict::Approved && !d.dry_run && d.resource == REPLICAS {
                    if let Some(v) = d.final_value.filter(|v| *v != d.current) {
                        self.replica_changes
                            .push((d.target, d.decided_ms, v > d.current));
                    }
                }
            }
            AnyRecord::DeadLetter(d) => {
                *self.dead_letters.entry((d.stage, d.reason)).or_default() += 1
            }
            AnyRecord::MetricEvent(_) => {}
        }
    }
}

/// Everything the demo measured.
#[derive(Debug)]
pub struct DemoSummary {
    /// Metric events the agents published.
    pub produced: u64,
    /// Malformed records slipped in.
    pub poison: u64,
    /// Seconds the agents ran.
    pub agent_secs: f64,
    /// Ticks (simulated minutes) produced.
    pub ticks: u64,
    /// Event time per tick.
    pub step_ms: i64,
    /// Event time of the first tick.
    pub start_ms: i64,
    /// Incidents injected.
    pub incidents: Vec<Incident>,
    /// Each stage's report.
    pub reports: Vec<(StageKind, RunReport)>,
    /// What the watcher saw.
    pub observed: Observed,
}

impl DemoSummary {
    /// When an incident counts as detected: an anomaly on its series within its window
    /// (plus a few ticks), or — for a ramp — also a scale-out recommendation for the target.
    pub fn detection(&self, i: &Incident) -> Option<String> {
        let from = self.start_ms + i.start_tick as i64 * self.step_ms;
        let until = self.start_ms + (i.end_tick as i64 + 5) * self.step_ms;
        let anomaly = self
            .observed
            .anomalies
            .iter()
            .filter(|(t, m, ts, _)| *t == i.target && *m == i.metric && (from..=until).contains(ts))
            .min_by_key(|a| a.2);
        if let Some((_, _, ts, score)) = anomaly {
            return Some(format!(
                "anomaly after {} min, score {:.2}",
                (ts - from) / 60_000,
                score
            ));
        }
        if i.kind == IncidentKind::Ramp {
            let rec = self
                .observed
                .recommendations
                .iter()
                .filter(|(t, k, ts)| {
                    *t == i.target && *k == ActionKind::ScaleOut && (from..=until).contains(ts)
                })
                .min_by_key(|r| r.2);
            if let Some((_, _, ts)) = rec {
                return Some(format!(
                    "scale-out recommended after {} min",
                    (ts - from) / 60_000
                ));
            }
        }
        None
    }

    fn report(&self, kind: StageKind) -> RunReport {
        self.reports
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// The demo worked: every metric record reached the detector and forecaster and was
    /// either processed or dead-lettered, and every stage produced output.
    pub fn healthy(&self) -> bool {
        let input = self.produced + self.poison;
        [StageKind::Detector, StageKind::Forecaster]
            .iter()
            .all(|k| self.report(*k).consumed == input)
            && StageKind::ALL.iter().all(|k| self.report(*k).produced > 0)
    }

    /// Writes the summary.
    pub fn print(&self, w: &mut impl Write) -> std::io::Result<()> {
        let rate = self.produced as f64 / self.agent_secs.max(1e-9);
        writeln!(w)?;
        writeln!(
            w,
            "── perfpilot demo summary ─────────────────────────────────────────────"
        )?;
        writeln!(
            w,
            "agents published {} metric events in {:.1} s ({:.0} events/s; {} simulated minutes) and {} malformed records",
            self.produced, self.agent_secs, rate, self.ticks, self.poison
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "{:<12} {:>10} {:>10} {:>14} {:>10} {:>8}",
            "stage", "consumed", "processed", "dead-lettered", "outputs", "commits"
        )?;
        for (kind, r) in &self.reports {
            writeln!(
                w,
                "{:<12} {:>10} {:>10} {:>14} {:>10} {:>8}",
                kind.as_str(),
                r.consumed,
                r.processed,
                r.dead_lettered,
                r.produced,
                r.commits
            )?;
        }
        let det = self.report(StageKind::Detector);
        writeln!(
            w,
            "accounting: detector saw {} of {} records ({} processed + {} dead-lettered: {:?})",
            det.consumed,
            self.produced + self.poison,
            det.processed,
            det.dead_lettered,
            det.dead_letter_reasons
        )?;
        writeln!(w)?;
        writeln!(w, "incidents injected → detected")?;
        let mut detected = 0;
        for i in &self.incidents {
            let d = self.detection(i);
            detected += usize::from(d.is_some());
            writeln!(
                w,
                "  {:<12} {:<11} {:<16} at minute {:>4}: {}",
                i.kind.as_str(),
                i.target,
                i.metric,
                i.start_tick,
                d.unwrap_or_else(|| "NOT detected".into())
            )?;
        }
        let in_incident = |t: &String, m: &String, ts: i64| {
            self.incidents.iter().any(|i| {
                let from = self.start_ms + i.start_tick as i64 * self.step_ms;
                let until = self.start_ms + (i.end_tick as i64 + 5) * self.step_ms;
                i.target == *t && i.metric == *m && (from..=until).contains(&ts)
            })
        };
        let other: Vec<_> = self
            .observed
            .anomalies
            .iter()
            .filter(|(t, m, ts, _)| !in_incident(t, m, *ts))
            .collect();
        let on_hosts = other
            .iter()
            .filter(|(t, ..)| t.starts_with("host-"))
            .count();
        writeln!(
            w,
            "  {detected} of {} incidents detected; {} anomalies in total: {} on services outside the incidents \
             (mostly load and replica changes), {on_hosts} false alarms on the noise-only background hosts",
            self.incidents.len(),
            self.observed.anomalies.len(),
            other.len() - on_hosts
        )?;
        writeln!(w)?;
        let verdicts: Vec<String> = self
            .observed
            .verdicts
            .iter()
            .map(|(v, n)| format!("{n} {}", v.as_str()))
            .collect();
        let rules: Vec<String> = self
            .observed
            .rules
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            w,
            "{} forecasts, {} recommendations, decisions: {} (by rule: {})",
            self.observed.forecasts,
            self.observed.recommendations.len(),
            if verdicts.is_empty() {
                "none".into()
            } else {
                verdicts.join(", ")
            },
            rules.join(", ")
        )?;
        writeln!(
            w,
            "replica changes approved: {}, flip-flops: {} (a change reversing the target's previous one within 15 min)",
            self.observed.replica_changes.len(),
            self.observed.flip_flops()
        )?;
        let dl: Vec<String> = self
            .observed
            .dead_letters
            .iter()
            .map(|((s, r), n)| format!("{s}/{r} {n}"))
            .collect();
        writeln!(
            w,
            "dead letters: {}",
            if dl.is_empty() {
                "none".into()
            } else {
                dl.join(", ")
            }
        )?;
        if !self.healthy() {
            writeln!(w, "WARNING: not every record was accounted for, or a stage produced nothing (see above)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MetricEvent;

    fn anomaly_at(minute: i64) -> AnyRecord {
        AnyRecord::Anomaly(crate::event::Anomaly {
            id: format!("a{minute}"),
            target: format!("t{minute}"),
            pool: "p".into(),
            metric: "latency".into(),
            labels: Default::default(),
            timestamp_ms: minute * 60_000,
            value: 3.0,
            expected: 1.0,
            lower: 0.5,
            upper: 1.5,
            score: 0.9,
            severity: crate::event::Severity::Warning,
            direction: crate::event::Direction::Up,
            detectors: vec!["residual".into()],
            reason: "r".into(),
        })
    }

    #[test]
    fn lines_come_out_in_event_time_order_once_held_long_enough() {
        let mut p = Printer::new(0, Policies::default(), false, 10 * 60_000);
        for minute in [5, 3, 4] {
            p.print(&anomaly_at(minute));
        }
        assert!(p.take_ready().is_empty(), "nothing is 10 minutes old yet");
        // A metric event at minute 14 releases what is older than minute 4.
        p.print(&AnyRecord::MetricEvent(MetricEvent::sample(
            "a",
            "b",
            "c",
            14 * 60_000,
            1.0,
        )));
        let ready = p.take_ready();
        assert_eq!(ready.len(), 2, "{ready:?}");
        assert!(ready[0].starts_with("day 0 00:03") && ready[1].starts_with("day 0 00:04"));
        p.print(&anomaly_at(1));
        p.flush();
        let rest = p.take_ready();
        // Later than the hold: printed when it comes, then the rest in order.
        assert!(
            rest[0].starts_with("day 0 00:01") && rest[1].starts_with("day 0 00:05"),
            "{rest:?}"
        );
    }
}

#[cfg(test)]
mod flip_flop_tests {
    use super::*;

    #[test]
    fn a_reversal_within_15_minutes_is_a_flip_flop() {
        let min = 60_000;
        let o = Observed {
            replica_changes: vec![
                ("a".into(), 0, true),
                ("b".into(), 5 * min, true),
                ("a".into(), 10 * min, false), // reverses a within 10 min
                ("a".into(), 40 * min, true),  // 30 min later: not one
                ("b".into(), 19 * min, true),  // same direction: not one
                ("b".into(), 21 * min, false), // reverses b within 2 min (out of order)
            ],
            ..Observed::default()
        };
        assert_eq!(o.flip_flops(), 2);
    }
}
