//! The binary as a user runs it: help texts, `produce` with bad lines, `tail`,
//! `topics list` and configuration errors.

mod common;

use common::TestCluster;
use std::io::Write;
use std::process::{Command, Stdio};

fn perfpilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_perfpilot"))
}

#[test]
fn every_verb_explains_itself() {
    let cases: [(&[&str], &str); 8] = [
        (&["--help"], "performance autopilot"),
        (&["run", "--help"], "same group id to scale out"),
        (
            &["produce", "--help"],
            "bad line is reported with its number",
        ),
        (&["tail", "--help"], "JSON lines"),
        (&["topics", "--help"], "create"),
        (&["topics", "create", "--help"], "--partitions"),
        (&["demo", "--help"], "embedded broker"),
        (&["replay", "--help"], "--horizon"),
    ];
    for (args, needle) in cases {
        let out = perfpilot().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(
            text.contains(needle),
            "{args:?} help lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn help_names_every_bench_and_what_latency_measures() {
    let out = perfpilot().args(["bench", "-h"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for verb in ["throughput", "latency", "memory"] {
        assert!(text.contains(verb), "bench -h lacks {verb}:\n{text}");
    }
    let out = perfpilot()
        .args(["bench", "latency", "-h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decisions topic"), "{text}");
}

#[test]
fn demo_properties_need_a_cluster() {
    let out = perfpilot()
        .args(["demo", "-X", "security.protocol=SASL_SSL"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--bootstrap-servers"), "{err}");
}

#[test]
fn topics_list_needs_no_broker() {
    let out = perfpilot()
        .args(["topics", "list", "--topic-prefix", "x."])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(text.contains("x.decisions") && text.contains("cleanup.policy=compact"));
}

#[test]
fn a_bad_config_is_an_error_that_names_the_key() {
    let dir = std::env::temp_dir().join(format!("perfpilot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[targets.api]\nmax_replica = 3\n").unwrap();
    let out = perfpilot()
        .args([
            "run",
            "detector",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--metrics-addr",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("max_replica"), "{err}");
}

#[test]
fn an_unreachable_broker_is_named_once_with_the_right_hint() {
    // Nothing listens on port 1: librdkafka retries the connection several times a
    // second and reports each failure (about 1 000 ERROR lines in 30 s before).
    let mut child = perfpilot()
        .args([
            "produce",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "-X",
            "message.timeout.ms=8000",
            "--log-format",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"target\":\"a\",\"metric\":\"m\",\"value\":1}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let lines = err.lines().count();
    assert!(lines <= 12, "{lines} lines on stderr:\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("127.0.0.1:1"),
        "does not name the address: {last}"
    );
    assert!(last.contains("check --bootstrap-servers"), "{last}");
    assert!(!err.contains("security settings"), "wrong hint:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_reports_bad_lines_and_tail_prints_the_good_ones() {
    let c = TestCluster::embedded("cli", 2);
    let lines = [
        r#"{"target":"api","metric":"cpu_utilization","value":0.5,"pool":"web"}"#,
        r#"{"target":"api","metric":"cpu_utilization"}"#,
        r#"{"target":"db","metric":"latency_p99_ms","value":12.5,"labels":{"zone":"a"},"timestamp_ms":1700000000000}"#,
        "this is not json",
        "",
        r#"{"target":"","metric":"m","value":1}"#,
    ];
    let mut child = perfpilot()
        .args([
            "produce",
            "--bootstrap-servers",
            &c.kafka.bootstrap_servers,
            "--topic-prefix",
            &c.topics.prefix,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    // Line 7 is not UTF-8; line 8, after it, must still be published.
    let mut tail = b"\n{\"target\":\"x\xff\",\"metric\":\"m\",\"value\":1}\n".to_vec();
    tail.extend_from_slice(br#"{"target":"cache","metric":"hit_ratio","value":0.9}"#);
    child.stdin.as_mut().unwrap().write_all(&tail).unwrap();
    drop(child.stdin.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "some lines were bad: {err}");
    for bad in ["line 2:", "line 4:", "line 6:", "line 7: not UTF-8"] {
        assert!(err.contains(bad), "{bad} not reported: {err}");
    }
    assert!(err.contains("published 3 events"), "{err}");

    let bootstrap = c.kafka.bootstrap_servers.clone();
    let prefix = c.topics.prefix.clone();
    let out = tokio::task::spawn_blocking(move || {
        perfpilot()
            .args([
                "tail",
                "metrics",
                "--from-beginning",
                "--max",
                "3",
                "--idle-timeout",
                "20s",
            ])
            .args(["--bootstrap-servers", &bootstrap, "--topic-prefix", &prefix])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    let mut targets: Vec<&str> = records
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, ["api", "cache", "db"]);
    assert!(records.iter().all(|r| r["type"] == "MetricEvent"));
    let db = records.iter().find(|r| r["target"] == "db").unwrap();
    assert_eq!(db["labels"]["zone"], "a");
    assert_eq!(db["timestamp_ms"], 1_700_000_000_000_i64);

    // The compact text format: one line per record, where it was read, its key as text.
    let bootstrap = c.kafka.bootstrap_servers.clone();
    let prefix = c.topics.prefix.clone();
    let out = tokio::task::spawn_blocking(move || {
        perfpilot()
            .args(["tail", "metrics", "--from-beginning", "--max", "3"])
            .args(["--idle-timeout", "20s", "--format", "text"])
            .args(["--bootstrap-servers", &bootstrap, "--topic-prefix", &prefix])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    let db = text
        .lines()
        .find(|l| l.contains(" target=db "))
        .expect("db's line");
    assert!(
        db.starts_with(&format!("{}metrics/", c.topics.prefix)),
        "{db}"
    );
    assert!(db.contains(" key=") && db.contains(" MetricEvent "), "{db}");
    assert!(db.contains(r#" labels={"zone":"a"}"#), "{db}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_stage_cleanly_within_its_deadline() {
    let c = TestCluster::embedded("sigterm", 2);
    let child = perfpilot()
        .args([
            "run",
            "detector",
            "--bootstrap-servers",
            &c.kafka.bootstrap_servers,
            "--topic-prefix",
            &c.topics.prefix,
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--shutdown-timeout", "5s"])
        .args([
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it join the group (the mock assigns after about 3 s).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("SIGTERM received"), "{err}");
    assert!(err.contains("detector: consumed 0"), "{err}");
}

#[test]
fn replay_scores_every_row_and_reports_bad_ones() {
    let dir = std::env::temp_dir().join(format!("perfpilot-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.csv");
    let mut text = String::from("timestamp,series,value\n");
    for i in 0..120 {
        let ts = format!("2024-05-01 {:02}:{:02}:00", i / 60, i % 60);
        let spike = if i == 100 { 400.0 } else { 0.0 };
        text.push_str(&format!("{ts},api,{}\n", 100.0 + (i % 7) as f64 + spike));
        text.push_str(&format!("{ts},db,{}\n", 20.0 + (i % 3) as f64));
    }
    text.push_str("2024-05-01 03:00:00,api,oops\n");
    std::fs::write(&input, text).unwrap();
    let out = perfpilot().arg("replay").arg(&input).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 242:") && err.contains("oops"), "{err}");
    assert!(
        err.contains("Read 241 rows of 2 series (long format)"),
        "{err}"
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "timestamp,series,value,anomaly_score,anomaly,expected,lower,upper"
    );
    assert_eq!(lines.len(), 241);
    let spike: Vec<&str> = lines[201].split(',').collect();
    assert_eq!((spike[0], spike[1]), ("2024-05-01 01:40:00", "api"));
    assert!(spike[3].parse::<f64>().unwrap() > 0.9, "{}", lines[201]);
    assert_eq!(spike[4], "1", "the spike is where an anomaly is emitted");

    let out = perfpilot()
        .arg("replay")
        .arg(&input)
        .args(["--horizon", "10"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 21, "{csv}");
    assert!(csv.starts_with("series,timestamp,forecast,lower,upper,actual"));
}

#[test]
fn replay_messages_read_right_for_one_series_and_name_the_series_to_plot() {
    let dir = std::env::temp_dir().join(format!("perfpilot-replay1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let single = dir.join("one.csv");
    let mut text = String::from("timestamp,value\n");
    for i in 0..120 {
        let spike = if i == 100 { 400.0 } else { 0.0 };
        text.push_str(&format!(
            "{},{}\n",
            1_700_000_000 + 60 * i,
            100.0 + (i % 7) as f64 + spike
        ));
    }
    std::fs::write(&single, text).unwrap();
    let out = perfpilot().arg("replay").arg(&single).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Read 120 rows of 1 series; 0 bad rows skipped"),
        "{err}"
    );
    assert!(err.contains(". 1 anomaly."), "{err}");
    assert!(!err.contains("most in"), "one series needs no name: {err}");
    // Computed numbers are short (six significant digits), not 16.
    let csv = String::from_utf8_lossy(&out.stdout);
    let last = csv.lines().last().unwrap_or("");
    let expected = last.split(',').nth(4).unwrap_or("");
    assert!(
        !expected.is_empty() && expected.len() <= 8,
        "long number {expected:?} in {last}"
    );

    // The input's column names come back.
    let named = dir.join("named.csv");
    std::fs::write(&named, "ts,cpu\n1700000000,1\n1700000060,2\n").unwrap();
    let out = perfpilot().arg("replay").arg(&named).output().unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.starts_with("ts,cpu,anomaly_score,anomaly,expected,lower,upper\n"),
        "{csv}"
    );

    let long = dir.join("long.csv");
    let mut text = String::from("timestamp,series,value\n");
    for i in 0..50 {
        for s in ["api", "db"] {
            text.push_str(&format!("{},{s},{}\n", 1_700_000_000 + 60 * i, 10 + i % 3));
        }
    }
    std::fs::write(&long, text).unwrap();
    let svg = dir.join("plot.svg");
    let plot = |series: &str| {
        perfpilot()
            .arg("replay")
            .arg(&long)
            .args(["-o", "/dev/null", "--plot"])
            .arg(&svg)
            .args(["--plot-series", series])
            .output()
            .unwrap()
    };
    let out = plot("nosuch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(r#"no series "nosuch" in the input; --plot-series takes one of: "api", "db""#),
        "{err}"
    );

    // The plot names its series and shows the time of day on its axis (the 50 minutes
    // from 2023-11-14 22:13 UTC), not hours since the first point.
    let out = plot("db");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.contains("db: values, expected range and anomalies"));
    let time_of_day = |l: &str| l.len() == 5 && l.starts_with("22:") && l.as_bytes()[2] == b':';
    assert!(
        drawing.contains("time (UTC)") && drawing.lines().any(time_of_day),
        "no time-of-day ticks"
    );
    assert!(!drawing.contains("hours since"));
}

#[test]
fn simulate_says_what_its_counts_count() {
    let out = perfpilot()
        .args(["simulate", "--days", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "perfpilot: recommendations, by the recommender that made them: forecast_hpa "
        ),
        "{text}"
    );
    assert!(
        text.contains("perfpilot: decisions, by verdict: approved "),
        "{text}"
    );
    assert!(
        !text.contains("perfpilot (forecast_hpa"),
        "unlabelled counts: {text}"
    );
}

#[test]
fn simulate_replays_a_recorded_trace_and_reports_its_bad_rows_and_gaps() {
    let dir = std::env::temp_dir().join(format!("perfpilot-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("trace.csv");
    // Two days of two services every 5 minutes: a daily peak at 15:00 (checkout) and a
    // flat load (search); a bad row; search silent for three hours on day 2.
    let mut text = String::from("timestamp,series,value\n");
    for i in 0..(2 * 288) {
        let ts = 1_714_521_600 + i * 300; // 2024-05-01 00:00 UTC
        let hour = (i % 288) as f64 / 12.0;
        let peak = 300.0 * (-((hour - 15.0) / 2.0).powi(2)).exp();
        text.push_str(&format!("{ts},checkout,{:.1}\n", 100.0 + peak));
        if !(300..336).contains(&i) {
            text.push_str(&format!("{ts},search,{}\n", 50 + i % 3));
        }
    }
    text.push_str("1714600000,search,lots\n");
    std::fs::write(&input, text).unwrap();
    let run = || {
        perfpilot()
            .args(["simulate", "--trace"])
            .arg(&input)
            .output()
            .unwrap()
    };
    let (a, b) = (run(), run());
    let (out, err) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&a.stderr),
    );
    assert_eq!(
        a.status.code(),
        Some(1),
        "a bad row was skipped: {out}\n{err}"
    );
    assert!(err.contains("line 1118:") && err.contains("lots"), "{err}");
    assert!(
        err.contains("series search: no point from 2024-05-02 00:55 to 2024-05-02 04:00"),
        "{err}"
    );
    assert!(
        out.contains("2 services from") && out.contains("2024-05-01 00:00 to 2024-05-02 23:55"),
        "{out}"
    );
    for policy in ["perfpilot ", "HPA-style reactive ", "static peak "] {
        assert!(
            out.lines().any(|l| l.starts_with(policy)),
            "{policy}: {out}"
        );
    }
    // The same trace gives the same table (only the run time differs).
    let table = |o: &std::process::Output| -> String {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("SLO: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(table(&a), table(&b));
    // The plot of one service: what it needed and what each policy gave it.
    let svg = dir.join("checkout.svg");
    let plotted = perfpilot()
        .args(["simulate", "--trace"])
        .arg(&input)
        .arg("--plot")
        .arg(&svg)
        .args(["--plot-service", "checkout"])
        .output()
        .unwrap();
    assert_eq!(plotted.status.code(), Some(1));
    let drawing = std::fs::read_to_string(&svg).unwrap();
    for text in [
        "checkout: replicas needed at the 60 % goal",
        "perfpilot",
        "HPA-style reactive",
        "static peak",
        "SLO-violation minutes so far",
    ] {
        assert!(drawing.contains(text), "{text} is not in the plot");
    }
    let unknown = perfpilot()
        .args(["simulate", "--trace"])
        .arg(&input)
        .args(["--plot", "/dev/null", "--plot-service", "cart"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("the services are: checkout, search"), "{err}");
    // A period outside the trace is an error that says so.
    let none = perfpilot()
        .args(["simulate", "--trace"])
        .arg(&input)
        .args(["--from", "2030-01-01"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(err.contains("no point in the period asked for"), "{err}");
}

#[test]
fn simulate_runs_utilization_at_recorded_replicas_beside_perfpilot_in_dry_run() {
    let dir = std::env::temp_dir().join(format!("perfpilot-util-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("util.csv");
    // Two days of one service every 5 minutes, as it ran: 2 replicas at night, 4 by day
    // (08:00-20:00); demand 100 requests/s at night and 300 by day, so utilization 0.5
    // and 0.75 at 100 requests/s per replica. Two bad rows.
    let mut text = String::from("timestamp,series,value,replicas\n");
    for i in 0..(2 * 288) {
        let ts = 1_714_521_600 + i * 300; // 2024-05-01 00:00 UTC
        let hour = (i % 288) / 12;
        let (util, replicas) = if (8..20).contains(&hour) {
            (0.75, 4)
        } else {
            (0.5, 2)
        };
        text.push_str(&format!("{ts},web,{util},{replicas}\n"));
    }
    text.push_str("1714600000,web,0.5,0\n1714600300,web,0.5\n");
    std::fs::write(&input, text).unwrap();
    let out = perfpilot()
        .args(["simulate", "--trace"])
        .arg(&input)
        .args([
            "--replicas-column",
            "replicas",
            "--capacity-per-replica",
            "100",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad rows were skipped: {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("line 578: replicas \"0\" is not a whole number of replicas above 0"),
        "{stderr}"
    );
    assert!(stderr.contains("line 579:"), "{stderr}");
    assert!(
        stdout.contains("web: 100 requests/s per replica, starts with 2 replicas"),
        "{stdout}"
    );
    // A row's numbers: SLO minutes, slack, cost, changes, flip-flops.
    let row = |name: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {stdout}"));
        line[name.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    // What ran: night to day and back, twice: four changes, none reversed in 15 min,
    // and the replicas it paid for (2 × 12 h + 4 × 12 h a day).
    let recorded = row("recorded replicas");
    assert_eq!((recorded[3], recorded[4]), (4.0, 0.0), "{stdout}");
    assert!(
        (recorded[2] - 144.0).abs() < 1.0,
        "cost {}: {stdout}",
        recorded[2]
    );
    let dry = row("perfpilot dry run");
    assert!(
        dry[3] > 0.0,
        "perfpilot decided nothing beside the recorded run: {stdout}"
    );
    for policy in ["perfpilot ", "HPA-style reactive ", "static peak "] {
        assert!(
            stdout.lines().any(|l| l.starts_with(policy)),
            "{policy}: {stdout}"
        );
    }
    assert!(
        stdout.contains("perfpilot dry run: beside recorded replicas"),
        "{stdout}"
    );

    // The column must be named in a header.
    std::fs::write(&input, "1714521600,web,0.5,2\n").unwrap();
    let out = perfpilot()
        .args(["simulate", "--trace"])
        .arg(&input)
        .args(["--replicas-column", "replicas"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the first line must be a header"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_describe_shows_the_cluster_and_each_stage_group_s_lag() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let Some(c) = TestCluster::real("topics_describe", 3).await else {
        return;
    };
    let kafka = [
        "--bootstrap-servers",
        &c.kafka.bootstrap_servers,
        "--topic-prefix",
        &c.topics.prefix,
    ];
    common::produce_lines(
        &kafka,
        b"{\"target\":\"a\",\"metric\":\"m\",\"value\":1}\n{\"target\":\"b\",\"metric\":\"m\",\"value\":2}\n",
    );
    let describe = || {
        let out = perfpilot()
            .args(["topics", "describe", "--group", "my-subscriber"])
            .args(kafka)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = describe();
    let metrics = c.topics.metrics();
    let line = text.lines().find(|l| l.starts_with(&metrics)).unwrap_or("");
    assert!(
        line.contains("partitions=3 replication=1 records=2"),
        "{text}"
    );
    assert!(line.contains("cleanup.policy=delete"), "{text}");
    let detector = format!("group {}detector", c.topics.prefix);
    let group_line = |text: &str, group: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with(&metrics))
            .find(|l| l.trim_start().starts_with(group))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        group_line(&text, &detector).contains("lag=2 (no commits yet)"),
        "{text}"
    );
    assert!(
        group_line(&text, "group my-subscriber").contains("lag=2"),
        "{text}"
    );
    let state = format!("{}detector-state", c.topics.prefix);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&state) && l.contains("cleanup.policy=compact")),
        "{text}"
    );

    // The detector group commits the end of every partition: its lag is 0.
    let consumer: BaseConsumer = c
        .kafka
        .consumer_config(&format!("{}detector", c.topics.prefix))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        let (_, high) = consumer
            .fetch_watermarks(&metrics, p, std::time::Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(&metrics, p, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    let text = describe();
    let line = group_line(&text, &detector);
    assert!(
        line.contains("lag=0") && !line.contains("no commits"),
        "{text}"
    );
    assert!(
        group_line(&text, "group my-subscriber").contains("lag=2"),
        "{text}"
    );
}
