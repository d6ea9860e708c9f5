//! Everything that touches Kafka: client options, topic layout, the generic stage
//! runner, the embedded broker and shutdown. Stage cores never import this module.

pub mod describe;
pub mod embedded;
pub mod kafka;
pub mod registry;
pub mod runner;
pub mod shutdown;
pub mod topics;

pub use kafka::KafkaOptions;
pub use runner::{
    run_stage, Clock, Gate, Guarantee, Progress, RunReport, RunnerConfig, RuntimeError,
    SharedProducer, DEFAULT_MAX_RECORD_BYTES,
};
pub use shutdown::Shutdown;
pub use topics::Topics;

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
