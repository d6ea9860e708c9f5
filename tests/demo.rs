//! `perfpilot demo`, as the README's first command runs it (shorter, quieter): it must
//! finish, account for every record, find the injected incidents, and tell the same
//! story every time for the same seed.

use std::process::{Command, Output};

fn demo(seed: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["demo", "--duration", "20s", "--fleet", "20", "--seed", seed])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap()
}

/// A run's output without what depends on the machine: the broker's address, the wall
/// time and rate of the agents, and the number of commits (timed by the wall clock).
fn story(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{text}");
    text.lines()
        .filter(|l| !l.starts_with("perfpilot demo on"))
        .map(|l| {
            if let Some((head, _)) = l.split_once(" metric events in ") {
                head.to_string()
            } else if l.starts_with(|c: char| c.is_ascii_lowercase())
                && l.split_whitespace().count() == 6
                && l.split_whitespace()
                    .skip(1)
                    .all(|w| w.parse::<u64>().is_ok())
            {
                // A stage's row: name, consumed, processed, dead-lettered, outputs, commits.
                l.split_whitespace().take(5).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_same_seed_tells_the_same_story() {
    // Two runs at once: they compete for the machine, so their timing differs.
    let runs: Vec<_> = (0..2).map(|_| std::thread::spawn(|| demo("7"))).collect();
    let stories: Vec<String> = runs
        .into_iter()
        .map(|r| story(&r.join().unwrap()))
        .collect();
    assert!(
        stories[0].contains("perfpilot demo summary"),
        "{}",
        stories[0]
    );
    assert!(stories[0].matches("ANOMALY").count() > 0, "{}", stories[0]);
    if stories[0] != stories[1] {
        let diff: Vec<String> = stories[0]
            .lines()
            .zip(stories[1].lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!("two runs with seed 7 differ:\n{}", diff.join("\n"));
    }
}

#[test]
fn demo_runs_and_summarises() {
    let out = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args([
            "demo",
            "--duration",
            "20s",
            "--fleet",
            "20",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        // What the README tells users to export for the stages: the demo must not follow
        // it to a cluster (only its own --bootstrap-servers picks one).
        .env("PERFPILOT_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("perfpilot demo summary"), "{text}");
    // The lines of the run print in event-time order ("day D HH:MM" first).
    let minutes: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("day ")?;
            let (day, rest) = rest.split_once(' ')?;
            let (h, m) = rest.get(..5)?.split_once(':')?;
            Some(
                day.parse::<u32>().ok()? * 1440
                    + h.parse::<u32>().ok()? * 60
                    + m.parse::<u32>().ok()?,
            )
        })
        .collect();
    assert!(minutes.len() > 5, "too few lines:\n{text}");
    assert!(
        minutes.windows(2).all(|w| w[0] <= w[1]),
        "lines out of event-time order:\n{text}"
    );
    // Its logs default to warnings: no info lines interleaved with the show.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(" INFO "), "{err}");
    assert!(
        text.contains("on the embedded broker"),
        "the demo did not use its embedded broker:\n{text}"
    );
    // Every record reached the detector: processed or dead-lettered (3 poison records).
    let accounting = text
        .lines()
        .find(|l| l.starts_with("accounting:"))
        .expect("accounting line");
    let words: Vec<&str> = accounting.split_whitespace().collect();
    assert_eq!(words[3], words[5], "{accounting}");
    assert!(accounting.contains("3 dead-lettered"), "{accounting}");
    assert!(text.contains("4 of 4 incidents detected"), "{text}");
    assert!(
        text.contains("approved"),
        "no decision was approved:\n{text}"
    );
    assert!(
        text.contains("replica changes approved: ") && text.contains(", flip-flops: "),
        "{text}"
    );
}
