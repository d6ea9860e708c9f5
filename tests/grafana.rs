//! The Grafana dashboard (deploy/grafana) is provisioned in the compose stack on its
//! Prometheus, and every metric its panels query, with the label values they select,
//! is served by the stages: the whole pipeline runs (`perfpilot demo`, which serves the
//! stages' metrics) and its `/metrics` is scraped while it runs.

mod common;

use common::{free_port, scrape};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn dashboard() -> serde_json::Value {
    let path = format!("{}/deploy/grafana/dashboards/perfpilot.json", root());
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn expressions(d: &serde_json::Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// The perfpilot metric names an expression reads.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("perfpilot_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn compose_provisions_the_dashboard_on_the_stacks_prometheus() {
    let compose: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(format!("{}/docker-compose.yml", root())).unwrap(),
    )
    .unwrap();
    let grafana = &compose["services"]["grafana"];
    assert!(grafana["image"]
        .as_str()
        .unwrap()
        .starts_with("grafana/grafana:"));
    let volumes: Vec<&str> = grafana["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(volumes.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"));
    assert!(volumes.contains(&"./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    let datasource: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(format!(
            "{}/deploy/grafana/provisioning/datasources/prometheus.yml",
            root()
        ))
        .unwrap(),
    )
    .unwrap();
    let ds = &datasource["datasources"][0];
    assert!(compose["services"]["prometheus"].is_mapping());
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
    let provider: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(format!(
            "{}/deploy/grafana/provisioning/dashboards/perfpilot.yml",
            root()
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
    // Every panel reads the provisioned datasource.
    let d = dashboard();
    for p in d["panels"].as_array().unwrap() {
        assert_eq!(
            p["datasource"]["uid"],
            ds["uid"].as_str().unwrap(),
            "{}",
            p["title"]
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_served_by_a_running_pipeline() {
    let d = dashboard();
    let exprs = expressions(&d);
    let titles: BTreeSet<&str> = exprs.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Throughput per stage (records/s)",
        "Consumer lag per stage (records)",
        "Dead letters by reason (per minute)",
        "Decisions by verdict and rule (last hour)",
        "Active series per stage",
        "State restore time, p99",
        "Anomalies per target (top 10, last hour)",
        "Recommendations per target (top 10, last hour)",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?}");
    }

    let addr = format!("127.0.0.1:{}", free_port());
    let mut demo = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["demo", "--duration", "20s", "--fleet", "20", "--seed", "42"])
        .args(["--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Series as served: `name{labels}` without the value, from every scrape while it ran.
    let mut served = BTreeSet::new();
    let started = Instant::now();
    while demo.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(300) {
        if let Some(body) = scrape(&addr) {
            for line in body.lines().filter(|l| l.starts_with("perfpilot_")) {
                if let Some((series, _value)) = line.rsplit_once(' ') {
                    served.insert(series.to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(demo.wait().unwrap().success(), "the demo failed");
    let has = |name: &str, label: &str| {
        served.iter().any(|s| {
            let metric = s.split('{').next().unwrap_or("");
            metric == name && s.contains(label)
        })
    };
    for (title, expr) in &exprs {
        for name in metrics_in(expr) {
            assert!(
                has(&name, ""),
                "{title:?} queries {name}, which no stage served"
            );
        }
    }
    for record in ["Anomaly", "Recommendation"] {
        assert!(
            has(
                "perfpilot_target_outputs_total",
                &format!("record=\"{record}\"")
            ),
            "no {record} counted per target"
        );
    }
    assert!(
        has("perfpilot_decisions_total", "verdict=\"approved\""),
        "no approved decision counted by verdict and rule"
    );
}
