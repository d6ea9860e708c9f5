//! The two baselines of `bench throughput`, through the same runner (decode, validate,
//! batch, produce, commit) as the stages: the no-op relay writes every metric event out
//! unchanged; the sink reads and drops them, the bound for a stage that writes little.

use crate::event::MetricEvent;
use crate::stage::{Keyed, RecordMeta, Stage};

impl crate::stage::Counted for MetricEvent {}

impl Keyed for MetricEvent {
    fn key(&self) -> &str {
        &self.target
    }
}

/// Consume → produce unchanged.
#[derive(Debug, Default)]
pub struct Relay;

impl Stage for Relay {
    type Input = MetricEvent;
    type Output = MetricEvent;

    fn name(&self) -> &'static str {
        "relay"
    }

    fn process(&mut self, input: MetricEvent, _meta: &RecordMeta, out: &mut Vec<MetricEvent>) {
        out.push(input);
    }
}

/// Consume → drop: what reading alone costs.
#[derive(Debug, Default)]
pub struct Sink;

impl Stage for Sink {
    type Input = MetricEvent;
    type Output = MetricEvent;

    fn name(&self) -> &'static str {
        "sink"
    }

    fn process(&mut self, _input: MetricEvent, _meta: &RecordMeta, _out: &mut Vec<MetricEvent>) {}
}
