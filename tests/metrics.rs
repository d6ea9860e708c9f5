//! The Prometheus endpoint of a running stage, scraped as Prometheus scrapes it: the
//! content type, counter and histogram conventions, buckets that fit each histogram,
//! the commit timing of a default (at-least-once) run, consumer lag and build info.

mod common;

use common::{free_port, produce_lines, scrape, TestCluster};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn missing<'a>(body: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|w| !body.contains(w))
        .collect()
}

/// `GET path` on `addr`, the body of the response.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Kills the child process when dropped (also when an assertion fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real `prometheus` against `target` (scrapes every second) until the target
/// is up and a query returns perfpilot's build info. `Ok(None)`: not installed;
/// `Ok(Some(n))`: the series the query returned; `Err`: what Prometheus said instead.
fn real_prometheus_scrape(target: &str) -> Result<Option<usize>, String> {
    let probe = Command::new("prometheus").arg("--version").output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("perfpilot-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: perfpilot\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    let _guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer from Prometheus");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let Some(targets) = http_get(&web, "/api/v1/targets") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&targets).map_err(|e| e.to_string())?;
        let Some(t) = v["data"]["activeTargets"].get(0) else {
            continue;
        };
        last = format!("target {}: {}", t["health"], t["lastError"]);
        if t["health"] != "up" || t["lastError"] != "" {
            continue;
        }
        let Some(answer) = http_get(&web, "/api/v1/query?query=perfpilot_build_info") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
        let found = v["data"]["result"].as_array().map_or(0, Vec::len);
        if found > 0 {
            return Ok(Some(found));
        }
        last = format!("query answered {answer}");
    }
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    Err(format!("{last}\n{log}"))
}

#[test]
fn a_stage_exposes_counters_fitting_buckets_commit_time_lag_and_build_info() {
    let c = TestCluster::embedded("metrics", 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let kafka = [
        "--bootstrap-servers",
        c.kafka.bootstrap_servers.as_str(),
        "--topic-prefix",
        c.topics.prefix.as_str(),
    ];
    let log_path =
        std::env::temp_dir().join(format!("perfpilot-metrics-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["run", "detector"])
        .args(kafka)
        .args(["--metrics-addr", &addr, "--commit-interval", "500ms"])
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = String::new();
    for i in 0..400 {
        lines.push_str(&format!(
            "{{\"target\":\"svc-{}\",\"metric\":\"latency\",\"value\":{},\"timestamp_ms\":{}}}\n",
            i % 4,
            100 + i % 7,
            1_700_000_000_000_i64 + 60_000 * (i / 4)
        ));
    }
    produce_lines(&kafka, lines.as_bytes());
    let version = env!("CARGO_PKG_VERSION");
    let build_info = format!("perfpilot_build_info{{version=\"{version}\"}} 1");
    let wanted = [
        // What Prometheus reads as its text format 0.0.4 (it has no version parameter).
        "content-type: text/plain",
        "# TYPE perfpilot_core_events_total counter",
        "# TYPE perfpilot_commit_seconds histogram",
        // Commit buckets reach the commit timeouts; per-record ones start at 1 µs;
        // restores (seconds to minutes) reach 10 min.
        "perfpilot_commit_seconds_bucket{stage=\"detector\",le=\"30\"}",
        "perfpilot_processing_seconds_bucket{stage=\"detector\",le=\"0.000001\"}",
        "perfpilot_state_restore_seconds_bucket{stage=\"detector\",le=\"600\"}",
        "# TYPE perfpilot_consumer_lag_records gauge",
        "perfpilot_consumer_lag_records{stage=\"detector\",topic=\"",
        build_info.as_str(),
        // Every record read before the stage is stopped (the stop line's counts are
        // checked below); the series above can all be there before the first record.
        "perfpilot_records_in_total{stage=\"detector\"} 400",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let result = loop {
        if let Some(r) = scrape(&addr) {
            // Header names are case-insensitive.
            let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
            last = format!("{}\n\n{body}", head.to_ascii_lowercase());
            if missing(&last, &wanted).is_empty() {
                break Ok(body.to_string());
            }
        }
        if Instant::now() > deadline {
            break Err(missing(&last, &wanted));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // A real Prometheus (Debian's package; .ci/run installs it) scrapes the same endpoint
    // and reads it without complaint.
    let prometheus = real_prometheus_scrape(&addr);
    // The image's HEALTHCHECK script, against the same live endpoint.
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    let check = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/healthcheck.sh"
        ))
        .env("PERFPILOT_METRICS_PORT", &port)
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "healthcheck failed: {said}");
    assert_eq!(said.trim(), "healthy");
    // Nothing listening: unhealthy, saying why.
    let check = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/healthcheck.sh"
        ))
        .env("PERFPILOT_METRICS_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("nothing serves metrics"));
    // Logs written to a file carry no terminal colours.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("stage started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
    // JSON logs: one object per line, fields as plain values, not Rust Debug renderings.
    let mut stopped = None;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for (name, field) in v["fields"].as_object().into_iter().flatten() {
            let text = field.as_str().unwrap_or_default();
            assert!(
                !text.contains("Some(") && !text.contains(" { ") && !text.starts_with('['),
                "field {name} is a Debug string: {line}"
            );
        }
        if v["fields"]["message"] == "stage started" {
            assert_eq!(
                v["fields"]["inputs"],
                format!("{}metrics", c.topics.prefix),
                "{line}"
            );
            assert_eq!(v["fields"]["guarantee"], "at-least-once", "{line}");
        }
        if v["fields"]["message"] == "stage stopped" {
            stopped = Some(v["fields"]["consumed"].as_u64());
        }
    }
    assert_eq!(
        stopped,
        Some(Some(400)),
        "the stop line carries the counts:\n{log}"
    );
    match prometheus {
        Ok(Some(series)) => assert!(series >= 1, "Prometheus stored no perfpilot_build_info"),
        Ok(None) => eprintln!(
            "SKIPPED the real Prometheus scrape: `prometheus` is not installed \
             (apt-get install prometheus; .ci/run installs it)"
        ),
        Err(e) => panic!("a real Prometheus could not scrape the stage: {e}"),
    }
    match result {
        Ok(body) => {
            assert!(
                !body.contains("# TYPE perfpilot_core_events gauge"),
                "core counters must not be gauges:\n{body}"
            );
        }
        Err(m) => panic!("the exposition lacks {m:?}:\n{last}"),
    }
}
