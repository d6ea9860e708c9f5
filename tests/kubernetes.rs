//! deploy/ renders with kustomize into resources that Kubernetes' own API schemas accept
//! (`scripts/validate-k8s.sh`: kustomize and kubernetes-validate, fetched from the Go
//! module proxy and PyPI), and what it deploys is what the stages need: a StatefulSet per
//! stage whose pods' stable names are their `--instance-id`, probes, resource requests,
//! a PodDisruptionBudget and a headless Service each, and the repository's
//! perfpilot.toml in the ConfigMap they mount. Needs Go and Python 3 (CI has both) and
//! says SKIPPED without them.

use serde_norway::Value;
use std::process::Command;

const STAGES: [&str; 4] = ["detector", "forecaster", "recommender", "coordinator"];

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("version")
        .output()
        .or_else(|_| Command::new(tool).arg("--version").output())
        .is_ok()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_manifests_are_valid_and_deploy_every_stage_as_exactly_once_needs() {
    if !has("go") || !has("python3") {
        eprintln!("SKIPPED the_manifests_are_valid_and_deploy_every_stage_as_exactly_once_needs: needs Go and Python 3 to fetch kustomize and kubernetes-validate");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/validate-k8s.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();

    let config = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|d| d["data"]["perfpilot.toml"].is_string())
        .expect("a ConfigMap with perfpilot.toml");
    let toml = std::fs::read_to_string(format!("{root}/deploy/perfpilot.toml")).unwrap();
    assert_eq!(
        config["data"]["perfpilot.toml"].as_str(),
        Some(toml.as_str())
    );
    let config_name = config["metadata"]["name"].as_str().unwrap();

    assert_eq!(of_kind(&docs, "StatefulSet").len(), STAGES.len());
    for stage in STAGES {
        let name = format!("perfpilot-{stage}");
        let set = named(&docs, "StatefulSet", &name);
        assert_eq!(set["metadata"]["namespace"].as_str(), Some("perfpilot"));
        let pod = &set["spec"]["template"];
        let selector = &set["spec"]["selector"]["matchLabels"];
        assert_eq!(
            selector["app.kubernetes.io/component"].as_str(),
            Some(stage),
            "{name}: the selector tells the stages apart"
        );
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][k.as_str().unwrap()], v, "{name}");
        }
        let c = &pod["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, ["run", stage], "{name}");
        let env = c["env"].as_sequence().unwrap();
        let var = |n: &str| env.iter().find(|e| e["name"].as_str() == Some(n));
        assert_eq!(
            var("PERFPILOT_INSTANCE_ID").map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&Value::from("metadata.name")),
            "{name}: the pod's stable name is its instance id"
        );
        assert_eq!(
            var("PERFPILOT_METRICS_ADDR").and_then(|e| e["value"].as_str()),
            Some("0.0.0.0:9464")
        );
        assert!(c["livenessProbe"]["httpGet"]["path"].as_str() == Some("/metrics"));
        assert!(
            c["readinessProbe"]["exec"]["command"][0].as_str() == Some("perfpilot-healthcheck")
        );
        assert!(
            c["resources"]["requests"]["cpu"].is_string()
                && c["resources"]["requests"]["memory"].is_string()
        );
        let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["configMap"]["name"].as_str() == Some(config_name)),
            "{name} mounts the generated ConfigMap"
        );
        // The shutdown deadline (10 s) and the watchdog's 20 s fit the grace period.
        assert!(pod["spec"]["terminationGracePeriodSeconds"].as_u64() >= Some(30));

        let pdb = named(&docs, "PodDisruptionBudget", &name);
        assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector, "{name}");
        let svc = named(&docs, "Service", &name);
        assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
        assert_eq!(set["spec"]["serviceName"].as_str(), Some(name.as_str()));
        assert_eq!(&svc["spec"]["selector"], selector, "{name}");
    }
    let job = named(&docs, "Job", "perfpilot-topics");
    let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0].as_str(), Some("topics"));
}
