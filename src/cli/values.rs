//! The command line's names for the library's plain enums: `clap::ValueEnum` is
//! implemented here, so clap stays in `cli/` and the library does not depend on it.

use crate::bench::latency::{Producers, Through};
use crate::pipeline::StageKind;
use crate::runtime::Guarantee;
use crate::telemetry::LogFormat;
use clap::builder::PossibleValue;
use clap::ValueEnum;

/// Implements `ValueEnum` for an enum: each variant's name on the command line and its
/// help line.
macro_rules! value_enum {
    ($ty:ty { $($variant:path => $name:literal, $help:literal;)+ }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($variant => PossibleValue::new($name).help($help),)+
                })
            }
        }
    };
}

value_enum!(StageKind {
    StageKind::Detector => "detector", "metrics → anomalies";
    StageKind::Forecaster => "forecaster", "metrics → forecasts";
    StageKind::Recommender => "recommender", "anomalies + forecasts → recommendations";
    StageKind::Coordinator => "coordinator", "recommendations → decisions";
});

value_enum!(Guarantee {
    Guarantee::AtLeastOnce => "at-least-once",
        "Nothing lost; after a crash, the outputs since the last commit may appear twice";
    Guarantee::ExactlyOnce => "exactly-once",
        "Nothing lost, nothing twice, for consumers reading with read_committed: outputs, state and input offsets commit in one Kafka transaction";
});

value_enum!(LogFormat {
    LogFormat::Plain => "plain", "Human-readable lines";
    LogFormat::Json => "json", "One JSON object per line";
});

value_enum!(Through {
    Through::Anomalies => "anomalies", "The anomalies topic, through the detector alone";
    Through::Decisions => "decisions",
        "The decisions topic, through detector, forecaster, recommender and coordinator";
});

value_enum!(Producers {
    Producers::Shared => "shared", "One producer for the four stages";
    Producers::PerStage => "per-stage", "A producer per stage, as separate processes have";
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_library_s_own() {
        for kind in StageKind::ALL {
            assert_eq!(
                kind.to_possible_value().map(|v| v.get_name().to_string()),
                Some(kind.as_str().to_string())
            );
        }
        for g in Guarantee::value_variants() {
            assert_eq!(
                g.to_possible_value().map(|v| v.get_name().to_string()),
                Some(g.as_str().to_string())
            );
        }
    }
}
