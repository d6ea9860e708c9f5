//! Producing metrics: a publisher for any agent, and synthetic workloads for the demo,
//! tests and benches.

pub mod publish;
pub mod synthetic;
