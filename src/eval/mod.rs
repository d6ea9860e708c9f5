//! Evaluation of the detector and the forecaster on labelled synthetic series: a
//! generator of several shapes with injected anomalies of known type and window, and the
//! scores (precision, recall, F1, forecast error, interval coverage). Used by
//! `tests/evaluation.rs`, which asserts floors, and by `perfpilot evaluate`, which prints
//! the figures quoted in the README.

pub mod generator;
pub mod m4;
pub mod nab;
pub mod scoring;
