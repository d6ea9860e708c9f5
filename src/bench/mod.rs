//! `perfpilot bench`: measurements anyone can reproduce.
//!
//! - `throughput`: against a Kafka cluster, the same events are read by a no-op relay
//!   (consume → produce unchanged, through the same runner: the physical limit of this
//!   runner on this broker) and by each metric stage, one after the other in the same
//!   run; the ratio stage / relay is the figure that counts on a noisy machine.
//! - `peer`: the detector beside its Kafka Streams peer, each in its own process:
//!   events/s, events per CPU second and peak memory.
//! - `memory`: resident memory per active series of the detector and forecaster cores at
//!   10 k, 100 k and 1 M series, and the process's base RSS.

pub mod latency;
pub mod memory;
pub mod peer;
pub mod process;
pub mod relay;
pub mod throughput;
