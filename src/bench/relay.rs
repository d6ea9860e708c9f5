//! The no-op relay: every metric event is written out unchanged, through the same
//! runner (decode, validate, batch, produce, commit) as the stages.

use crate::event::MetricEvent;
use crate::stage::{Keyed, RecordMeta, Stage};

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
