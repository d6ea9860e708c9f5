//! Streaming analytics with no I/O: windows, robust statistics and forecasting models.
//! Everything here is updated per event and cheap; the stage cores compose these parts.

pub mod detect;
pub mod forecast;
pub mod history;
pub mod holt;
pub mod likelihood;
pub mod novelty;
pub mod reorder;
pub mod robust;
pub mod seasonal;
pub mod slots;
pub mod stats;
