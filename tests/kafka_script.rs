//! `scripts/kafka.sh restart` keeps the broker's data: a record written before the
//! restart is read after it, at the same address. Starts a broker of its own (in a temp
//! directory, on a free port), so it runs where real Kafka is available — when
//! `PERFPILOT_TEST_BOOTSTRAP` is set, as `.ci/run` does — and says SKIPPED otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn script(dir: &Path, verb: &str) -> Output {
    Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
        .arg(verb)
        .env("PERFPILOT_KAFKA_DIR", dir)
        .env_remove("PERFPILOT_KAFKA_PORT")
        .output()
        .unwrap()
}

/// Stops the test's broker however the test ends.
struct Broker(PathBuf);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = script(&self.0, "stop");
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn restart_keeps_the_data_and_the_address() {
    if std::env::var_os("PERFPILOT_TEST_BOOTSTRAP").is_none() {
        eprintln!("SKIPPED restart_keeps_the_data_and_the_address: needs real Kafka (PERFPILOT_TEST_BOOTSTRAP)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("perfpilot-restart-{}", std::process::id()));
    let broker = Broker(dir.clone());
    let started = script(&broker.0, "start");
    let err = String::from_utf8_lossy(&started.stderr);
    assert!(started.status.success(), "{err}");
    let bootstrap = String::from_utf8_lossy(&started.stdout).trim().to_string();
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
