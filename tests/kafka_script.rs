//! `scripts/kafka.sh restart` keeps the broker's data: a record written before the
//! restart is read after it, at the same address. Starts a broker of its own (in a temp
//! directory, on a free port), so it runs where real Kafka is available — when
//! `PERFPILOT_TEST_BOOTSTRAP` is set, as `.ci/run` does — and says SKIPPED otherwise.

mod common;

use common::{kafka_script as script, OwnBroker};
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn restart_keeps_the_data_and_the_address() {
    if std::env::var_os("PERFPILOT_TEST_BOOTSTRAP").is_none() {
        eprintln!("SKIPPED restart_keeps_the_data_and_the_address: needs real Kafka (PERFPILOT_TEST_BOOTSTRAP)");
        return;
    }
    let (broker, bootstrap) = OwnBroker::start("restart");
    let kafka = [
        "--bootstrap-servers",
        bootstrap.as_str(),
        "--topic-prefix",
        "restart-",
    ];

    let mut produce = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .arg("produce")
        .args(kafka)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"target":"kept","metric":"m","value":7}"#)
        .unwrap();
    let out = produce.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
