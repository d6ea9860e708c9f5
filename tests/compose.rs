//! No Docker engine runs here, so docker-compose.yml is kept right by care and by this
//! test: it parses, runs Apache Kafka in KRaft mode, creates the topics, runs every
//! stage from the repo's Dockerfile with a verb the binary knows, an agent, and
//! Prometheus scraping every stage.

use std::process::Command;

fn yaml(path: &str) -> serde_norway::Value {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{full} does not parse: {e}"))
}

fn command(service: &serde_norway::Value) -> Vec<String> {
    service["command"]
        .as_sequence()
        .map(|s| s.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn compose_has_the_broker_every_stage_an_agent_and_prometheus() {
    let mut doc = yaml("docker-compose.yml");
    doc.apply_merge().expect("merge keys resolve");
    let services = &doc["services"];

    let kafka = &services["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:4"),
        "official Apache Kafka 4.x image"
    );
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller"),
        "KRaft mode"
    );

    let topics = command(&services["topics"]);
    assert_eq!(&topics[..2], ["topics", "create"]);

    for stage in ["detector", "forecaster", "recommender", "coordinator"] {
        let s = &services[stage];
        assert_eq!(
            s["build"].as_str(),
            Some("."),
            "{stage} is built from the repo's Dockerfile"
        );
        assert_eq!(command(s), ["run", stage]);
        assert_eq!(
            s["environment"]["PERFPILOT_BOOTSTRAP_SERVERS"].as_str(),
            Some("kafka:9092")
        );
    }
    let agent = command(&services["agent"]);
    assert_eq!(agent[0], "agent");
    // A live agent stamps samples with the wall clock: event time must not run ahead of
    // it (stages dead-letter samples more than a day in the future). Either one sample
    // per --step (no --ticks-per-second), or ticks per second × step = 1 s.
    let flag = |name: &str| {
        agent
            .iter()
            .position(|a| a == name)
            .map(|i| agent[i + 1].clone())
    };
    if let Some(tps) = flag("--ticks-per-second") {
        let step = perfpilot::cli::parse_duration(&flag("--step").unwrap_or("10s".into())).unwrap();
        let per_second = step.as_secs_f64() * tps.parse::<f64>().unwrap();
        assert!(
            (per_second - 1.0).abs() < 1e-9,
            "the agent's event time runs {per_second}x the wall clock"
        );
    }
    // The build context leaves out what the image does not need (target/ is gigabytes).
    let ignore = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore"))
        .expect(".dockerignore exists");
    for path in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim().trim_matches('/') == path),
            ".dockerignore leaves out {path}"
        );
    }

    let prom = &services["prometheus"];
    assert!(prom["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus"));
    let scrape = yaml("deploy/prometheus.yml");
    let targets: Vec<&str> = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for stage in ["detector", "forecaster", "recommender", "coordinator"] {
        assert!(
            targets.contains(&format!("{stage}:9464").as_str()),
            "{stage} not scraped"
        );
    }
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).exists());
}

#[test]
fn the_image_caches_dependencies_exposes_metrics_and_checks_health() {
    let docker =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let deps = docker
        .find("echo 'fn main() {}' > src/main.rs")
        .expect("a dependency layer");
    let sources = docker.find("COPY src ./src").expect("the sources copied");
    assert!(
        deps < sources,
        "dependencies must build before the sources are copied"
    );
    assert!(docker.contains("EXPOSE 9464"));
    assert!(docker.contains("HEALTHCHECK") && docker.contains("perfpilot-healthcheck"));
    assert!(docker.contains("COPY deploy/healthcheck.sh"));
    let mut doc = yaml("docker-compose.yml");
    doc.apply_merge().unwrap();
    // Services that serve no stage metrics must not be reported unhealthy for it.
    for service in ["agent", "tail"] {
        assert_eq!(
            doc["services"][service]["healthcheck"]["disable"].as_bool(),
            Some(true),
            "{service}"
        );
    }
}

#[test]
fn compose_commands_are_valid_for_the_binary() {
    let mut doc = yaml("docker-compose.yml");
    doc.apply_merge().unwrap();
    for (name, service) in doc["services"].as_mapping().unwrap() {
        let args = command(service);
        if args.is_empty() || service["build"].as_str() != Some(".") {
            continue;
        }
        // `--help` after the verb's arguments makes clap validate them without running.
        let out = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "service {name:?}: `perfpilot {}` is rejected: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_shipped_config_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/perfpilot.toml");
    let cfg = perfpilot::config::Config::load(Some(std::path::Path::new(path))).unwrap();
    // The examples in it are read, not just tolerated.
    let shop = cfg.policies.pool("shop");
    assert_eq!(shop.policy.max_replicas_total, Some(40));
    assert_eq!(shop.freezes.len(), 2);
    assert!(
        shop.frozen_at(23 * 3_600_000).is_some(),
        "22:00-06:00 covers 23:00"
    );
    let checkout = cfg.policies.get("checkout");
    assert!(checkout.resources.contains_key("cpu_millicores"));
    assert!(checkout.tunables.contains_key("batch_size"));
    // The [ingest] table says the defaults as they are.
    assert_eq!(cfg.ingest, perfpilot::config::MappingConfig::default());
}
