//! `scripts/kafka.sh restart` keeps the broker's data: a record written before the
//! restart is read after it, at the same address. Starts a broker of its own (in a temp
//! directory, on a free port), so it runs where real Kafka is available — when
//! `PERFPILOT_TEST_BOOTSTRAP` is set, as `.ci/run` does — and says SKIPPED otherwise.

mod common;

use common::{kafka_script as script, produce_lines, OwnBroker};
use std::process::Command;

#[test]
fn restart_keeps_the_data_and_the_address() {
    let Some((broker, bootstrap)) =
        OwnBroker::start_if_real_kafka("restart", "restart_keeps_the_data_and_the_address")
    else {
        return;
    };
    let kafka = [
        "--bootstrap-servers",
        bootstrap.as_str(),
        "--topic-prefix",
        "restart-",
    ];

    produce_lines(&kafka, br#"{"target":"kept","metric":"m","value":7}"#);

    let restarted = script(&broker.0, "restart");
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&restarted.stdout).trim(),
        bootstrap,
        "the same address after a restart"
    );
    let tail = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args([
            "tail",
            "metrics",
            "--from-beginning",
            "--max",
            "1",
            "--idle-timeout",
            "30s",
        ])
        .args(kafka)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tail.stdout);
    assert!(
        text.contains(r#""target":"kept""#),
        "the record written before the restart is gone: {text}{}",
        String::from_utf8_lossy(&tail.stderr)
    );
}
