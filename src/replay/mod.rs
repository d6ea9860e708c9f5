//! `perfpilot replay`: the detector and forecaster cores over historical CSV data, with
//! no Kafka. Reading and timestamp parsing live in [`input`]; the runs in [`run`].

pub mod corpus;
pub mod input;
pub mod plot;
pub mod run;

pub use corpus::{replay_corpus, CorpusReport};
pub use input::{parse_timestamp, Layout, Row, RowError};
pub use run::{
    detect_rows, replay_horizon, replay_scores, short, Backtest, Columns, HorizonAccuracy, Summary,
};
